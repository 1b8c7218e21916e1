"""DynamoDB capacity per request: what DynamoDB Local reports, and what DynamoDB bills.

``Capture.attach(client)`` adds botocore hooks to a client, so the code under
measurement (ecs-state's handler, the reconciler, the docs example) runs
unchanged:

- ``before-parameter-build``: ReturnConsumedCapacity=INDEXES on every operation
  that takes it. It costs nothing; the response then says how many units the
  table and each index consumed.
- ``before-call``: the request as serialised for the wire (what DynamoDB
  receives, whichever client built it), and the time.
- ``before-parse`` of PutItem, registered *first* (before ecs-state's own hook
  cuts the returned item down to its version): the whole stored item that a
  refused conditional write returns (ReturnValuesOnConditionCheckFailure=ALL_OLD).
- ``after-call``: the reported ConsumedCapacity, and the model's figure.

The model is DynamoDB's documented billing, computed from the items involved:

- Item size (``item_size``): DynamoDB's rules ("DynamoDB item sizes and
  formats"): the UTF-8 bytes of every attribute name plus its value: a string
  its UTF-8 bytes, a number about 1 byte per two significant digits plus 1
  (exactly: see ``number_size``), a binary
  its raw bytes, a boolean or null 1 byte, a map or list 3 bytes plus its
  elements, each element 1 byte more (a map member also counts its name).
- A write: the item size rounded up to 1 KB, one write unit per KB, at least 1.
  PutItem replacing an item is charged the larger of the old and new items.
- A write refused by its condition: DynamoDB still charges the size of the
  item stored (at least 1 unit), and reports nothing; DynamoDB Local reports
  nothing either. The stored item is the one DynamoDB returned with the
  refusal, else the last one this capture saw written under that key.
- An index entry (a global secondary index): written when the item gets the
  index's keys, deleted when it loses them, deleted and put again (two writes)
  when they change, and rewritten when a projected attribute changes; not
  written at all otherwise. Its size is the table's key, the index's keys and
  the projected attributes the item has (an INCLUDE projection's; none for
  KEYS_ONLY) plus 100 bytes of overhead, rounded up to 1 KB.
- A read: the item size rounded up to 4 KB, one read unit per 4 KB, half for
  an eventually consistent read; a key not found still costs the minimum.
  BatchGetItem rounds each item separately. (DynamoDB Local reports 0 for a
  BatchGetItem key not found; production charges it:
  github.com/awslabs/amazon-dynamodb-local-samples/issues/7.)
- A Query: the entries (or items) it returned, summed and then rounded up to
  4 KB, half a unit per 4 KB eventually consistent; an index entry counts
  whole (its keys and projected attributes, from the item last seen written),
  however few attributes a ProjectionExpression asked back; an empty Query still costs
  the minimum (DynamoDB Local reports 0 for it, as for a key BatchGetItem did
  not find). A Query with a FilterExpression is billed for what it read before
  the filter, which its answer does not show, and a Scan is not modelled:
  their report is used.

Where both exist, the model and DynamoDB Local's report are compared request
by request (``agreement``); the bill uses the model.
"""
import base64
import json
import math
import re
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
INDEX_ENTRY_OVERHEAD_BYTES = 100
CONDITION_FAILED = "ConditionalCheckFailedException"
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})

# On-demand request prices, us-east-1, per million request units: the prices
# in effect from 1 November 2024 (the 50% cut of on-demand throughput),
# still listed in 2025 (aws.amazon.com/dynamodb/pricing/on-demand/).
PRICES = {
    "region": "us-east-1",
    "mode": "on-demand",
    "write_request_unit_per_million_usd": 0.625,
    "read_request_unit_per_million_usd": 0.125,
    "as_of": "prices in effect from 2024-11-01, current in 2025",
}
# A read unit costs a fifth of a write unit: reads are weighted by it.
READ_WEIGHT = PRICES["read_request_unit_per_million_usd"] / PRICES["write_request_unit_per_million_usd"]

AttributeValue = Dict[str, Any]
Item = Dict[str, AttributeValue]


