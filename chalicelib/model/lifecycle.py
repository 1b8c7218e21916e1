"""When an item finishes, when it expires, and which events may still create it.

Expiry and creation are kept apart from the retention setting, so that no
change of it can bring back what TTL deleted (docs/reconcile.md, "Expiry"):

- an event may create its item only while younger than the creation window,
  min(retention, DELIVERY_HORIZON_SECONDS) (the store's conditional write);
- a finished item expires max(retention, DELIVERY_HORIZON_SECONDS) plus
  EXPIRY_GRACE_SECONDS after it finished.

Every window any retention gives is at most the horizon, and every item stays
at least the horizon (plus the grace), so by the time TTL may delete an item,
each of its events is too old to create it again, whatever the setting was or
became. The horizon is the oldest an event can be when it is delivered:
EventBridge retries for 24 h, Lambda for 6 h, and the dead-letter queue keeps
it 14 days (SQS's maximum), 15 d 6 h in all, rounded up.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple

from chalicelib.errors import InvalidEvent
from chalicelib.model.clock import parse_time
from chalicelib.model.listing import listing_key
from chalicelib.tables import EXPIRES_AT, FINISHED, LISTED, LISTING, LISTING_KEY, PHASE, STOP_CODE, TableSpec

DELIVERY_HORIZON_SECONDS = 16 * 86_400
# Added to a finished item's expiry: events carry whole-second times, and ECS's own
# timestamps (stoppedAt) and its last events may differ from each other by seconds.
EXPIRY_GRACE_SECONDS = 3600


class ItemRules(NamedTuple):
    """What a stage's settings change in the item (chalicelib.config.Config.rules)."""

    read_index: bool  # write the read index's keys (and cw_phase, the previous index's)
    retention_seconds: int  # how long a finished item is kept (at least the delivery horizon)


def creation_window_seconds(retention_seconds: int) -> float:
    """How young an event must be to create its item (an older one may only update it)."""
    return min(retention_seconds, DELIVERY_HORIZON_SECONDS)


def expires_at(finished_at: float, retention_seconds: int) -> int:
    """The cw_expires_at of an item finished (or found a ghost) at ``finished_at``."""
    return int(finished_at) + max(retention_seconds, DELIVERY_HORIZON_SECONDS) + EXPIRY_GRACE_SECONDS


def lifecycle_fields(table: TableSpec, detail: Mapping[str, Any], observed_at: float, rules: ItemRules
                     ) -> Dict[str, Any]:
    """The read index's keys (and cw_stop_code, which it projects), cw_phase, and cw_expires_at once
    the item is finished (also what a migration adds to items stored before these existed)."""
    phase = table.phase(detail.get(table.status_field))
    done_at = finished_at(table, detail, observed_at) if phase == FINISHED else None
    fields: Dict[str, Any] = {}
    if rules.read_index:
        fields[PHASE] = phase
        key = listing_key(table, detail, phase, done_at)
        if key is not None:
            fields[LISTING], fields[LISTING_KEY] = LISTED, key
            # Only once finished: a stopping task has its stopCode already, and projecting
            # it then would cost the index one more write per task.
            stop_code = detail.get(table.stop_code_field) if done_at is not None and table.stop_code_field else None
            if isinstance(stop_code, str) and stop_code:
                fields[STOP_CODE] = stop_code
    if done_at is not None:
        fields[EXPIRES_AT] = expires_at(done_at, rules.retention_seconds)
    return fields


def finished_at(table: TableSpec, detail: Mapping[str, Any], observed_at: float) -> float:
    """A stopped task's own stoppedAt, which its event and its snapshot share. A
    deregistered instance has no such field, nor has a task whose event lacks it
    or garbles it (it only dates the expiry): then, when the state was seen."""
    if table.finished_at_field is not None:
        try:
            return parse_time(detail.get(table.finished_at_field), table.finished_at_field)
        except InvalidEvent:
            pass
    return observed_at
