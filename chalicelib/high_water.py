"""A warm container's memory of the highest version it has seen stored, per key.

Why answering from it is safe: ecs-state writes a version only if it is above
the stored one (the PutItem's condition), so a stored version never decreases.
Once this process has seen version V stored for a key (it wrote V, or DynamoDB
refused an event and returned V), that key holds V or a later version for
good, and an event at or below V can only be a duplicate (== V) or stale
(< V): the answer DynamoDB would give, without asking it.

That holds while nothing else lowers a stored version: no deletes of items,
no unconditional writers (the docs example's get-then-put can lower one).
Set ECS_STATE_HIGH_WATER_ENTRIES=0 to turn the marks off in such a setup.

Bounded: at most ``max_entries`` keys, the least recently used dropped first;
forgetting a key only costs the next event for it a request.
"""
import threading
from collections import OrderedDict
from typing import Optional, Tuple

Key = Tuple[str, str]  # (table name, item key): the same ARN in two tables is two keys


class HighWaterMarks:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._versions: "OrderedDict[Key, int]" = OrderedDict()
        self._lock = threading.Lock()  # the local run and the tests call handlers from threads

    def highest(self, table: str, key: str) -> Optional[int]:
        """The highest version seen stored for ``key`` in ``table``, or None if unknown."""
        with self._lock:
            version = self._versions.get((table, key))
            if version is not None:
                self._versions.move_to_end((table, key))
            return version

    def saw_stored(self, table: str, key: str, version: int) -> None:
        """Record that ``table`` held ``version`` (or later) for ``key``; never lowers a mark."""
        with self._lock:
            known = self._versions.get((table, key))
            self._versions[(table, key)] = version if known is None else max(known, version)
            self._versions.move_to_end((table, key))
            while len(self._versions) > self.max_entries:
                self._versions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._versions)
