"""The one door to DynamoDB: every request of ecs-state goes through a StateStore.

state_store (the conditional write, the reconciler's and the read API's reads,
paging, unprocessed keys), client (the client's timeouts, retries and answer
hook) and high_water (what a warm container remembers of stored versions: a
policy, no I/O).
"""
from chalicelib.store.state_store import (
    CREATED,
    DUPLICATE,
    EXPIRED,
    OUTCOMES,
    STALE,
    UPDATED,
    IndexPage,
    Item,
    StateStore,
    StoredVersion,
    WriteResult,
)

__all__ = ["CREATED", "DUPLICATE", "EXPIRED", "OUTCOMES", "STALE", "UPDATED", "IndexPage", "Item", "StateStore",
           "StoredVersion", "WriteResult"]
