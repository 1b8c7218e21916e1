"""The latest state of each key, kept with one conditional write per change.

DynamoDB evaluates the condition and writes atomically, so concurrent
invocations (and the reconciler racing them) cannot let an older version
overwrite a newer one (the docs example's get-then-put can). When the
condition fails, DynamoDB returns the stored item with the failure, which tells
a duplicate from a stale event, or an expired one, without a second request.

The reconciler's reads are here too: stored versions in bulk, a cluster's
unfinished items, and the mark it puts on an item ECS no longer knows (and
takes off when ECS knows it again).
"""
import json
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from botocore.exceptions import ClientError

from chalicelib import events, settings
from chalicelib.errors import ItemTooLarge, StoredItemConflict
from chalicelib.events import StateChange
from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import EXPIRES_AT, MISSING_SINCE, OPEN, VERSION, TableSpec

CREATED = "created"  # first version seen for this key
UPDATED = "updated"  # newer than the stored version, which it replaced
DUPLICATE = "duplicate"  # the stored version already is this one
STALE = "stale"  # an older version than the stored one
EXPIRED = "expired"  # older than the creation window, for a key not stored (any more): not created
OUTCOMES = (CREATED, UPDATED, DUPLICATE, STALE, EXPIRED)

# Every attribute name is aliased: "status" and others are reserved words.
_NEWER = "attribute_not_exists(#version) OR #version < :version"
_CONDITION = f"attribute_not_exists(#key) OR {_NEWER}"
# An event older than the creation window (events.creation_window_seconds) may update
# its item but never create it: TTL may have deleted that item already, and must
# not see it come back.
_CONDITION_EXISTING = f"attribute_exists(#key) AND ({_NEWER})"
BATCH_GET_KEYS = 100  # BatchGetItem's limit
_UNPROCESSED_ATTEMPTS = 5


class WriteResult(NamedTuple):  # a NamedTuple: see chalicelib/tables.py
    outcome: str
    # written: the version it replaced (None when created);
    # not written: the stored version that kept it out (None when expired).
    stored_version: Optional[int]

    @property
    def written(self) -> bool:
        return self.outcome in (CREATED, UPDATED)


class StoredVersion(NamedTuple):
    version: Optional[int]  # None: not a whole number (another writer's)
    missing_since: Optional[str]  # the reconciler's mark: ECS no longer knows the item


