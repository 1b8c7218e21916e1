"""ECS state at one version, as the item it stores: the checks and the item an event and a snapshot share.

An event (chalicelib/ingest/events.py) and a snapshot from the ECS API
(chalicelib/reconcile/snapshots.py) of the same version go through the same
checks and build the same item but for the metadata (cw_source, cw_time):
equal versions are duplicates, so whichever copy lands first must be the one
a reader would want either way.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from chalicelib.errors import InvalidEvent, ItemTooLarge
from chalicelib.model.arns import MAX_KEY_BYTES, MAX_SORT_KEY_BYTES, key_problem
from chalicelib.model.attributes import (
    MAX_ITEM_BYTES,
    MAX_SIGNIFICANT_DIGITS,
    AttributeValue,
    Unstorable,
    attribute_name_length,
    encode,
)
from chalicelib.model.clock import show
from chalicelib.model.lifecycle import ItemRules, lifecycle_fields
from chalicelib.tables import CLUSTER, TableSpec

SOURCE_FIELD = "cw_source"  # where the state came from:
FROM_EVENT, FROM_RECONCILE = "event", "reconcile"
# ecs-state's own attributes beside the detail's: the cw_ prefix cannot collide with
# ECS's camelCase detail fields (cw_version is the docs example's own name).
RESERVED_PREFIX = "cw_"
MAX_VERSION = 10**MAX_SIGNIFICANT_DIGITS - 1  # the largest integer DynamoDB stores exactly


class StateChange(NamedTuple):  # a NamedTuple: see chalicelib/tables.py
    """One task's or container instance's state at one version."""

    table: TableSpec
    key: str
    version: int
    item: Dict[str, AttributeValue]  # the whole item, encoded for PutItem
    size: int  # approximate stored size in bytes
    observed_at: float  # epoch seconds: the event's time, or when the snapshot was taken


def state_change(table: TableSpec, detail: Mapping[str, Any], metadata: Dict[str, Any], observed_at: float,
                 rules: ItemRules, metadata_fields: Optional[Mapping[str, str]] = None) -> StateChange:
    """Check ``detail`` and build its item: the detail verbatim, ``metadata`` and the lifecycle fields.

    Raises InvalidEvent naming the field and the problem; ``metadata_fields`` names
    where each metadata attribute came from, for those errors (cw_time: time).
    """
    key = _key(detail, table.key)
    _check_key_strings(detail, table)
    version = _version(detail)
    metadata.update(lifecycle_fields(table, detail, observed_at, rules))
    item, size = _item(metadata, detail, metadata_fields or {})
    return StateChange(table=table, key=key, version=version, item=item, size=size, observed_at=observed_at)


def type_name(value: Any) -> str:
    """A JSON value's type, as an error message names it."""
    return "null" if value is None else type(value).__name__


def _key(detail: Mapping[str, Any], name: str) -> str:
    if name not in detail:
        raise InvalidEvent(f"detail.{name}", "is missing")
    return _key_string(detail, name, MAX_KEY_BYTES)


def _check_key_strings(detail: Mapping[str, Any], table: TableSpec) -> None:
    """clusterArn keys the previous read index, and the status field the one before it,
    which a table may still have during an upgrade (chalicelib/tables.py): DynamoDB
    refuses a write whose index key attribute is not a non-empty string.

    An item without the attribute is fine: it is just not in that index.
    """
    if CLUSTER in detail:
        _key_string(detail, CLUSTER, MAX_KEY_BYTES)
    if table.status_field in detail:
        _key_string(detail, table.status_field, MAX_SORT_KEY_BYTES)


def _key_string(detail: Mapping[str, Any], name: str, max_bytes: int) -> str:
    value = detail[name]
    problem = key_problem(value, max_bytes)  # the read API takes what passes here (chalicelib/model/arns.py)
    if problem is not None:
        raise InvalidEvent(f"detail.{name}", problem)
    return str(value)


def _version(detail: Mapping[str, Any]) -> int:
    if "version" not in detail:
        raise InvalidEvent("detail.version", "is missing")
    version = detail["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidEvent("detail.version", f"must be an integer, got {show(version)}")
    if version < 0:
        raise InvalidEvent("detail.version", f"must not be negative, got {version}")
    if version > MAX_VERSION:
        raise InvalidEvent("detail.version", f"exceeds DynamoDB's {MAX_SIGNIFICANT_DIGITS}-digit precision")
    return version


def _item(metadata: Mapping[str, Any], detail: Mapping[str, Any], metadata_fields: Mapping[str, str]
          ) -> Tuple[Dict[str, AttributeValue], int]:
    item: Dict[str, AttributeValue] = {}
    size = 0
    for name, value in metadata.items():
        size += _put(item, name, value, metadata_fields.get(name, name))
    for name, value in detail.items():
        if isinstance(name, str) and name.startswith(RESERVED_PREFIX):
            raise InvalidEvent(f"detail.{name}", f"the {RESERVED_PREFIX} prefix is reserved for ecs-state's metadata")
        size += _put(item, name, value)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge("detail",
                           f"the item would take about {size} bytes; DynamoDB stores at most {MAX_ITEM_BYTES}")
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
