"""The read index's sort key: what the writer stores and the ranges a reader asks for.

``<clusterArn>␟open␟<group>`` while an item is unfinished, and
``<clusterArn>␟finished␟<when it finished>`` after, with ␟ the unit separator
(U+001F), which no ARN or ECS name holds. In descending order a cluster's
unfinished items come first, then its finished ones newest first; a service's
running tasks are one key, and a time window one range. The finished time is
written to the millisecond with a fixed width, so the keys sort as the times.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Tuple

from chalicelib.model.arns import MAX_SORT_KEY_BYTES
from chalicelib.model.attributes import Unstorable, utf8_length
from chalicelib.tables import CLUSTER, FINISHED, GROUP, OPEN, TableSpec

SEPARATOR = "\x1f"
# Above every character of a finished time and a group: ends a range that begins with a prefix.
_AFTER = "\U0010ffff"


def sort_time(epoch_seconds: float) -> str:
    """``2026-11-05T07:58:44.000Z``: UTC, milliseconds, fixed width, so text order is time order."""
    milliseconds = round(epoch_seconds * 1000)
    moment = datetime.fromtimestamp(milliseconds // 1000, timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{milliseconds % 1000:03d}Z"


def listing_key(table: TableSpec, detail: Mapping[str, Any], phase: str, finished_at: Optional[float]) -> Optional[str]:
    """The item's sort key in the read index, or None when it cannot be listed.

    An item without a usable clusterArn (missing, not an ARN, or one no key can
    hold) is stored all the same, and can be got by its key; it is only left out of the
    listings, as an item without clusterArn always was.
    """
    cluster = detail.get(CLUSTER)
    if not isinstance(cluster, str) or not cluster.startswith("arn:") or SEPARATOR in cluster:
        return None  # (the read API lists a cluster by its ARN, or by the name it makes an ARN of)
    if phase == FINISHED:
        assert finished_at is not None
        key = f"{cluster}{SEPARATOR}{FINISHED}{SEPARATOR}{sort_time(finished_at)}"
    else:
        group = detail.get(GROUP)
        key = f"{cluster}{SEPARATOR}{OPEN}{SEPARATOR}{group if isinstance(group, str) else ''}"
    try:
        fits = utf8_length(key) <= MAX_SORT_KEY_BYTES
    except Unstorable:  # a lone surrogate in the group: DynamoDB stores only UTF-8
        return None
    return key if fits else None


def cluster_of(key: str) -> str:
    return key.split(SEPARATOR, 1)[0]


def phase_of(key: str) -> str:
    parts = key.split(SEPARATOR, 2)
    return parts[1] if len(parts) > 1 else ""


# A KeyConditionExpression on the sort key: (low, None) is equal to low; (low, high) between the two.
# A plain tuple, not a NamedTuple: every cold start imports this module (through model/lifecycle.py).
KeyRange = Tuple[str, Optional[str]]


def cluster_range(cluster: str) -> KeyRange:
    """All of a cluster's entries: unfinished then finished, in descending order."""
    return (f"{cluster}{SEPARATOR}", f"{cluster}{SEPARATOR}{_AFTER}")


def open_range(cluster: str, group: Optional[str] = None) -> KeyRange:
    """A cluster's unfinished entries, or those of one group (one key)."""
    prefix = f"{cluster}{SEPARATOR}{OPEN}{SEPARATOR}"
    if group is not None:
        return (prefix + group, None)
    return (prefix, prefix + _AFTER)


def finished_range(cluster: str, since: Optional[float] = None, until: Optional[float] = None) -> KeyRange:
    """A cluster's finished entries, those that finished from ``since`` to ``until`` (both included)."""
    prefix = f"{cluster}{SEPARATOR}{FINISHED}{SEPARATOR}"
    return (prefix + (sort_time(since) if since is not None else ""),
            prefix + (sort_time(until) if until is not None else _AFTER))


def after_cluster(cluster: str) -> str:
    """A sort key above every entry of ``cluster`` and below those of any cluster after it."""
    return cluster + chr(ord(SEPARATOR) + 1)
