"""The latest state of each key, kept with one conditional write per change; and every read of it.

DynamoDB evaluates the condition and writes atomically, so concurrent
invocations (and the reconciler racing them) cannot let an older version
overwrite a newer one (the docs example's get-then-put can). When the
condition fails, DynamoDB returns the stored item with the failure, which tells
a duplicate from a stale event, or an expired one, without a second request.

Every DynamoDB request of ecs-state is a method here: the events' write, the
reconciler's bulk reads and ghost marks, the read API's index queries, bulk
reads and single reads, with their paging and the keys DynamoDB leaves
unprocessed. DynamoDB's errors (botocore's) propagate to the caller, which
alone knows what they mean to it; chalicelib.errors.aws_error_code reads them.
"""
from __future__ import annotations

import time
from itertools import chain
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from chalicelib.config import Config
from chalicelib.errors import ItemTooLarge, StoredItemConflict, aws_error_code, aws_error_message
from chalicelib.model.attributes import AttributeValue
from chalicelib.model.changes import StateChange
from chalicelib.model.clock import Clock, iso_time
from chalicelib.model.lifecycle import creation_window_seconds, expires_at
from chalicelib.model.listing import KeyRange, after_cluster, cluster_of, open_range
from chalicelib.store.high_water import HighWaterMarks
from chalicelib.tables import (
    CLUSTER,
    EXPIRES_AT,
    GROUP,
    LISTED,
    MISSING_SINCE,
    OPEN,
    PHASE_INDEX,
    STOP_CODE,
    VERSION,
    TableSpec,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = Mapping[str, AttributeValue]

CREATED = "created"  # first version seen for this key
UPDATED = "updated"  # newer than the stored version, which it replaced
DUPLICATE = "duplicate"  # the stored version already is this one
STALE = "stale"  # an older version than the stored one
EXPIRED = "expired"  # older than the creation window, for a key not stored (any more): not created
OUTCOMES = (CREATED, UPDATED, DUPLICATE, STALE, EXPIRED)

# Every attribute name is aliased: "status" and others are reserved words.
_NEWER = "attribute_not_exists(#version) OR #version < :version"
_CONDITION = f"attribute_not_exists(#key) OR {_NEWER}"
# An event older than the creation window (chalicelib/model/lifecycle.py) may update
# its item but never create it: TTL may have deleted that item already, and must
# not see it come back.
_CONDITION_EXISTING = f"attribute_exists(#key) AND ({_NEWER})"
BATCH_GET_KEYS = 100  # BatchGetItem's limit
UNPROCESSED_ATTEMPTS = 5  # BatchGetItem calls per 100 keys, while DynamoDB leaves some unprocessed


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


class IndexPage(NamedTuple):
    keys: List[Item]  # the index entries' keys: the table's key and the index's
    last_key: Optional[Dict[str, AttributeValue]]  # where the next page starts; None after the last


class StateStore:
    """The stage's two tables, through one client.

    ``config`` names the tables and gives the retention; ``marks`` (none: every
    event costs one request) are the process's high-water marks; ``now`` is the
    wall clock the creation window is measured on; ``sleep`` waits between
    reads DynamoDB left unprocessed.
    """

    def __init__(self, client: "DynamoDBClient", config: Config, marks: Optional[HighWaterMarks] = None,
                 now: Clock = time.time, sleep: Any = time.sleep) -> None:
        self.client = client
        self._config = config
        self._marks = marks
        self._now = now
        self._sleep = sleep
        self._without_phase_index: set[str] = set()  # tables found without PHASE_INDEX (moved to READ_INDEX)

    def table_name(self, table: TableSpec) -> str:
        return self._config.table_name(table)

    # -- the write every event and every snapshot goes through ------------------

    def put_if_newer(self, change: StateChange) -> WriteResult:
        """Store ``change`` unless its key already has this or a later version.

        With high-water marks, an event at or below the highest version this
        process has seen stored is answered without a request (see
        chalicelib/store/high_water.py); ``stored_version`` is then that
        version, a lower bound of the one stored now.
        """
        table = self.table_name(change.table)
        if self._marks is not None:
            known = self._marks.answers_for(table, change.key, change.version)
            if known is not None:
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
        may_create = self._now() - change.observed_at < creation_window_seconds(self._config.retention_seconds)
        try:
            response = self.client.put_item(
                TableName=table,
                Item=change.item,
                ConditionExpression=_CONDITION if may_create else _CONDITION_EXISTING,
                ExpressionAttributeNames={"#key": change.table.key, "#version": VERSION},
                ExpressionAttributeValues={":version": {"N": str(change.version)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as error:
            if aws_error_code(error) is None:
                raise
            return self._not_written(table, change, error)
        previous = response.get("Attributes")
        if not previous:
            return WriteResult(CREATED, None)
        return WriteResult(UPDATED, _stored_version(previous))

    def _not_written(self, table: str, change: StateChange, error: Exception) -> WriteResult:
        code = aws_error_code(error)
        response: Mapping[str, Any] = getattr(error, "response", {})
        if code == "ConditionalCheckFailedException":
            stored_item = response.get("Item")
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
        message = aws_error_message(error)
        if code == "ValidationException" and "item size" in message.lower():
            raise ItemTooLarge("detail", f"DynamoDB refused the item: {message}") from error
        raise error

    # -- the reconciler's reads, and the mark it puts on ghosts -------------------

    def stored_versions(self, table: TableSpec, keys: Sequence[str]) -> Tuple[Dict[str, StoredVersion], List[str]]:
        """The stored version (and ghost mark) of each of ``keys`` that is stored, read in bulk,
        and the keys DynamoDB left unread (after backing off): not known to be stored or not.

        Eventually consistent reads, at half the price: a read may miss the newest
        version, never show one that was not stored, so a key it shows at or above
        a snapshot's version really is; anything else goes to the conditional write.
        """
        items, unread = self._batch_get(
            table, keys, ProjectionExpression="#key, #version, #missing",
            ExpressionAttributeNames={"#key": table.key, "#version": VERSION, "#missing": MISSING_SINCE},
        )
        return {key: _stored(item) for key, item in items.items()}, unread

    def open_keys(self, table: TableSpec, cluster_arn: str) -> Iterator[str]:
        """The keys of a cluster's unfinished items, from the read index (a query, never a scan)."""
        pages = self.phase_index_pages(table, cluster_arn, OPEN)
        if pages is None:
            pages = self.listing_pages(table, open_range(cluster_arn))
        for page in pages:
            yield from (key[table.key]["S"] for key in page.keys)

    def scan_open_items(self, table: TableSpec, segment: int, total_segments: int
                        ) -> Iterator[Tuple[str, Optional[str], StoredVersion]]:
        """One segment of the table's unfinished items, ghosts included: (key, clusterArn, stored
        version and mark) of each. The ghost search of a stage without the read index, a slice of
        the table per pass (a scan is billed by what it reads, filtered or not)."""
        condition, names, values = _unfinished(table)
        request = {
            "TableName": self.table_name(table),
            "Segment": segment,
            "TotalSegments": total_segments,
            "ProjectionExpression": "#key, #cluster, #version, #missing",
            "FilterExpression": condition,
            "ExpressionAttributeNames": {
                "#key": table.key, "#cluster": CLUSTER, "#version": VERSION,
                "#missing": MISSING_SINCE, **names,
            },
            "ExpressionAttributeValues": values,
        }
        for page in self._pages(self.client.scan, request):
            for item in page.keys:
                yield item[table.key]["S"], item.get(CLUSTER, {}).get("S"), _stored(item)

    def mark_missing(self, table: TableSpec, key: str, version: int, since: float) -> bool:
        """Mark an item ECS no longer knows (a ghost): never delete it, let it expire.

        Conditioned on the version the reconciler read and on the item being
        unfinished (a finished item keeps its own expiry): an event that raced in
        first wins, and the next event or snapshot, replacing the whole item,
        clears the mark. Returns whether the mark was set.
        """
        return self._update_ghost(
            table, key, version, "SET #missing = :since, #expires = :expires", "attribute_not_exists(#missing)",
            {":since": {"S": iso_time(since)},
             ":expires": {"N": str(expires_at(since, self._config.retention_seconds))}},
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
            self.client.update_item(
                TableName=self.table_name(table),
                Key={table.key: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=f"#version = :version AND {mark_condition} AND {unfinished}",
                ExpressionAttributeNames={"#missing": MISSING_SINCE, "#expires": EXPIRES_AT, "#version": VERSION,
                                          **names},
                ExpressionAttributeValues={":version": {"N": str(version)}, **finished, **values},
            )
        except Exception as error:
            if aws_error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- the read API's reads -------------------------------------------------------

    def listing_pages(self, table: TableSpec, key_range: KeyRange, group: Optional[str] = None,
                      stop_code: Optional[str] = None, start: Optional[Dict[str, AttributeValue]] = None,
                      page_size: Optional[int] = None) -> Iterator[IndexPage]:
        """The read index's entries in ``key_range`` (chalicelib/model/listing.py), in descending
        order, page by page from ``start``; only those of ``group`` and ``stop_code`` (attributes the
        index projects, so DynamoDB filters them: it bills what it reads, but sends only those).
        A query, never a scan: its cost does not grow with the table."""
        index = table.read_index
        names = {"#listing": index.hash_key, "#key": index.range_key}
        low, high = key_range
        values: Dict[str, Any] = {":listing": {"S": LISTED}, ":low": {"S": low}}
        condition = "#key = :low"
        if high is not None:
            condition = "#key BETWEEN :low AND :high"
            values[":high"] = {"S": high}
        names["#item"] = table.key
        request: Dict[str, Any] = {
            "TableName": self.table_name(table),
            "IndexName": index.name,
            "KeyConditionExpression": f"#listing = :listing AND {condition}",
            "ProjectionExpression": "#item, #listing, #key",  # the keys: what a page resumes from
            "ScanIndexForward": False,  # unfinished before finished, and the newest finished first
        }
        filters: List[str] = []
        for name, value in ((GROUP, group), (STOP_CODE, stop_code)):
            if value is not None:
                n = len(filters)
                names[f"#f{n}"], values[f":f{n}"] = name, {"S": value}
                filters.append(f"#f{n} = :f{n}")
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        request.update(ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        return self._pages(self.client.query, request, start, page_size)

    def next_cluster(self, table: TableSpec, after: Optional[str] = None) -> Optional[str]:
        """The first cluster with listed items after the cluster ``after`` (the first of all when
        None), or None: one query that reads one index entry, however many items each cluster has."""
        index = table.read_index
        request: Dict[str, Any] = {
            "TableName": self.table_name(table),
            "IndexName": index.name,
            "KeyConditionExpression": "#listing = :listing",
            "ExpressionAttributeNames": {"#listing": index.hash_key, "#key": index.range_key},
            "ExpressionAttributeValues": {":listing": {"S": LISTED}},
            "ProjectionExpression": "#key",
            "Limit": 1,
        }
        if after is not None:
            request["KeyConditionExpression"] += " AND #key > :after"
            request["ExpressionAttributeValues"][":after"] = {"S": after_cluster(after)}
        entries = self.client.query(**request).get("Items", [])
        return cluster_of(entries[0][index.range_key]["S"]) if entries else None

    def phase_index_pages(self, table: TableSpec, cluster_arn: str, phase: Optional[str] = None,
                          start: Optional[Dict[str, AttributeValue]] = None, page_size: Optional[int] = None,
                          ) -> Optional[Iterator[IndexPage]]:
        """A cluster's entries (of one phase) in the previous read index, PHASE_INDEX, while the table
        still has it: unfinished ones first. None once it is gone, which is remembered: a stage moving
        to READ_INDEX keeps PHASE_INDEX until its older items are backfilled (tools/migrate.py), so
        while it is there it is the complete one."""
        name = self.table_name(table)
        if name in self._without_phase_index:
            return None
        request: Dict[str, Any] = {
            "TableName": name,
            "IndexName": PHASE_INDEX.name,
            "KeyConditionExpression": "#cluster = :cluster",
            "ExpressionAttributeNames": {"#cluster": PHASE_INDEX.hash_key},
            "ExpressionAttributeValues": {":cluster": {"S": cluster_arn}},
            "ScanIndexForward": False,  # "open" before "finished": the running ones first
        }
        if phase is not None:
            request["KeyConditionExpression"] += " AND #phase = :phase"
            request["ExpressionAttributeNames"]["#phase"] = PHASE_INDEX.range_key
            request["ExpressionAttributeValues"][":phase"] = {"S": phase}
        pages = self._pages(self.client.query, request, start, page_size)
        try:
            first = next(pages)
        except Exception as error:
            if _no_such_index(error):
                self._without_phase_index.add(name)
                return None
            raise
        return chain([first], pages)

    def read_items(self, table: TableSpec, keys: Sequence[str], attributes: Optional[Sequence[str]] = None
                   ) -> Tuple[Dict[str, Item], List[str]]:
        """The stored items of ``keys`` by key (eventually consistent, like the index they were listed
        from), only ``attributes`` of each if given (and the key), and the keys DynamoDB left unread
        after backing off."""
        return self._batch_get(table, keys, **_projection(table, attributes))

    def get_item(self, table: TableSpec, key: str, attributes: Optional[Sequence[str]] = None) -> Optional[Item]:
        """One item (only ``attributes`` of it if given, and the key), strongly consistent: the latest
        recorded version."""
        response = self.client.get_item(TableName=self.table_name(table), Key={table.key: {"S": key}},
                                        ConsistentRead=True, **_projection(table, attributes))
        return response.get("Item")

    # -- paging, and what DynamoDB leaves unprocessed ---------------------------------

    @staticmethod
    def _pages(call: Any, request: Dict[str, Any], start: Optional[Dict[str, AttributeValue]] = None,
               page_size: Optional[int] = None) -> Iterator[IndexPage]:
        """The pages of a Query or Scan, from ``start``, each of at most ``page_size`` entries read."""
        if start is not None:
            request = {**request, "ExclusiveStartKey": start}
        if page_size is not None:
            request = {**request, "Limit": page_size}
        while True:
            response = call(**request)
            last_key = response.get("LastEvaluatedKey") or None
            yield IndexPage(response.get("Items", []), last_key)
            if last_key is None:
                return
            request = {**request, "ExclusiveStartKey": last_key}

    def _batch_get(self, table: TableSpec, keys: Sequence[str], **options: Any) -> Tuple[Dict[str, Item], List[str]]:
        """The stored items of ``keys`` by key, read 100 at a time (eventually consistent), and the
        keys DynamoDB still left unprocessed after backing off a few times (it sheds load that way)."""
        name, key_name = self.table_name(table), table.key
        found: Dict[str, Item] = {}
        unprocessed: List[str] = []
        for start in range(0, len(keys), BATCH_GET_KEYS):
            request: Any = {name: {"Keys": [{key_name: {"S": key}} for key in keys[start:start + BATCH_GET_KEYS]],
                                   **options}}
            for attempt in range(UNPROCESSED_ATTEMPTS):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(name, []):
                    found[item[key_name]["S"]] = item
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                if attempt < UNPROCESSED_ATTEMPTS - 1:
                    self._sleep(0.05 * 2**attempt)
            unprocessed += [key[key_name]["S"] for key in request.get(name, {}).get("Keys", [])]
        return found, unprocessed


def _no_such_index(error: Exception) -> bool:
    """Whether a query was refused for naming an index the table lacks: DynamoDB's ValidationException
    ("The table does not have the specified index"), or moto's ResourceNotFoundException ("Invalid
    index"; a missing table is "Requested resource not found")."""
    code, message = aws_error_code(error), aws_error_message(error)
    return (code == "ValidationException" and "specified index" in message) or (
        code == "ResourceNotFoundException" and "index" in message.lower())


def _projection(table: TableSpec, attributes: Optional[Sequence[str]]) -> Dict[str, Any]:
    """A read's ProjectionExpression for ``attributes`` and the key (every name aliased: many are
    reserved words), or nothing: the whole item."""
    if attributes is None:
        return {}
    names = {f"#{n}": name for n, name in enumerate(dict.fromkeys([table.key, *attributes]))}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


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