# -- item sizes ------------------------------------------------------------------------


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def number_size(text: str) -> int:
    """A number's bytes: one per base-100 digit pair, pairs aligned on the decimal point, leading
    and trailing zero pairs trimmed, plus 1, plus 1 more for a negative number.

    The guide's rule ("1 byte per two significant digits, plus 1") is "approximately"; this is
    the exact count DynamoDB Local charges (probed at the 1 KB boundary; tests/test_bench.py).
    The two agree for integers; for a fraction or a negative number the guide's is up to 2 bytes
    less (1.1: 3 bytes, not 2; -1: 3, not 2).
    """
    number = Decimal(text)
    if number.is_zero():
        return 1
    sign, digits, exponent = number.as_tuple()  # value = digits x 10**exponent (exact: no context)
    text_digits = "".join(map(str, digits)).lstrip("0")
    significant = text_digits.rstrip("0")
    exponent += len(text_digits) - len(significant)
    top_power = exponent + len(significant) - 1
    pairs = top_power // 2 - exponent // 2 + 1
    return pairs + 1 + sign


def _binary_size(data: Any) -> int:
    # botocore hands binaries over as bytes; a request body carries base64 text.
    return len(data) if isinstance(data, (bytes, bytearray)) else len(base64.b64decode(data))


def value_size(value: AttributeValue) -> int:
    (kind, inner), = value.items()
    if kind == "S":
        return utf8_bytes(inner)
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(utf8_bytes(name) + value_size(member) + 1 for name, member in inner.items())
    if kind == "L":
        return 3 + sum(value_size(element) + 1 for element in inner)
    if kind == "SS":
        return sum(utf8_bytes(element) for element in inner)
    if kind == "NS":
        return sum(number_size(element) for element in inner)
    if kind == "BS":
        return sum(_binary_size(element) for element in inner)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Optional[Mapping[str, AttributeValue]]) -> int:
    """The item's size by DynamoDB's documented rules (0 for no item)."""
    if not item:
        return 0
    return sum(utf8_bytes(name) + value_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


# -- units -------------------------------------------------------------------------------


class Units(NamedTuple):
    write_table: float = 0.0
    write_index: float = 0.0
    read: float = 0.0  # table and index reads

    def __add__(self, other: "Units") -> "Units":  # type: ignore[override]
        return Units(self.write_table + other.write_table, self.write_index + other.write_index, self.read + other.read)

    @property
    def writes(self) -> float:
        return self.write_table + self.write_index

    @property
    def weighted(self) -> float:
        """In write units: a read unit counts a fifth of one (its price)."""
        return self.writes + READ_WEIGHT * self.read

    @property
    def dollars(self) -> float:
        return (self.writes * PRICES["write_request_unit_per_million_usd"]
                + self.read * PRICES["read_request_unit_per_million_usd"]) / 1e6

    def scaled(self, factor: float) -> "Units":
        return Units(self.write_table * factor, self.write_index * factor, self.read * factor)

    def close_to(self, other: "Units") -> bool:
        return all(abs(a - b) < 1e-9 for a, b in zip(self, other))


def total(units: Iterable[Units]) -> Units:
    result = Units()
    for unit in units:
        result = result + unit
    return result


class Request(NamedTuple):
    operation: str
    table: str
    ok: bool
    error: Optional[str]
    reported: Optional[Units]  # None: DynamoDB Local reported nothing (a refused write)
    model: Optional[Units]  # None: not modelled (Scan)
    written_bytes: Optional[int]  # the item a PutItem wrote or tried to write
    stored_bytes: Optional[int]  # the item stored before it (None: nothing stored)
    seconds: float
    # What DynamoDB Local should report by the model and its one known deviation (a BatchGetItem
    # key not found counts 0); None: the same as ``model``.
    local_model: Optional[Units] = None
    response_bytes: int = 0  # the HTTP response's body, as DynamoDB sent it

    @property
    def billed(self) -> Units:
        """What DynamoDB bills: the model where there is one, else the report."""
        if self.model is not None:
            return self.model
        return self.reported if self.reported is not None else Units()


class IndexKeys(NamedTuple):
    name: str
    hash_key: str
    range_key: Optional[str]
    projected: Tuple[str, ...] = ()  # the attributes an INCLUDE projection adds to the keys


def index_keys(index: Any) -> IndexKeys:
    """The model's view of a chalicelib.tables.IndexSpec: its keys and projected attributes."""
    return IndexKeys(index.name, index.hash_key, index.range_key, tuple(index.projected))


class TableInfo(NamedTuple):
    key: str  # the partition key attribute (ecs-state's tables have no sort key)
    indexes: Tuple[IndexKeys, ...]  # global secondary indexes, keys-only or INCLUDE projection


# -- the capture -------------------------------------------------------------------------


class Capture:
    """Every DynamoDB request the attached clients send, with reported and modelled capacity."""

    def __init__(self) -> None:
        self.requests: List[Request] = []
        self.tables: Dict[str, TableInfo] = {}
        self._stored: Dict[str, Dict[str, Item]] = {}  # table -> key -> the item last seen written
        self._attached: set = set()
        self._local = threading.local()
        self.returned_item_mismatches = 0  # refusals whose returned item differs from the one seen written
        self._lock = threading.Lock()

    def know_table(self, name: str, key: str, indexes: Sequence[IndexKeys] = ()) -> None:
        self.tables[name] = TableInfo(key, tuple(indexes))
        self._stored[name] = {}

    def attach(self, client: Any) -> None:
        if id(client) in self._attached:
            return
        self._attached.add(id(client))
        events = client.meta.events
        events.register("before-parameter-build.dynamodb", self._ask_for_capacity)
        events.register("before-call.dynamodb", self._before_call)
        events.register_first("before-parse.dynamodb.PutItem", self._keep_returned_item)
        events.register("after-call.dynamodb", self._after_call)

    def mark(self) -> int:
        """A position in ``requests``: ``since(mark)`` gives what came after it."""
        return len(self.requests)

    def since(self, mark: int) -> List[Request]:
        return self.requests[mark:]

    # -- hooks -------------------------------------------------------------------------

    @staticmethod
    def _ask_for_capacity(params: Dict[str, Any], model: Any, **kwargs: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params["ReturnConsumedCapacity"] = "INDEXES"

    def _before_call(self, params: Dict[str, Any], context: Dict[str, Any], **kwargs: Any) -> None:
        body = params.get("body") or b"{}"
        context["bench_request"] = json.loads(body)
        context["bench_started"] = time.perf_counter()
        self._local.returned = None

    def _keep_returned_item(self, response_dict: Dict[str, Any], **kwargs: Any) -> None:
        body = response_dict.get("body")
        if response_dict.get("status_code") == 400 and body and b'"Item"' in body:
            self._local.returned = json.loads(body).get("Item")

    def _after_call(self, http_response: Any, parsed: Mapping[str, Any], model: Any, context: Dict[str, Any],
                    **kwargs: Any) -> None:
        request = context.get("bench_request")
        if request is None:
            return
        seconds = time.perf_counter() - context.get("bench_started", time.perf_counter())
        error = parsed.get("Error", {}).get("Code") if http_response.status_code >= 300 else None
        reported = _reported(model.name, parsed.get("ConsumedCapacity"))
        returned = getattr(self._local, "returned", None)
        self._local.returned = None
        with self._lock:
            record = self._model(model.name, request, parsed, error, reported, returned, seconds)
            self.requests.append(record._replace(response_bytes=len(http_response.content or b"")))

    # -- the model ---------------------------------------------------------------------

    def _model(self, operation: str, request: Mapping[str, Any], parsed: Mapping[str, Any], error: Optional[str],
               reported: Optional[Units], returned: Optional[Item], seconds: float) -> Request:
        table = request.get("TableName") or next(iter(request.get("RequestItems", {}) or {"": None}))
        info = self.tables.get(table)
        ok = error is None
        model: Optional[Units] = None
        written_bytes = stored_bytes = None
        if info is not None and operation == "PutItem" and (ok or error == CONDITION_FAILED):
            item = request["Item"]
            key = _key(item, info)
            stored = self._stored[table].get(key)
            if not ok and returned is not None:
                if stored is not None and returned != stored:
                    self.returned_item_mismatches += 1
                stored = returned  # DynamoDB's own word for what is stored
            written_bytes, stored_bytes = item_size(item), (item_size(stored) if stored is not None else None)
            if ok:
                model = Units(write_units(max(written_bytes, stored_bytes or 0)), self._index_writes(info, stored, item))
                self._stored[table][key] = item
            else:  # refused: the stored item's size, at least one unit; nothing reaches an index
                model = Units(write_units(stored_bytes or 0))
        elif info is not None and operation == "UpdateItem" and (ok or error == CONDITION_FAILED):
            key = _key(request["Key"], info)
            stored = self._stored[table].get(key)
            stored_bytes = item_size(stored) if stored is not None else None
            updated = _apply_set(stored or dict(request["Key"]), request)
            if not ok:
                model = Units(write_units(stored_bytes or 0))
            elif updated is not None:
                written_bytes = item_size(updated)
                model = Units(write_units(max(written_bytes, stored_bytes or 0)), self._index_writes(info, stored, updated))
                self._stored[table][key] = updated
        elif info is not None and operation == "GetItem" and ok:
            stored = self._stored[table].get(_key(request["Key"], info))
            model = Units(read=read_units(item_size(stored), bool(request.get("ConsistentRead"))))
        elif info is not None and operation == "Query" and ok and "FilterExpression" not in request:
            items = parsed.get("Items", [])
            units = read_units(sum(self._read_size(table, request.get("IndexName"), item) for item in items),
                               bool(request.get("ConsistentRead")))
            return Request(operation, table, ok, error, reported, Units(read=units), None, None, seconds,
                           Units(read=units if items else 0.0))
        elif operation == "BatchGetItem" and ok and all(name in self.tables for name in request["RequestItems"]):
            units, found_only = self._batch_get_units(request, parsed)
            return Request(operation, table, ok, error, reported, Units(read=units), None, None, seconds,
                           Units(read=found_only))
        return Request(operation, table, ok, error, reported, model, written_bytes, stored_bytes, seconds)

    def _read_size(self, table: str, index_name: Optional[str], returned: Item) -> int:
        """What a Query is billed for an entry it returned: the whole index entry (keys and projected
        attributes, however few a ProjectionExpression asked back), from the item this capture saw
        written; else (an item it did not see, a Query of the table) what it returned."""
        info = self.tables[table]
        index = next((index for index in info.indexes if index.name == index_name), None)
        stored = self._stored[table].get(_key(returned, info)) if index is not None else None
        entry = _index_entry(info, index, stored) if index is not None and stored is not None else None
        return item_size(entry if entry is not None else returned)

    def _batch_get_units(self, request: Mapping[str, Any], parsed: Mapping[str, Any]) -> Tuple[float, float]:
        """(read units billed, those of the keys found only: what DynamoDB Local reports)."""
        units = found_only = 0.0
        for table, wanted in request["RequestItems"].items():
            info = self.tables[table]
            unprocessed = {_key(key, info) for key in parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])}
            consistent = bool(wanted.get("ConsistentRead"))
            for key in wanted["Keys"]:
                ident = _key(key, info)
                if ident in unprocessed:
                    continue
                stored = self._stored[table].get(ident)
                units += read_units(item_size(stored), consistent)
                found_only += read_units(item_size(stored), consistent) if stored is not None else 0.0
        return units, found_only

    @staticmethod
    def _index_writes(info: TableInfo, old: Optional[Item], new: Optional[Item]) -> int:
        units = 0
        for index in info.indexes:
            before, after = _index_entry(info, index, old), _index_entry(info, index, new)
            if before == after:
                continue  # nothing the index holds changed: DynamoDB writes nothing to it
            keys = [name for name in (index.hash_key, index.range_key) if name]
            if before is not None and after is not None and all(before[k] == after[k] for k in keys):
                units += write_units(max(_entry_size(before), _entry_size(after)))  # a projected attribute changed
                continue
            if before is not None:
                units += write_units(_entry_size(before))  # delete the old entry
            if after is not None:
                units += write_units(_entry_size(after))  # put the new one
        return units


