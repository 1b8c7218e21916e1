"""ECS state, from an EventBridge event or an ECS API snapshot, as the item it stores.

An event and a snapshot of the same version go through the same checks and
build the same item but for the metadata (cw_source, cw_time): equal
versions are duplicates, so whichever copy lands first must be the one a
reader would want either way.
"""
import time
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from chalicelib.arns import MAX_KEY_BYTES, MAX_SORT_KEY_BYTES, key_problem
from chalicelib.attributes import (
    MAX_ITEM_BYTES,
    MAX_SIGNIFICANT_DIGITS,
    AttributeValue,
    Unstorable,
    attribute_name_length,
    encode,
)
from chalicelib.errors import InvalidEvent, ItemTooLarge
from chalicelib.tables import BY_DETAIL_TYPE, EXPIRES_AT, FINISHED, PHASE, TableSpec

SOURCE = "aws.ecs"
# Envelope fields stored beside the detail. The cw_ prefix cannot collide with
# ECS's camelCase detail fields; cw_version is the docs example's own name. The
# event's id is not stored (the log line of each event carries it): its 41 bytes
# on every item cost about 4% of a write unit per write (docs/benchmark.md).
METADATA_FIELDS = {"version": "cw_version", "time": "cw_time"}
SOURCE_FIELD = "cw_source"  # where the state came from:
FROM_EVENT, FROM_RECONCILE = "event", "reconcile"
# A snapshot is stored in the events' format, whose envelope version is "0".
SNAPSHOT_FORMAT_VERSION = "0"
RESERVED_PREFIX = "cw_"
MAX_VERSION = 10**MAX_SIGNIFICANT_DIGITS - 1  # the largest integer DynamoDB stores exactly
# Expiry and creation, kept apart from the retention setting so that no change of
# it can bring back what TTL deleted (docs/reconcile.md, "Expiry"):
# - an event may create its item only while younger than the creation window,
#   min(retention, DELIVERY_HORIZON_SECONDS) (store.py);
# - a finished item expires max(retention, DELIVERY_HORIZON_SECONDS) plus
#   EXPIRY_GRACE_SECONDS after it finished.
# Every window any retention gives is at most the horizon, and every item stays at
# least the horizon (plus the grace), so by the time TTL may delete an item, each of
# its events is too old to create it again, whatever the setting was or became.
# The horizon is the oldest an event can be when it is delivered: EventBridge
# retries for 24 h, Lambda for 6 h, and the dead-letter queue keeps it 14 days
# (SQS's maximum), 15 d 6 h in all, rounded up.
DELIVERY_HORIZON_SECONDS = 16 * 86_400
# Added to a finished item's expiry: events carry whole-second times, and ECS's own
# timestamps (stoppedAt) and its last events may differ from each other by seconds.
EXPIRY_GRACE_SECONDS = 3600


class ItemRules(NamedTuple):
    """What a stage's settings change in the item (chalicelib.settings.item_rules())."""

    read_index: bool  # write cw_phase, the read index's sort key
    retention_seconds: int  # how long a finished item is kept (at least the delivery horizon)


def creation_window_seconds(retention_seconds: int) -> float:
    """How young an event must be to create its item (an older one may only update it)."""
    return min(retention_seconds, DELIVERY_HORIZON_SECONDS)


def expires_at(finished_at: float, retention_seconds: int) -> int:
    """The cw_expires_at of an item finished (or found a ghost) at ``finished_at``."""
    return int(finished_at) + max(retention_seconds, DELIVERY_HORIZON_SECONDS) + EXPIRY_GRACE_SECONDS


class StateChange(NamedTuple):  # a NamedTuple: see chalicelib/tables.py
    """One task's or container instance's state at one version."""

    table: TableSpec
    key: str
    version: int
    item: Dict[str, AttributeValue]  # the whole item, encoded for PutItem
    size: int  # approximate stored size in bytes
    observed_at: float  # epoch seconds: the event's time, or when the snapshot was taken


