"""The ECS API as the reconciler reads it: every page, 100 ARNs per Describe, at a steady pace.

ECS throttles per account and per region, with a token bucket that
DescribeTasks and DescribeContainerInstances share (refilled at about 20 calls
a second). The reconciler keeps well under it: one call at a time, at most
``calls_per_second`` (the stage's ECS_STATE_ECS_CALLS_PER_SECOND), and the client's
adaptive retry mode backs off further when ECS throttles anyway.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Sequence, Tuple

from chalicelib.errors import OutOfTime

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

# A pass may wait longer per call than an event may (its own 300 s timeout, and it
# stops STOP_MARGIN_SECONDS before it), and throttling is expected here:
# botocore's adaptive mode backs off and slows the client down after a
# ThrottlingException, on top of the steady pace below.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 4
DESCRIBE_LIMIT = 100  # ARNs per DescribeTasks / DescribeContainerInstances
MISSING = "MISSING"  # Describe* failure reason: ECS does not know the ARN (any more)


class Pace:
    """At most ``rate`` calls a second, evenly spaced: a call waits for its slot."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()

    def wait(self) -> None:
        now = self._clock()
        if now < self._next_slot:
            self._sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + self._interval


class EcsReader:
    def __init__(self, client: Any, pace: Pace, time_left: Callable[[], bool] = lambda: True) -> None:
        self._client = client
        self._pace = pace
        self._time_left = time_left
        self.calls: Counter[str] = Counter()  # per operation: the pass reports them

    def cluster_arns(self) -> List[str]:
        return list(self._pages("list_clusters", "clusterArns"))

    def task_arns(self, cluster: str, desired_status: str) -> List[str]:
        return list(self._pages("list_tasks", "taskArns", cluster=cluster, desiredStatus=desired_status))

    def container_instance_arns(self, cluster: str) -> List[str]:
        """Every container instance ECS lists: all statuses but INACTIVE (deregistered)."""
        return list(self._pages("list_container_instances", "containerInstanceArns", cluster=cluster))

    def describe_tasks(self, cluster: str, arns: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
        """(tasks ECS described, ARNs ECS no longer knows) for at most 100 ARNs."""
        return self._describe("describe_tasks", "tasks", "taskArn", cluster=cluster, tasks=list(arns))

    def describe_container_instances(self, cluster: str, arns: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
        return self._describe(
            "describe_container_instances", "containerInstances", "containerInstanceArn",
            cluster=cluster, containerInstances=list(arns),
        )

    def _describe(self, operation: str, member: str, key: str, **params: Any) -> Tuple[List[Dict[str, Any]], List[str]]:
        asked = next(value for value in params.values() if isinstance(value, list))
        if len(asked) > DESCRIBE_LIMIT:
            raise ValueError(f"{operation} takes at most {DESCRIBE_LIMIT} ARNs, got {len(asked)}")
        response = self._call(operation, **params)
        described = response.get(member, [])
        known = {entity[key] for entity in described}
        failed = {failure.get("arn"): failure.get("reason") for failure in response.get("failures", [])}
        # Gone: refused as MISSING, or left out of both lists (the API reference
        # counts both as unknown). A failure for another reason says nothing.
        gone = [arn for arn in asked if arn not in known and failed.get(arn, MISSING) == MISSING]
        return described, gone

    def _pages(self, operation: str, member: str, **params: Any) -> Iterator[str]:
        while True:
            response = self._call(operation, **params)
            yield from response.get(member, [])
            token = response.get("nextToken")
            if not token:
                return
            params["nextToken"] = token

    def _call(self, operation: str, **params: Any) -> Dict[str, Any]:
        if not self._time_left():
            raise OutOfTime(operation)
        self._pace.wait()
        self.calls[operation] += 1
        response: Dict[str, Any] = getattr(self._client, operation)(**params)
        return response


def new_ecs_client() -> "ECSClient":
    """The reconciler's ECS client; endpoint and region from boto3's variables (AWS_ENDPOINT_URL_ECS)."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session()
    # Timestamps as the numbers ECS sent (epoch seconds with milliseconds), not
    # datetimes: snapshots write them as events do, to the millisecond, and a
    # float's trip through datetime can lose one.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=lambda value: value)
    return session.create_client(  # type: ignore[return-value]
        "ecs",
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"mode": "adaptive", "total_max_attempts": MAX_ATTEMPTS},
        ),
    )
