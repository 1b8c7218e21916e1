"""Record one EventBridge ECS event: validate, write once, log and count the outcome.

The on_cw_event handlers call ``record``; everything that must behave the
same wherever an event enters goes through here.
"""
from typing import Any, Dict, Optional

from chalicelib import observability, settings
from chalicelib.errors import InvalidEvent
from chalicelib.events import parse_event, table_of
from chalicelib.store import StateStore

INVALID = "invalid"  # metric for events refused before any write
FAILED = "failed"  # metric for events DynamoDB did not take


def record(event: Any, context: Any = None, store: Optional[StateStore] = None) -> Dict[str, Any]:
    """Store the event's state unless a newer or equal version is stored.

    Returns a JSON-serialisable summary: outcome, kind, key, version, and the
    stored version (the one replaced, or the one that kept this event out).
    Raises InvalidEvent for bad input, and lets DynamoDB errors propagate
    after botocore's retries, so the invocation fails and Lambda retries it.
    """
    request_id = getattr(context, "aws_request_id", None)
    rules = settings.item_rules()  # a bad stage setting raises here, naming its variable
    try:
        change = parse_event(event, rules)
    except InvalidEvent as error:
        observability.log_failure("event rejected", {"field": error.field, "problem": error.problem}, request_id)
        table = table_of(event)
        observability.count(INVALID, table.kind if table else "unknown")
        raise
    target = store if store is not None else StateStore(
        settings.dynamodb_client(), marks=settings.high_water_marks(), retention_seconds=rules.retention_seconds
    )
    try:
        result = target.put_if_newer(change)
    except Exception:
        observability.log_failure(
            "event not stored", {"kind": change.table.kind, "key": change.key, "version": change.version}, request_id
        )
        observability.count(FAILED, change.table.kind)
        raise
    summary = {
        "outcome": result.outcome,
        "kind": change.table.kind,
        "key": change.key,
        "version": change.version,
        "stored_version": result.stored_version,
    }
    observability.log_result(summary, request_id)
    observability.count(result.outcome, change.table.kind)
    return summary