def parse_event(event: Any, rules: Optional[ItemRules] = None) -> StateChange:
    """Validate an EventBridge ECS event and build the item it stores.

    Raises InvalidEvent, naming the field and the problem, for anything that
    is not a storable ECS task or container instance state change.
    ``rules`` default to the stage's (read from the environment).
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
    # EventBridge always sends a time; without one (a hand-made test event) the
    # event counts as new, so it is never refused as too old to create an item.
    observed_at = parse_time(event["time"], "time") if "time" in event else now()
    metadata = {name: event[field] for field, name in METADATA_FIELDS.items() if field in event}
    metadata[SOURCE_FIELD] = FROM_EVENT
    return _state_change(table, detail, metadata, observed_at, rules)


def parse_snapshot(table: TableSpec, detail: Mapping, taken_at: float, rules: Optional[ItemRules] = None) -> StateChange:
    """The same as parse_event for a state read from the ECS API (chalicelib/snapshots.py
    gives it the events' shape): cw_time is when it was taken."""
    metadata = {"cw_version": SNAPSHOT_FORMAT_VERSION, "cw_time": iso_time(taken_at), SOURCE_FIELD: FROM_RECONCILE}
    return _state_change(table, detail, metadata, taken_at, rules)


def table_of(event: Any) -> Optional[TableSpec]:
    """The table an event's detail-type belongs in, or None."""
    detail_type = event.get("detail-type") if isinstance(event, Mapping) else None
    return BY_DETAIL_TYPE.get(detail_type) if isinstance(detail_type, str) else None


def _state_change(
    table: TableSpec, detail: Mapping, metadata: Dict[str, Any], observed_at: float, rules: Optional[ItemRules]
) -> StateChange:
    if rules is None:
        from chalicelib.settings import item_rules  # (settings does not import this module)

        rules = item_rules()
    key = _key(detail, table.key)
    _check_key_strings(detail, table)
    version = _version(detail)
    metadata.update(lifecycle_fields(table, detail, observed_at, rules))
    item, size = _item(metadata, detail)
    return StateChange(table=table, key=key, version=version, item=item, size=size, observed_at=observed_at)


def lifecycle_fields(table: TableSpec, detail: Mapping, observed_at: float, rules: ItemRules) -> Dict[str, Any]:
    """cw_phase for the read index, and cw_expires_at once the item is finished
    (also what a migration adds to items stored before these existed)."""
    phase = table.phase(detail.get(table.status_field))
    fields: Dict[str, Any] = {PHASE: phase} if rules.read_index else {}
    if phase == FINISHED:
        fields[EXPIRES_AT] = expires_at(_finished_at(table, detail, observed_at), rules.retention_seconds)
    return fields


def _finished_at(table: TableSpec, detail: Mapping, observed_at: float) -> float:
    """A stopped task's own stoppedAt, which its event and its snapshot share. A
    deregistered instance has no such field, nor has a task whose event lacks it
    or garbles it (it only dates the expiry): then, when the state was seen."""
    if table.finished_at_field is not None:
        try:
            return parse_time(detail.get(table.finished_at_field), table.finished_at_field)
        except InvalidEvent:
            pass
    return observed_at


def _key(detail: Mapping, name: str) -> str:
    if name not in detail:
        raise InvalidEvent(f"detail.{name}", "is missing")
    return _key_string(detail, name, MAX_KEY_BYTES)


def _check_key_strings(detail: Mapping, table: TableSpec) -> None:
    """clusterArn keys the read index, and the status field keyed the index of
    earlier versions (which a table may still have during an upgrade): DynamoDB
    refuses a write whose index key attribute is not a non-empty string.

    An item without the attribute is fine: it is just not in that index.
    """
    if table.cluster_index.hash_key in detail:
        _key_string(detail, table.cluster_index.hash_key, MAX_KEY_BYTES)
    if table.status_field in detail:
        _key_string(detail, table.status_field, MAX_SORT_KEY_BYTES)


def _key_string(detail: Mapping, name: str, max_bytes: int) -> str:
    problem = key_problem(detail[name], max_bytes)  # the read API takes what passes here (chalicelib/arns.py)
    if problem is not None:
        raise InvalidEvent(f"detail.{name}", problem)
    return detail[name]


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


def _item(metadata: Mapping[str, Any], detail: Mapping) -> Tuple[Dict[str, AttributeValue], int]:
    item: Dict[str, AttributeValue] = {}
    size = 0
    for name, value in metadata.items():
        size += _put(item, name, value, _ENVELOPE_FIELD.get(name, name))
    for name, value in detail.items():
        if isinstance(name, str) and name.startswith(RESERVED_PREFIX):
            raise InvalidEvent(f"detail.{name}", f"the {RESERVED_PREFIX} prefix is reserved for ecs-state's metadata")
        size += _put(item, name, value)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge("detail", f"the item would take about {size} bytes; DynamoDB stores at most {MAX_ITEM_BYTES}")
    return item, size


_ENVELOPE_FIELD = {name: field for field, name in METADATA_FIELDS.items()}  # to name a bad envelope value


def _put(item: Dict[str, AttributeValue], name: Any, value: Any, field: Optional[str] = None) -> int:
    """Encode ``value`` as attribute ``name``; ``field`` names it in errors (default detail.<name>).

    The field's text is built only for an error: every event passes here once per field."""
    try:
        name_bytes = attribute_name_length(name)
        item[name], value_bytes = encode(value)
    except Unstorable as error:
        raise InvalidEvent(error.field(field or f"detail.{name}"), error.problem) from None
    return name_bytes + value_bytes


def parse_time(value: Any, field: str) -> float:
    """Epoch seconds of an ISO-8601 time as events carry them ("2026-11-05T07:58:44Z", or with .215)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise InvalidEvent(field, f"must be an ISO-8601 time with its zone, such as 2026-11-05T07:58:44Z; got {_show(value)}")


def iso_time(epoch_seconds: float) -> str:
    """An epoch time as ECS events write theirs: UTC, to the millisecond, "Z", trailing
    zeros of the fraction dropped as real events drop them ("…:44.215Z", "…:46.71Z", "…:47Z")."""
    milliseconds = round(epoch_seconds * 1000)
    moment = datetime.fromtimestamp(milliseconds // 1000, timezone.utc)
    fraction = f"{milliseconds % 1000:03d}".rstrip("0")
    return f"{moment:%Y-%m-%dT%H:%M:%S}{'.' + fraction if fraction else ''}Z"


def now() -> float:
    """The current epoch time: the one clock, so tests can move it."""
    return time.time()


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
