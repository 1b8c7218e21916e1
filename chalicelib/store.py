"""The latest state of each key, kept with one conditional PutItem per event.

DynamoDB evaluates the condition and writes atomically, so concurrent
invocations cannot let an older version overwrite a newer one (the docs
example's get-then-put can). When the condition fails, DynamoDB returns the
stored item with the failure, which tells a duplicate from a stale event
without a second request.
"""
import json
from typing import Any, Callable, Mapping, NamedTuple, Optional

from botocore.exceptions import ClientError

from chalicelib import settings
from chalicelib.errors import ItemTooLarge, StoredItemConflict
from chalicelib.events import StateChange
from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import TableSpec

CREATED = "created"  # first version seen for this key
UPDATED = "updated"  # newer than the stored version, which it replaced
DUPLICATE = "duplicate"  # the stored version already is this one
STALE = "stale"  # an older version than the stored one
OUTCOMES = (CREATED, UPDATED, DUPLICATE, STALE)

# Every attribute name is aliased: "status" and others are reserved words.
_CONDITION = "attribute_not_exists(#key) OR attribute_not_exists(#version) OR #version < :version"


class WriteResult(NamedTuple):  # a NamedTuple: see chalicelib/tables.py
    outcome: str
    # written: the version it replaced (None when created);
    # not written: the stored version that kept it out.
    stored_version: Optional[int]

    @property
    def written(self) -> bool:
        return self.outcome in (CREATED, UPDATED)


class StateStore:
    def __init__(
        self,
        client: Any,
        table_name: Callable[[TableSpec], str] = settings.table_name,
        marks: Optional[HighWaterMarks] = None,
    ) -> None:
        self._client = client
        self._table_name = table_name
        self._marks = marks  # None: every event costs one request

    def put_if_newer(self, change: StateChange) -> WriteResult:
        """Store ``change`` unless its key already has this or a later version.

        With high-water marks, an event at or below the highest version this
        process has seen stored is answered without a request (see
        chalicelib/high_water.py); ``stored_version`` is then that version, a
        lower bound of the one stored now.
        """
        table = self._table_name(change.table)
        if self._marks is not None:
            known = self._marks.highest(table, change.key)
            if known is not None and change.version <= known:
                return WriteResult(DUPLICATE if change.version == known else STALE, known)
        result = self._put(table, change)
        if self._marks is not None:
            # Written: this version is stored now. Not written: DynamoDB returned the stored one.
            self._marks.saw_stored(table, change.key, change.version if result.written else result.stored_version)
        return result

    def _put(self, table: str, change: StateChange) -> WriteResult:
        try:
            response = self._client.put_item(
                TableName=table,
                Item=change.item,
                ConditionExpression=_CONDITION,
                ExpressionAttributeNames={"#key": change.table.key, "#version": "version"},
                ExpressionAttributeValues={":version": {"N": str(change.version)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            return self._not_written(change, error)
        previous = response.get("Attributes")
        if not previous:
            return WriteResult(CREATED, None)
        return WriteResult(UPDATED, _stored_version(previous))

    @staticmethod
    def _not_written(change: StateChange, error: ClientError) -> WriteResult:
        code = error.response.get("Error", {}).get("Code")
        if code == "ConditionalCheckFailedException":
            stored = _stored_version(error.response.get("Item") or {})
            if stored is None:
                # Only a number can stop the condition; anything else was
                # written by someone else, and guessing could lose this event.
                raise StoredItemConflict(
                    f"{change.table.key} {change.key}: the stored version is not a number, "
                    f"so version {change.version} was not written"
                ) from error
            return WriteResult(DUPLICATE if stored == change.version else STALE, stored)
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ValidationException" and "item size" in message.lower():
            raise ItemTooLarge("detail", f"DynamoDB refused the item: {message}") from error
        raise error


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
        response[member] = {"version": item["version"]} if "version" in item else dict([next(iter(item.items()))])
        response_dict["body"] = json.dumps(response).encode()


def _stored_version(item: Mapping[str, Any]) -> Optional[int]:
    number = item.get("version", {}).get("N")
    if number is None:
        return None
    try:
        return int(number)
    except ValueError:  # a fractional version, from another writer
        return None
