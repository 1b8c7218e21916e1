"""Settings read from the environment, and the process's one DynamoDB and one ECS client.

The endpoints and region come from boto3's own standard variables
(AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_ECS, AWS_ENDPOINT_URL,
AWS_REGION / AWS_DEFAULT_REGION), so there is nothing ecs-specific to
configure for local runs. A stage sets the rest in .chalice/config.json; each
setting is read per call (tests and the tools switch stages), and a bad value
raises ValueError naming its variable.
"""
import os
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from chalicelib.events import ItemRules
from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import TableSpec

Environ = Optional[Mapping[str, str]]  # None: os.environ; the deploy tools pass a stage's variables

# Worst case per event: 3 attempts x (2 s connect + 3 s read) plus backoff,
# well under the 30 s Lambda timeout in .chalice/config.json, so a slow
# DynamoDB fails the invocation (and Lambda retries it) instead of timing out.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 3
MAX_ATTEMPTS = 3  # in all, the first try included
# ECS: a pass may wait longer per call than an event may (its own 300 s timeout,
# and it stops RECONCILE_STOP_MARGIN_SECONDS before it), and throttling is
# expected there: botocore's adaptive mode backs off and slows the client down
# after a ThrottlingException, on top of the steady pace below.
ECS_READ_TIMEOUT_SECONDS = 5
ECS_MAX_ATTEMPTS = 4
# Keys a warm container remembers the highest stored version of (chalicelib/high_water.py):
# about 300 bytes each, so the default holds 10,000 tasks in ~3 MB. 0 turns the marks off.
HIGH_WATER_ENTRIES_ENV = "ECS_STATE_HIGH_WATER_ENTRIES"
DEFAULT_HIGH_WATER_ENTRIES = 10_000
# How long a mark answers for its key. Duplicates and out-of-order versions arrive
# within seconds to minutes of each other (EventBridge's and Lambda's retries, a
# task's states a few seconds apart), so ten minutes keep nearly all of the marks'
# saving (docs/benchmark.md), and bound how long a warm container can answer from
# marks taken before a table was restored (chalicelib/high_water.py).
HIGH_WATER_SECONDS_ENV = "ECS_STATE_HIGH_WATER_SECONDS"
DEFAULT_HIGH_WATER_SECONDS = 600

# The read index (chalicelib/tables.py): "disabled" keeps the docs example's bare
# tables; the list routes then answer 501, and the reconciler finds ghosts by a
# slow scan instead (chalicelib/reconciler.py).
READ_INDEX_ENV = "ECS_STATE_READ_INDEX"
ENABLED, DISABLED = "enabled", "disabled"
# How long a finished item stays (a stopped task, a deregistered instance, a ghost),
# never less than the delivery horizon; and how young an event must be to create
# its item, never more than it (chalicelib/events.py, docs/reconcile.md).
RETENTION_DAYS_ENV = "ECS_STATE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 16  # the delivery horizon: a redrive creates what the dead-letter queue still holds
# The floor: EventBridge redelivers for up to 24 h and Lambda retries for up to 6 h,
# and an event older than the creation window can no longer create its item. Under
# 30 h, an event still in automatic redelivery (say, after a day-long DynamoDB
# outage) could be refused as expired; two days leave margin over those 30 h.
MIN_RETENTION_DAYS = 2
# The reconciler (chalicelib/reconciler.py).
RECONCILE_MINUTES_ENV = "ECS_STATE_RECONCILE_MINUTES"
# ECS keeps a stopped task for about an hour: every 15 minutes, a lost STOPPED
# event is healed from the API four times over before ECS forgets the task, and a
# pass that changes nothing costs about 5,000 read units per 10,000 tasks.
DEFAULT_RECONCILE_MINUTES = 15
MIN_RECONCILE_MINUTES = 5  # a pass may take up to its 300 s timeout: passes must not pile up
RECONCILE_CLUSTERS_ENV = "ECS_STATE_RECONCILE_CLUSTERS"  # comma-separated names or ARNs; empty: all
ECS_CALLS_PER_SECOND_ENV = "ECS_STATE_ECS_CALLS_PER_SECOND"
# ECS refills the token bucket DescribeTasks and DescribeContainerInstances share
# at about 20 per second, for the whole account: half of it leaves room for the
# account's own deployments and tools.
DEFAULT_ECS_CALLS_PER_SECOND = 10.0
MAX_ECS_CALLS_PER_SECOND = 20.0

