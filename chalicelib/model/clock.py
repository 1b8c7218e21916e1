"""Time: the wall clock's type, and ISO-8601 times as ECS events write them.

Every component that needs the time takes a Clock (chalicelib/runtime.py
passes time.time), so a test moves time by passing another.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from chalicelib.errors import InvalidEvent

Clock = Callable[[], float]  # epoch seconds (wall) or seconds (monotonic), as each user says


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
    raise InvalidEvent(field,
                       f"must be an ISO-8601 time with its zone, such as 2026-11-05T07:58:44Z; got {show(value)}")


def iso_time(epoch_seconds: float) -> str:
    """An epoch time as ECS events write theirs: UTC, to the millisecond, "Z", trailing
    zeros of the fraction dropped as real events drop them ("…:44.215Z", "…:46.71Z", "…:47Z")."""
    milliseconds = round(epoch_seconds * 1000)
    moment = datetime.fromtimestamp(milliseconds // 1000, timezone.utc)
    fraction = f"{milliseconds % 1000:03d}".rstrip("0")
    return f"{moment:%Y-%m-%dT%H:%M:%S}{'.' + fraction if fraction else ''}Z"


def show(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
