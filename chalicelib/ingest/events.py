"""An EventBridge "ECS Task State Change" or "ECS Container Instance State Change" event, checked.

The envelope's version and time are stored beside the detail (cw_version,
cw_time, as the docs example stores them); the event's id is not (the log
line of each event carries it): its 41 bytes on every item cost about 4% of a
write unit per write (docs/benchmark.md).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from chalicelib.errors import InvalidEvent
from chalicelib.model.changes import FROM_EVENT, SOURCE_FIELD, StateChange, state_change, type_name
from chalicelib.model.clock import Clock, parse_time, show
from chalicelib.model.lifecycle import ItemRules
from chalicelib.tables import BY_DETAIL_TYPE, TableSpec

SOURCE = "aws.ecs"
METADATA_FIELDS = {"version": "cw_version", "time": "cw_time"}  # envelope field -> attribute
_FIELD_OF = {name: field for field, name in METADATA_FIELDS.items()}  # to name a bad envelope value


def parse_event(event: Any, rules: ItemRules, now: Clock) -> StateChange:
    """Validate an EventBridge ECS event and build the item it stores.

    Raises InvalidEvent, naming the field and the problem, for anything that
    is not a storable ECS task or container instance state change. ``now``
    dates an event without a time.
    """
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", f"must be a JSON object, got {type_name(event)}")
    source = event.get("source")
    if source != SOURCE:
        raise InvalidEvent("source", f"must be {SOURCE!r}, got {show(source)}")
    table = table_of(event)
    if table is None:
        expected = " or ".join(repr(name) for name in BY_DETAIL_TYPE)
        raise InvalidEvent("detail-type", f"must be {expected}, got {show(event.get('detail-type'))}")
    if "detail" not in event:
        raise InvalidEvent("detail", "is missing")
    detail = event["detail"]
    if not isinstance(detail, Mapping):
        raise InvalidEvent("detail", f"must be a JSON object, got {type_name(detail)}")
    # EventBridge always sends a time; without one (a hand-made test event) the
    # event counts as new, so it is never refused as too old to create an item.
    observed_at = parse_time(event["time"], "time") if "time" in event else now()
    metadata = {name: event[field] for field, name in METADATA_FIELDS.items() if field in event}
    metadata[SOURCE_FIELD] = FROM_EVENT
    return state_change(table, detail, metadata, observed_at, rules, _FIELD_OF)


def table_of(event: Any) -> Optional[TableSpec]:
    """The table an event's detail-type belongs in, or None."""
    detail_type = event.get("detail-type") if isinstance(event, Mapping) else None
    return BY_DETAIL_TYPE.get(detail_type) if isinstance(detail_type, str) else None