# Where an event that can never be stored goes, at once, with its error (recorder.py):
# the dead-letter queue's name or URL. Unset (local runs): such an event raises, as any.
DEAD_LETTER_QUEUE_ENV = "ECS_STATE_DEAD_LETTER_QUEUE"

# POST /events exists only where the stage sets this variable to "enabled"
# (the local stage): Chalice loads a stage's variables before importing app.py.
EVENTS_ROUTE_VARIABLE = "ECS_STATE_EVENTS_ROUTE"
EVENTS_ROUTE_ENABLED = ENABLED
# curl --data sends form-encoded; the body is parsed as JSON whatever it is labelled.
EVENTS_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]

_clients: Dict[str, Any] = {}  # service -> the process's client
_marks: Optional[HighWaterMarks] = None
_client_lock = threading.Lock()


def events_route_enabled() -> bool:
    return os.environ.get(EVENTS_ROUTE_VARIABLE) == EVENTS_ROUTE_ENABLED


def table_name(table: TableSpec, environ: Environ = None) -> str:
    """The table's name for this stage."""
    return _environ(environ).get(table.name_env) or table.default_name


def dead_letter_queue(environ: Environ = None) -> Optional[str]:
    """The dead-letter queue's name or URL, or None where the stage has none (local runs)."""
    return _environ(environ).get(DEAD_LETTER_QUEUE_ENV) or None


def read_index_enabled(environ: Environ = None) -> bool:
    text = _environ(environ).get(READ_INDEX_ENV) or ENABLED
    if text not in (ENABLED, DISABLED):
        raise ValueError(f"{READ_INDEX_ENV} must be {ENABLED!r} or {DISABLED!r}, got {text!r}")
    return text == ENABLED


def retention_seconds(environ: Environ = None) -> int:
    days = _whole_number(environ, RETENTION_DAYS_ENV, DEFAULT_RETENTION_DAYS)
    if days < MIN_RETENTION_DAYS:
        raise ValueError(
            f"{RETENTION_DAYS_ENV} must be at least {MIN_RETENTION_DAYS} days, got {days}: EventBridge and Lambda "
            "redeliver an event for up to 30 hours, and an event older than the retention cannot create its item"
        )
    return days * 86_400


def item_rules(environ: Environ = None) -> ItemRules:
    """What the stage's settings change in a stored item (read per event: two lookups)."""
    return ItemRules(read_index=read_index_enabled(environ), retention_seconds=retention_seconds(environ))


def reconcile_minutes(environ: Environ = None) -> int:
    minutes = _whole_number(environ, RECONCILE_MINUTES_ENV, DEFAULT_RECONCILE_MINUTES)
    if not MIN_RECONCILE_MINUTES <= minutes <= 24 * 60:
        raise ValueError(f"{RECONCILE_MINUTES_ENV} must be from {MIN_RECONCILE_MINUTES} to 1440, got {minutes}")
    return minutes


def reconcile_clusters(environ: Environ = None) -> Tuple[str, ...]:
    """The clusters the stage restricts reconciliation to (names or ARNs); empty: every cluster."""
    text = _environ(environ).get(RECONCILE_CLUSTERS_ENV, "")
    return tuple(name for name in (part.strip() for part in text.split(",")) if name)


