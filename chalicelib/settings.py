"""Settings read from the environment, and the process's one DynamoDB client.

The endpoint and region come from boto3's own standard variables
(AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION),
so there is nothing ecs-specific to configure for local runs.
"""
import os
import threading
from typing import Any, Mapping, Optional

from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import TableSpec

# Worst case per event: 3 attempts x (2 s connect + 3 s read) plus backoff,
# well under the 30 s Lambda timeout in .chalice/config.json, so a slow
# DynamoDB fails the invocation (and Lambda retries it) instead of timing out.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 3
MAX_ATTEMPTS = 3  # in all, the first try included
# Keys a warm container remembers the highest stored version of (chalicelib/high_water.py):
# about 300 bytes each, so the default holds 10,000 tasks in ~3 MB. 0 turns the marks off.
HIGH_WATER_ENTRIES_ENV = "ECS_STATE_HIGH_WATER_ENTRIES"
DEFAULT_HIGH_WATER_ENTRIES = 10_000

# POST /events exists only where the stage sets this variable to "enabled"
# (the local stage): Chalice loads a stage's variables before importing app.py.
EVENTS_ROUTE_VARIABLE = "ECS_STATE_EVENTS_ROUTE"
EVENTS_ROUTE_ENABLED = "enabled"
# curl --data sends form-encoded; the body is parsed as JSON whatever it is labelled.
EVENTS_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]

_client: Optional[Any] = None
_marks: Optional[HighWaterMarks] = None
_client_lock = threading.Lock()


def events_route_enabled() -> bool:
    return os.environ.get(EVENTS_ROUTE_VARIABLE) == EVENTS_ROUTE_ENABLED


def table_name(table: TableSpec, environ: Optional[Mapping[str, str]] = None) -> str:
    """The table's name for this stage (read per call: tests switch stages).

    ``environ`` defaults to os.environ; the deploy tools pass a stage's
    environment_variables from .chalice/config.json instead.
    """
    environ = os.environ if environ is None else environ
    return environ.get(table.name_env) or table.default_name


def dynamodb_client() -> Any:
    """The DynamoDB client, created on first use and then reused (warm starts pay nothing)."""
    global _client
    if _client is None:
        # boto3's default session is not thread-safe; the local run and the
        # tests call handlers from several threads.
        with _client_lock:
            if _client is None:
                import boto3
                from botocore.config import Config

                _client = boto3.session.Session().client(
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

                trim_returned_items(_client)
    return _client


def high_water_marks() -> Optional[HighWaterMarks]:
    """The process's high-water marks, or None when turned off (the setting is read per call)."""
    global _marks
    text = os.environ.get(HIGH_WATER_ENTRIES_ENV, "")
    try:
        entries = int(text) if text else DEFAULT_HIGH_WATER_ENTRIES
    except ValueError:
        raise ValueError(f"{HIGH_WATER_ENTRIES_ENV} must be a whole number, got {text!r}") from None
    if entries < 0:
        raise ValueError(f"{HIGH_WATER_ENTRIES_ENV} must not be negative, got {entries}")
    if entries == 0:
        return None
    if _marks is None or _marks.max_entries != entries:
        with _client_lock:
            if _marks is None or _marks.max_entries != entries:
                _marks = HighWaterMarks(entries)
    return _marks


def reset_client() -> None:
    """Forget the client and the high-water marks, so the next event reads the environment
    again and knows nothing of earlier tables (tests, local runs)."""
    global _client, _marks
    with _client_lock:
        _client = None
        _marks = None
