"""A warm container's memory of the highest version it has seen stored, per key.

Why answering from it is safe: ecs-state writes a version only if it is above
the stored one (the PutItem's condition), so a stored version never decreases.
Once this process has seen version V stored for a key (it wrote V, or DynamoDB
refused an event and returned V), that key holds V or a later version for
good, and an event at or below V can only be a duplicate (== V) or stale
(< V): the answer DynamoDB would give, without asking it.

Deletions break "for good", so the marks bound what they assume:

- TTL deleting a finished item is safe. An event at or below V belongs to the
  item's past, so it was sent no later than the item finished; the item
  expires at least the delivery horizon (plus an hour) after that
  (events.expires_at), so by the time TTL may delete it, such an event is
  older than any creation window, and DynamoDB would refuse to create the
  item from it too (state_store.py's "expired"). Either answer writes nothing; only
  the outcome's name differs (duplicate or stale here, expired there).
- A table deleted and recreated, or restored from a backup into the same
  name, holds older versions than the marks remember. An event that finds
  its table missing clears that table's marks (state_store.py); and a mark is
  trusted for ``max_age_seconds`` only, so marks taken before a restore stop
  answering soon after it. The restore procedure in docs/deploy.md says when
  to turn them off altogether (ECS_STATE_HIGH_WATER_ENTRIES=0).
- Unconditional writers sharing the table (the docs example's get-then-put
  can lower a version) break the premise: turn the marks off in such a setup.

Bounded: at most ``max_entries`` keys, the least recently used dropped first;
forgetting a key only costs the next event for it a request.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, NamedTuple, Optional, Tuple

Key = Tuple[str, str]  # (table name, item key): the same ARN in two tables is two keys


class _Mark(NamedTuple):
    version: int
    seen_at: float  # when the version was last confirmed stored (clock seconds)


class HighWaterMarks:
    def __init__(self, max_entries: int, max_age_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._marks: "OrderedDict[Key, _Mark]" = OrderedDict()
        self._lock = threading.Lock()  # the local run and the tests call handlers from threads

    def highest(self, table: str, key: str) -> Optional[int]:
        """The highest version seen stored for ``key`` in ``table`` recently enough, or None."""
        with self._lock:
            mark = self._marks.get((table, key))
            if mark is None:
                return None
            if self._clock() - mark.seen_at > self.max_age_seconds:
                del self._marks[(table, key)]
                return None
            self._marks.move_to_end((table, key))
            return mark.version

    def answers_for(self, table: str, key: str, version: int) -> Optional[int]:
        """The mark, if it answers for ``version`` without asking DynamoDB (the version is at or
        below it: a duplicate or a stale event), else None."""
        known = self.highest(table, key)
        return known if known is not None and version <= known else None

    def saw_stored(self, table: str, key: str, version: int) -> None:
        """Record that ``table`` holds ``version`` (or later) for ``key`` now; never lowers a mark."""
        with self._lock:
            now = self._clock()
            known = self._marks.get((table, key))
            if known is None or known.version <= version or now - known.seen_at > self.max_age_seconds:
                self._marks[(table, key)] = _Mark(version, now)
            # else the higher mark stays, and so does the time it was confirmed
            self._marks.move_to_end((table, key))
            while len(self._marks) > self.max_entries:
                self._marks.popitem(last=False)

    def forget_table(self, table: str) -> None:
        """Drop every mark of ``table``: it was found missing, so whatever is stored next starts afresh."""
        with self._lock:
            for key in [key for key in self._marks if key[0] == table]:
                del self._marks[key]

    def __len__(self) -> int:
        return len(self._marks)