def _reported(operation: str, consumed: Any) -> Optional[Units]:
    """ConsumedCapacity in the model's terms: a read operation's units (table and index) are read units."""
    if not consumed:
        return None
    table_units = index_units = 0.0
    for entry in consumed if isinstance(consumed, list) else [consumed]:  # BatchGetItem: one per table
        table_units += entry.get("Table", {}).get("CapacityUnits", 0.0)
        index_units += sum(index.get("CapacityUnits", 0.0) for index in entry.get("GlobalSecondaryIndexes", {}).values())
    if operation in READ_OPERATIONS:
        return Units(read=table_units + index_units)
    return Units(table_units, index_units)


def _key(item: Mapping[str, AttributeValue], info: TableInfo) -> str:
    return json.dumps(item.get(info.key), sort_keys=True)


def _index_entry(info: TableInfo, index: IndexKeys, item: Optional[Item]) -> Optional[Item]:
    """The index's entry for ``item`` (its keys and the projected attributes it has), or None when
    the item lacks an index key."""
    if item is None or index.hash_key not in item or (index.range_key and index.range_key not in item):
        return None
    names = [info.key, index.hash_key] + ([index.range_key] if index.range_key else []) + list(index.projected)
    return {name: item[name] for name in names if name in item}


def _entry_size(entry: Item) -> int:
    return item_size(entry) + INDEX_ENTRY_OVERHEAD_BYTES


