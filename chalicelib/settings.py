"""Settings read from the environment, and the process's one DynamoDB client.

The endpoint and region come from boto3's own standard variables
(AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION),
so there is nothing ecs-specific to configure for local runs.
"""
import os
import threading
from typing import Any, Optional

from chalicelib.tables import TableSpec

# Worst case per event: 3 attempts x (2 s connect + 3 s read) plus backoff,
# well under the 30 s Lambda timeout in .chalice/config.json, so a slow
# DynamoDB fails the invocation (and Lambda retries it) instead of timing out.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 3
MAX_ATTEMPTS = 3

_client: Optional[Any] = None
_client_lock = threading.Lock()


def table_name(table: TableSpec) -> str:
    """The table's name for this stage (read per call: tests switch stages)."""
    return os.environ.get(table.name_env) or table.default_name


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
                        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                    ),
                )
    return _client


def reset_client() -> None:
    """Forget the client, so the next call reads the environment again (tests, local runs)."""
    global _client
    with _client_lock:
        _client = None