def ecs_calls_per_second(environ: Environ = None) -> float:
    text = _environ(environ).get(ECS_CALLS_PER_SECOND_ENV, "")
    try:
        rate = float(text) if text else DEFAULT_ECS_CALLS_PER_SECOND
    except ValueError:
        rate = float("nan")
    if not 0 < rate <= MAX_ECS_CALLS_PER_SECOND:  # (NaN fails this too)
        raise ValueError(f"{ECS_CALLS_PER_SECOND_ENV} must be a number above 0, at most {MAX_ECS_CALLS_PER_SECOND:g}, got {text!r}")
    return rate


def dynamodb_client() -> Any:
    """The DynamoDB client, created on first use and then reused (warm starts pay nothing)."""
    return _client("dynamodb", _new_dynamodb_client)


def ecs_client() -> Any:
    """The ECS client (the reconciler's), created on first use and then reused."""
    return _client("ecs", _new_ecs_client)


def sqs_client() -> Any:
    """The SQS client, for the rare event sent to the dead-letter queue (chalicelib/dead_letters.py)."""
    return _client("sqs", _new_sqs_client)


def _client(service: str, create: Callable[[], Any]) -> Any:
    client = _clients.get(service)
    if client is None:
        # boto3's default session is not thread-safe; the local run and the tests
        # call handlers from several threads. A client is published only once
        # complete, its hooks registered: another thread may use it at once.
        with _client_lock:
            client = _clients.get(service)
            if client is None:
                client = _clients[service] = create()
    return client


def _new_dynamodb_client() -> Any:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "dynamodb",
        config=Config(
            # botocore's client-side check of every attribute value cost
            # 1.3 ms per event (a third of ecs-state's own CPU time per
            # PutItem; see docs/benchmark.md). chalicelib.attributes
            # already builds only well-formed values, checked against
            # DynamoDB's own limits, and DynamoDB checks them again.
            parameter_validation=False,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # total_max_attempts counts the first attempt; botocore's
            # "max_attempts" counts only retries (3 would mean 4 attempts).
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        ),
    )
    from chalicelib.store import trim_returned_items  # (store imports this module)

    trim_returned_items(client)
    return client


def _new_sqs_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("sqs", config=Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    ))


def _new_ecs_client() -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session()
    # Timestamps as the numbers ECS sent (epoch seconds with milliseconds), not
    # datetimes: snapshots write them as events do, to the millisecond, and a
    # float's trip through datetime can lose one.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=lambda value: value)
    return session.create_client(
        "ecs",
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=ECS_READ_TIMEOUT_SECONDS,
            retries={"mode": "adaptive", "total_max_attempts": ECS_MAX_ATTEMPTS},
        ),
    )


def high_water_marks() -> Optional[HighWaterMarks]:
    """The process's high-water marks, or None when turned off (the setting is read per call)."""
    global _marks
    entries = _whole_number(None, HIGH_WATER_ENTRIES_ENV, DEFAULT_HIGH_WATER_ENTRIES)
    max_age = _whole_number(None, HIGH_WATER_SECONDS_ENV, DEFAULT_HIGH_WATER_SECONDS)
    if entries == 0 or max_age == 0:
        return None
    if _marks is None or (_marks.max_entries, _marks.max_age_seconds) != (entries, max_age):
        with _client_lock:
            if _marks is None or (_marks.max_entries, _marks.max_age_seconds) != (entries, max_age):
                _marks = HighWaterMarks(entries, max_age)
    return _marks


def reset_client() -> None:
    """Forget the clients and the high-water marks, so the next event reads the environment
    again and knows nothing of earlier tables (tests, local runs)."""
    global _marks
    with _client_lock:
        _clients.clear()
        _marks = None


def _whole_number(environ: Environ, name: str, default: int) -> int:
    text = _environ(environ).get(name, "")
    try:
        number = int(text) if text else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if number < 0:
        raise ValueError(f"{name} must not be negative, got {number}")
    return number


def _environ(environ: Environ) -> Mapping[str, str]:
    return os.environ if environ is None else environ
