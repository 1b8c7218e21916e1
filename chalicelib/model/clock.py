"""Time: the wall clock's type, and ISO-8601 times as ECS events write them.

Every component that needs the time takes a Clock (chalicelib/runtime.py
passes time.time), so a test moves time by passing another.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Optional

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


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_moment(text: str, now: float) -> Optional[float]:
    """Epoch seconds of a time a reader gives: ISO 8601 with its zone ("2026-11-05T07:58:44Z"), a
    date (its midnight, UTC), ``today`` (UTC), or a time ago ("30m", "1h", "2d", "1w"); None if
    it is none of these."""
    text = text.strip()
    if text == "today":
        return float(int(now) - int(now) % 86_400)
    amount, unit = text[:-1], text[-1:]
    if unit in _UNIT_SECONDS and amount.isascii() and amount.isdigit() and len(amount) <= 6:
        return now - int(amount) * _UNIT_SECONDS[unit]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if len(text) != 10:  # a time without its zone is ambiguous; a date is taken as UTC
            return None
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