def index_entry_size(info: TableInfo, index: IndexKeys, item: Item) -> Optional[int]:
    """The size the model gives ``item``'s entry in ``index`` (overhead included), or None: no entry."""
    entry = _index_entry(info, index, item)
    return _entry_size(entry) if entry is not None else None


_ASSIGNMENT = re.compile(r"\s*(#?[\w.]+)\s*=\s*(:\w+)\s*")


def _apply_set(item: Item, request: Mapping[str, Any]) -> Optional[Item]:
    """The item after an UpdateExpression of plain SET assignments (all the bench needs), or None."""
    expression = request.get("UpdateExpression", "")
    match = re.fullmatch(r"\s*SET\s+(.*)", expression, flags=re.IGNORECASE | re.DOTALL)
    if not match:
        return None
    names = request.get("ExpressionAttributeNames", {})
    values = request.get("ExpressionAttributeValues", {})
    updated = dict(item)
    for part in match.group(1).split(","):
        assignment = _ASSIGNMENT.fullmatch(part)
        if not assignment or assignment.group(2) not in values:
            return None
        updated[names.get(assignment.group(1), assignment.group(1))] = values[assignment.group(2)]
    return updated


# -- summaries ---------------------------------------------------------------------------


def agreement(requests: Iterable[Request]) -> Dict[str, Dict[str, int]]:
    """Per operation: requests, those modelled, reported, both; of those, how many agree with the
    model, and how many with what DynamoDB Local should report (the model but for its known deviation)."""
    counts: Dict[str, Counter] = {}
    for request in requests:
        count = counts.setdefault(request.operation, Counter())
        count["requests"] += 1
        count["modelled"] += request.model is not None
        count["reported"] += request.reported is not None
        if request.model is not None and request.reported is not None:
            count["both"] += 1
            count["agree"] += request.model.close_to(request.reported)
            expected = request.local_model if request.local_model is not None else request.model
            count["agree_with_local_deviation"] += expected.close_to(request.reported)
        if request.error == CONDITION_FAILED:
            count["refused"] += 1
    return {operation: dict(count) for operation, count in sorted(counts.items())}


def explained(counts: Mapping[str, Mapping[str, int]]) -> bool:
    """Every request both modelled and reported agrees, once DynamoDB Local's known deviation is allowed."""
    return all(count.get("agree_with_local_deviation", 0) == count.get("both", 0) for count in counts.values())
