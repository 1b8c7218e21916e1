"""EventBridge ECS events to state changes, validated before anything is written."""
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from chalicelib.attributes import (
    MAX_ITEM_BYTES,
    MAX_SIGNIFICANT_DIGITS,
    AttributeValue,
    Unstorable,
    attribute_name_length,
    encode,
    utf8_length,
)
from chalicelib.errors import InvalidEvent, ItemTooLarge
from chalicelib.tables import BY_DETAIL_TYPE, TableSpec

SOURCE = "aws.ecs"
# Envelope fields stored beside the detail. The cw_ prefix cannot collide with
# ECS's camelCase detail fields; cw_version is the docs example's own name.
METADATA_FIELDS = {"version": "cw_version", "id": "cw_id", "time": "cw_time"}
RESERVED_PREFIX = "cw_"
MAX_VERSION = 10**MAX_SIGNIFICANT_DIGITS - 1  # the largest integer DynamoDB stores exactly
MAX_KEY_BYTES = 2048  # DynamoDB's partition key limit
MAX_SORT_KEY_BYTES = 1024  # DynamoDB's sort key limit


class StateChange(NamedTuple):  # a NamedTuple: see chalicelib/tables.py
    """One task's or container instance's state at one version."""

    table: TableSpec
    key: str
    version: int
    item: Dict[str, AttributeValue]  # the whole item, encoded for PutItem
    size: int  # approximate stored size in bytes


def parse_event(event: Any) -> StateChange:
    """Validate an EventBridge ECS event and build the item it stores.

    Raises InvalidEvent, naming the field and the problem, for anything that
    is not a storable ECS task or container instance state change.
    """
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", f"must be a JSON object, got {_type(event)}")
    source = event.get("source")
    if source != SOURCE:
        raise InvalidEvent("source", f"must be {SOURCE!r}, got {_show(source)}")
    table = table_of(event)
    if table is None:
        expected = " or ".join(repr(name) for name in BY_DETAIL_TYPE)
        raise InvalidEvent("detail-type", f"must be {expected}, got {_show(event.get('detail-type'))}")
    if "detail" not in event:
        raise InvalidEvent("detail", "is missing")
    detail = event["detail"]
    if not isinstance(detail, Mapping):
        raise InvalidEvent("detail", f"must be a JSON object, got {_type(detail)}")
    key = _key(detail, table.key)
    _check_index_keys(detail, table)
    version = _version(detail)
    item, size = _item(event, detail)
    return StateChange(table=table, key=key, version=version, item=item, size=size)


def table_of(event: Any) -> Optional[TableSpec]:
    """The table an event's detail-type belongs in, or None."""
    detail_type = event.get("detail-type") if isinstance(event, Mapping) else None
    return BY_DETAIL_TYPE.get(detail_type) if isinstance(detail_type, str) else None


def _key(detail: Mapping, name: str) -> str:
    if name not in detail:
        raise InvalidEvent(f"detail.{name}", "is missing")
    return _key_string(detail, name, MAX_KEY_BYTES)


def _check_index_keys(detail: Mapping, table: TableSpec) -> None:
    """DynamoDB refuses a write whose index key attribute is not a non-empty string.

    An item without the attribute is fine: it is just not in that index.
    """
    for index in table.indexes:
        if index.hash_key in detail:
            _key_string(detail, index.hash_key, MAX_KEY_BYTES)
        if index.range_key in detail:
            _key_string(detail, index.range_key, MAX_SORT_KEY_BYTES)


def _key_string(detail: Mapping, name: str, max_bytes: int) -> str:
    field = f"detail.{name}"
    key = detail[name]
    if not isinstance(key, str):
        raise InvalidEvent(field, f"must be a string, got {_type(key)}")
    if not key:
        raise InvalidEvent(field, "must not be empty")
    try:
        key_bytes = utf8_length(key)
    except Unstorable as error:
        raise InvalidEvent(field, error.problem) from None
    if key_bytes > max_bytes:
        raise InvalidEvent(field, f"is {key_bytes} bytes; this DynamoDB key holds at most {max_bytes}")
    return key


def _version(detail: Mapping) -> int:
    if "version" not in detail:
        raise InvalidEvent("detail.version", "is missing")
    version = detail["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidEvent("detail.version", f"must be an integer, got {_show(version)}")
    if version < 0:
        raise InvalidEvent("detail.version", f"must not be negative, got {version}")
    if version > MAX_VERSION:
        raise InvalidEvent("detail.version", f"exceeds DynamoDB's {MAX_SIGNIFICANT_DIGITS}-digit precision")
    return version


def _item(event: Mapping, detail: Mapping) -> Tuple[Dict[str, AttributeValue], int]:
    item: Dict[str, AttributeValue] = {}
    size = 0
    for envelope_field, name in METADATA_FIELDS.items():
        if envelope_field in event:
            size += _put(item, name, event[envelope_field], envelope_field)
    for name, value in detail.items():
        if isinstance(name, str) and name.startswith(RESERVED_PREFIX):
            raise InvalidEvent(f"detail.{name}", f"the {RESERVED_PREFIX} prefix is reserved for ecs-state's metadata")
        size += _put(item, name, value)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge("detail", f"the item would take about {size} bytes; DynamoDB stores at most {MAX_ITEM_BYTES}")
    return item, size


def _put(item: Dict[str, AttributeValue], name: Any, value: Any, field: Optional[str] = None) -> int:
    """Encode ``value`` as attribute ``name``; ``field`` names it in errors (default detail.<name>).

    The field's text is built only for an error: every event passes here once per field."""
    try:
        name_bytes = attribute_name_length(name)
        item[name], value_bytes = encode(value)
    except Unstorable as error:
        raise InvalidEvent(error.field(field or f"detail.{name}"), error.problem) from None
    return name_bytes + value_bytes


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
