"""The DynamoDB client: its timeouts and retries, and the one hook on its answers.

One client per process (chalicelib/runtime.py makes it on first use); every
DynamoDB request of ecs-state goes through the StateStore that holds it.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from chalicelib.errors import OutOfTime
from chalicelib.tables import VERSION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Worst case per request: 3 attempts x (2 s connect + 3 s read) plus backoff,
# well under the 30 s Lambda timeout in .chalice/config.json, so a slow
# DynamoDB fails the invocation (and Lambda retries it) instead of timing out.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 3
MAX_ATTEMPTS = 3  # in all, the first try included


def new_client() -> "DynamoDBClient":
    """A client with ecs-state's timeouts, retries and answer hook; endpoint and region from boto3's variables."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "dynamodb",
        config=Config(
            # botocore's client-side check of every attribute value cost
            # 1.3 ms per event (a third of ecs-state's own CPU time per
            # PutItem; see docs/benchmark.md). chalicelib.model.attributes
            # already builds only well-formed values, checked against
            # DynamoDB's own limits, and DynamoDB checks them again.
            parameter_validation=False,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # total_max_attempts counts the first attempt; botocore's
            # "max_attempts" counts only retries (3 would mean 4 attempts).
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        ),
    )
    trim_returned_items(client)
    return client


# Where a PutItem response carries the stored item: written (ReturnValues=ALL_OLD)
# or refused by the condition (ReturnValuesOnConditionCheckFailure=ALL_OLD).
_RETURNED_ITEM = {200: "Attributes", 400: "Item"}


def trim_returned_items(client: Any) -> None:
    """Make ``client`` parse only the version of the items PutItem returns (see below).

    Called once, where the process's client is created, not once per event."""
    client.meta.events.register(
        "before-parse.dynamodb.PutItem", keep_only_the_version, unique_id="ecs-state-keep-only-the-version"
    )


def keep_only_the_version(response_dict: Any, **kwargs: Any) -> None:
    """botocore hook: cut the item a PutItem returns down to what put_if_newer reads.

    Returning the stored item is the only way to learn, in the same request,
    whether an item was replaced and at which version, or which version kept
    an event out. But DynamoDB returns the whole item, and botocore's
    shape-by-shape parsing of it cost more than all of ecs-state's own work
    per event (about 1 ms for a 3 KB task item; see docs/benchmark.md). Only
    the version is read, plus the fact that an item existed.
    """
    member = _RETURNED_ITEM.get(response_dict.get("status_code"))
    body = response_dict.get("body")
    if member is None or not body or f'"{member}"'.encode() not in body:
        return
    response = json.loads(body)
    item = response.get(member)
    if isinstance(item, dict) and item:
        # An item always has its key, so keeping one attribute keeps "it existed".
        response[member] = {VERSION: item[VERSION]} if VERSION in item else dict([next(iter(item.items()))])
        response_dict["body"] = json.dumps(response).encode()


class TimeBoxed:
    """A client that raises OutOfTime instead of sending a request once ``time_left()`` is false:
    the pass stops between two requests (each writes at most one item, whole), however slow or
    throttled the service, and has the time left to log its summary."""

    def __init__(self, client: Any, time_left: Callable[[], bool]) -> None:
        self._client = client
        self._time_left = time_left

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):  # meta, exceptions
            return attribute

        def request(*args: Any, **kwargs: Any) -> Any:
            if not self._time_left():
                raise OutOfTime(name)
            return attribute(*args, **kwargs)

        return request