class StateStore:
    def __init__(
        self,
        client: Any,
        table_name: Callable[[TableSpec], str] = settings.table_name,
        marks: Optional[HighWaterMarks] = None,
        retention_seconds: Optional[int] = None,  # None: the stage's, read per write
    ) -> None:
        self._client = client
        self._table_name = table_name
        self._marks = marks  # None: every event costs one request
        self._retention_seconds = retention_seconds

    # -- the write every event and every snapshot goes through ------------------

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
            # Written: this version is stored now. Not written: DynamoDB returned the
            # stored one (none when expired: nothing is stored).
            stored = change.version if result.written else result.stored_version
            if stored is not None:
                self._marks.saw_stored(table, change.key, stored)
        return result

    def _put(self, table: str, change: StateChange) -> WriteResult:
        retention = self._retention_seconds if self._retention_seconds is not None else settings.retention_seconds()
        may_create = events.now() - change.observed_at < events.creation_window_seconds(retention)
        try:
            response = self._client.put_item(
                TableName=table,
                Item=change.item,
                ConditionExpression=_CONDITION if may_create else _CONDITION_EXISTING,
                ExpressionAttributeNames={"#key": change.table.key, "#version": VERSION},
                ExpressionAttributeValues={":version": {"N": str(change.version)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            return self._not_written(table, change, error)
        previous = response.get("Attributes")
        if not previous:
            return WriteResult(CREATED, None)
        return WriteResult(UPDATED, _stored_version(previous))

    def _not_written(self, table: str, change: StateChange, error: ClientError) -> WriteResult:
        code = error.response.get("Error", {}).get("Code")
        if code == "ConditionalCheckFailedException":
            stored_item = error.response.get("Item")
            if not stored_item:  # only the "no resurrection" condition fails on a missing item
                return WriteResult(EXPIRED, None)
            stored = _stored_version(stored_item)
            if stored is None:
                # Only a number can stop the condition; anything else was
                # written by someone else, and guessing could lose this event.
                raise StoredItemConflict(
                    f"{change.table.key} {change.key}: the stored version is not a number, "
                    f"so version {change.version} was not written"
                ) from error
            return WriteResult(DUPLICATE if stored == change.version else STALE, stored)
        if code == "ResourceNotFoundException" and self._marks is not None:
            # Deleted, maybe to be restored or recreated: what the marks remember of it is void.
            self._marks.forget_table(table)
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ValidationException" and "item size" in message.lower():
            raise ItemTooLarge("detail", f"DynamoDB refused the item: {message}") from error
        raise error

    # -- the reconciler's reads and its mark ----------------------------------

    def stored_versions(self, table: TableSpec, keys: Sequence[str]) -> Tuple[Dict[str, StoredVersion], List[str]]:
        """The stored version (and ghost mark) of each of ``keys`` that is stored, read in bulk,
        and the keys DynamoDB left unread (after backing off): not known to be stored or not.

        Eventually consistent reads, at half the price: a read may miss the newest
        version, never show one that was not stored, so a key it shows at or above
        a snapshot's version really is; anything else goes to the conditional write.
        """
        items, unread = batch_get(
            self._client, self._table_name(table), table.key, keys,
            ProjectionExpression="#key, #version, #missing",
            ExpressionAttributeNames={"#key": table.key, "#version": VERSION, "#missing": MISSING_SINCE},
        )
        return {key: _stored(item) for key, item in items.items()}, unread

    def open_keys(self, table: TableSpec, cluster_arn: str) -> Iterator[str]:
        """The keys of a cluster's unfinished items, from the read index (a query, never a scan)."""
        index = table.cluster_index
        request: Dict[str, Any] = {
            "TableName": self._table_name(table),
            "IndexName": index.name,
            "KeyConditionExpression": "#cluster = :cluster AND #phase = :open",
            "ExpressionAttributeNames": {"#cluster": index.hash_key, "#phase": index.range_key},
            "ExpressionAttributeValues": {":cluster": {"S": cluster_arn}, ":open": {"S": OPEN}},
        }
        yield from (item[table.key]["S"] for item in self._pages("query", request))

    def scan_open_items(self, table: TableSpec, segment: int, total_segments: int
                        ) -> Iterator[Tuple[str, Optional[str], StoredVersion]]:
        """One segment of the table's unfinished items, ghosts included: (key, clusterArn, stored
        version and mark) of each. The ghost search of a stage without the read index, a slice of
        the table per pass (a scan is billed by what it reads, filtered or not)."""
        condition, names, values = _unfinished(table)
        request = {
            "TableName": self._table_name(table),
            "Segment": segment,
            "TotalSegments": total_segments,
            "ProjectionExpression": "#key, #cluster, #version, #missing",
            "FilterExpression": condition,
            "ExpressionAttributeNames": {
                "#key": table.key, "#cluster": table.cluster_index.hash_key, "#version": VERSION,
                "#missing": MISSING_SINCE, **names,
            },
            "ExpressionAttributeValues": values,
        }
        for item in self._pages("scan", request):
            yield item[table.key]["S"], item.get(table.cluster_index.hash_key, {}).get("S"), _stored(item)

    def _pages(self, operation: str, request: Dict[str, Any]) -> Iterator[Mapping[str, Any]]:
        call = getattr(self._client, operation)
        while True:
            response = call(**request)
            yield from response.get("Items", [])
            if not response.get("LastEvaluatedKey"):
                return
            request = {**request, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def mark_missing(self, table: TableSpec, key: str, version: int, since: float) -> bool:
        """Mark an item ECS no longer knows (a ghost): never delete it, let it expire.

        Conditioned on the version the reconciler read and on the item being
        unfinished (a finished item keeps its own expiry): an event that raced in
        first wins, and the next event or snapshot, replacing the whole item,
        clears the mark. Returns whether the mark was set.
        """
        retention = self._retention_seconds if self._retention_seconds is not None else settings.retention_seconds()
        return self._update_ghost(
            table, key, version, "SET #missing = :since, #expires = :expires", "attribute_not_exists(#missing)",
            {":since": {"S": events.iso_time(since)}, ":expires": {"N": str(events.expires_at(since, retention))}},
        )

    def clear_missing(self, table: TableSpec, key: str, version: int) -> bool:
        """ECS knows a marked item again (it listed or described it at ``version``, the stored one
        the reconciler read): remove the mark and the expiry it brought, nothing else.

        Conditioned on that version, the mark, and the item being unfinished: a
        newer event that raced in (which replaced the whole item, mark included)
        is never undone, and a finished item never loses its own expiry.
        Returns whether the mark was removed.
        """
        return self._update_ghost(table, key, version, "REMOVE #missing, #expires", "attribute_exists(#missing)", {})

    def _update_ghost(self, table: TableSpec, key: str, version: int, update: str, mark_condition: str,
                      values: Mapping[str, Any]) -> bool:
        unfinished, names, finished = _unfinished(table)
        try:
            self._client.update_item(
                TableName=self._table_name(table),
                Key={table.key: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=f"#version = :version AND {mark_condition} AND {unfinished}",
                ExpressionAttributeNames={"#missing": MISSING_SINCE, "#expires": EXPIRES_AT, "#version": VERSION, **names},
                ExpressionAttributeValues={":version": {"N": str(version)}, **finished, **values},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


def batch_get(client: Any, table_name: str, key_name: str, keys: Sequence[str], **options: Any
              ) -> Tuple[Dict[str, Mapping[str, Any]], List[str]]:
    """The stored items of ``keys`` by key, read 100 at a time (eventually consistent), and the
    keys DynamoDB still left unprocessed after backing off a few times (it sheds load that way)."""
    found: Dict[str, Mapping[str, Any]] = {}
    unprocessed: List[str] = []
    for start in range(0, len(keys), BATCH_GET_KEYS):
        request = {table_name: {"Keys": [{key_name: {"S": key}} for key in keys[start:start + BATCH_GET_KEYS]], **options}}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            response = client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table_name, []):
                found[item[key_name]["S"]] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)
        unprocessed += [key[key_name]["S"] for key in request.get(table_name, {}).get("Keys", [])]
    return found, unprocessed


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


def _unfinished(table: TableSpec) -> Tuple[str, Dict[str, str], Dict[str, Any]]:
    """A condition that holds for an item whose status is not a finished one: (expression, names, values)."""
    finished = sorted(table.finished_statuses)
    placeholders = ", ".join(f":finished{n}" for n in range(len(finished)))
    return (
        f"(attribute_not_exists(#status) OR NOT (#status IN ({placeholders})))",
        {"#status": table.status_field},
        {f":finished{n}": {"S": status} for n, status in enumerate(finished)},
    )


def _stored(item: Mapping[str, Any]) -> StoredVersion:
    return StoredVersion(_stored_version(item), item.get(MISSING_SINCE, {}).get("S"))


def _stored_version(item: Mapping[str, Any]) -> Optional[int]:
    number = item.get(VERSION, {}).get("N")
    if number is None:
        return None
    try:
        return int(number)
    except ValueError:  # a fractional version, from another writer
        return None
