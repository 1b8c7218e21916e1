"""A fake Amazon ECS control plane on loopback, for the reconciler's tests and benchmark.

``FakeECS`` keeps an account's clusters, tasks and container instances in
memory and serves ListClusters, ListTasks, DescribeTasks,
ListContainerInstances and DescribeContainerInstances over ECS's own wire
protocol (JSON 1.1), so boto3's real ECS client talks to it unchanged. Every
other operation is refused with UnknownOperationException.

Tests and the benchmark build and change the account with plain methods
(``add_task``, ``transition_task``, ``deregister_container_instance``, ...);
each change bumps the entity's ``version`` by one, as ECS does.
``event_for_task`` and ``event_for_container_instance`` give the EventBridge
event ECS would send for an entity's current state. ``throttle`` and ``fail``
inject errors; ``calls`` counts requests by operation.

Only 127.0.0.1 is served. tests/test_fake_ecs.py checks it against botocore's
service model, the API's documented behaviour and the events in events/.

Not modelled: services, task definitions and placement (an EC2 task does not
change its instance's counts or resources), launch types other than EC2 and
FARGATE, GPUs, Neuron devices, trusted execution, ListTasks' daemonName and
ListContainerInstances' filter (both refused), old short-format ARNs, and
ECS forgetting stopped tasks by itself (forget_task does it on demand).
Describe* answers another cluster's ARN as MISSING; an ARN of another account,
region or resource type fails the whole request (InvalidParameterException),
as ECS does ("Identifier is for <account>. Your accountId is <account>").
"""
import base64
import binascii
import bisect
import collections
import copy
import functools
import hashlib
import heapq
import itertools
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from tools.local_dynamodb import LOOPBACK, LoopbackServer

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113"
CONTENT_TYPE = "application/x-amz-json-1.1"
PAGE_LIMIT = 100  # maxResults' ceiling and default for every List* operation
DESCRIBE_LIMIT = 100  # most tasks or container instances one Describe* may name

# A task's lastStatus in lifecycle order. A replayed history (add_task) skips
# DEPROVISIONING unless asked for, as the events in events/ do.
TASK_LIFECYCLE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED")
_STOPPING = frozenset(TASK_LIFECYCLE[TASK_LIFECYCLE.index("DEACTIVATING"):])
# How long each state lasts in a replayed history: about what events/ shows.
_STATE_SECONDS = {
    "PROVISIONING": 27.4, "PENDING": 19.8, "ACTIVATING": 30.3, "RUNNING": 3600.0,
    "DEACTIVATING": 31.6, "STOPPING": 26.1, "DEPROVISIONING": 9.4,
}
CONTAINER_INSTANCE_STATUSES = ("REGISTERING", "REGISTRATION_FAILED", "ACTIVE", "DRAINING", "DEREGISTERING", "INACTIVE")
# The states an instance went through to reach each status: its starting version is their count.
_INSTANCE_HISTORY = {
    "REGISTERING": ("REGISTERING",),
    "REGISTRATION_FAILED": ("REGISTERING", "REGISTRATION_FAILED"),
    "ACTIVE": ("ACTIVE",),
    "DRAINING": ("ACTIVE", "DRAINING"),
    "DEREGISTERING": ("ACTIVE", "DEREGISTERING"),
    "INACTIVE": ("ACTIVE", "INACTIVE"),
}
LAUNCH_TYPES = ("EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES")

# Members DescribeTasks / DescribeContainerInstances return but events do not carry. A
# container's healthStatus too: events/, the ECS guide's example and captured events lack it.
TASK_API_ONLY = frozenset({"tags", "inferenceAccelerators", "fargateEphemeralStorage", "trustedExecutionSummary", "healthStatus"})
CONTAINER_API_ONLY = frozenset({"neuronDeviceIds", "gpuSharingStrategy", "healthStatus"})
CONTAINER_INSTANCE_API_ONLY = frozenset({"capacityProviderName", "tags", "healthStatus", "gpuDevices"})
# Every timestamp member the fake writes (epoch seconds in the API, ISO-8601 in events).
TIMESTAMP_MEMBERS = frozenset({
    "connectivityAt", "createdAt", "executionStoppedAt", "pullStartedAt", "pullStoppedAt", "startedAt",
    "stoppedAt", "stoppingAt", "lastStartedAt", "registeredAt", "lastUpdated", "lastStatusChange", "updatedAt",
})
# Members the control plane sets itself: changing them by hand would break the version rule.
_MANAGED_MEMBERS = frozenset({"version", "taskArn", "clusterArn", "lastStatus", "desiredStatus", "containerInstanceArn"})

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_ANY_ARN = re.compile(r"arn:(?P<partition>[^:]*):(?P<service>[^:]*):(?P<region>[^:]*):(?P<account>[^:]*):(?P<resource>[^/]*)/.*")
_INSTANCE_AGENT = {"agentVersion": "1.88.0", "agentHash": "d8a5c6f2", "dockerVersion": "DockerVersion: 25.0.8"}
_SIDECAR_IMAGE = "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32.4"


class ECSError(Exception):
    """An error ECS answers with: its code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


def epoch_ms(seconds: float) -> float:
    """Epoch seconds with millisecond fractions, as ECS's API returns timestamps."""
    return round(seconds, 3)


def iso_ms(seconds: float) -> str:
    """ISO-8601 UTC to the millisecond, as events carry timestamps: the fraction's trailing
    zeros dropped, as in the ECS guide's example events ("...:06.8Z") and captured ones."""
    millis = round(seconds * 1000)
    moment = datetime.fromtimestamp(millis // 1000, timezone.utc)
    fraction = f"{millis % 1000:03d}".rstrip("0")
    return f"{moment:%Y-%m-%dT%H:%M:%S}{'.' + fraction if fraction else ''}Z"


def iso_seconds(seconds: float) -> str:
    """ISO-8601 UTC to the second, as an event envelope's ``time``."""
    return f"{datetime.fromtimestamp(int(seconds), timezone.utc):%Y-%m-%dT%H:%M:%S}Z"


def _with_iso_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: iso_ms(member) if name in TIMESTAMP_MEMBERS and isinstance(member, (int, float)) else _with_iso_timestamps(member)
            for name, member in value.items()
        }
    if isinstance(value, list):
        return [_with_iso_timestamps(member) for member in value]
    return value


@functools.lru_cache(maxsize=None)
def model_members(shape_name: str) -> frozenset:
    """The member names of an ECS shape in botocore's model: what **members may set."""
    import botocore.session  # only the control plane's checks need the model

    return frozenset(botocore.session.get_session().get_service_model("ecs").shape_for(shape_name).members)


class _Listing:
    """ARNs in the order they were created, paged by a cursor (the last sequence number
    returned): a page resumes where the last one ended however many come and go meanwhile."""

    def __init__(self) -> None:
        self._seqs: List[int] = []
        self._arns: Dict[int, str] = {}

    def add(self, seq: int, arn: str) -> None:
        bisect.insort(self._seqs, seq)
        self._arns[seq] = arn

    def remove(self, seq: int) -> None:
        del self._seqs[bisect.bisect_left(self._seqs, seq)]
        del self._arns[seq]

    def __len__(self) -> int:
        return len(self._seqs)

    def nth(self, index: int) -> str:
        return self._arns[self._seqs[index]]

    def after(self, cursor: int) -> Iterator[Tuple[int, str]]:
        for index in range(bisect.bisect_right(self._seqs, cursor), len(self._seqs)):
            seq = self._seqs[index]
            yield seq, self._arns[seq]


@dataclass
class _Cluster:
    name: str
    arn: str
    seq: int
    tasks: Dict[str, _Listing] = field(default_factory=lambda: collections.defaultdict(_Listing))  # by desiredStatus
    instances: Dict[str, _Listing] = field(default_factory=lambda: collections.defaultdict(_Listing))  # by status, INACTIVE not listed
    placements: int = 0  # EC2 tasks placed so far: round-robin over ACTIVE instances


@dataclass
class _Entity:
    """A task or container instance. ``body`` is the API-shaped dict; it is replaced,
    never changed in place, so a response can serialise it outside the lock."""

    arn: str
    cluster: str
    seq: int
    body: Dict[str, Any]
    updated_at: float  # the last state change: events' updatedAt
    listed_under: Optional[str]  # the key of the cluster listing holding it, None if unlisted


@dataclass
class _Fault:
    operation: Optional[str]  # None: any operation
    code: str
    message: str
    status: int
    remaining: int


class FakeECS(LoopbackServer):
    """An in-memory ECS account served on a free loopback port. See the module docstring."""

    thread_name = "fake-ecs"

    def __init__(self, account: str = "111122223333", region: str = "us-east-1", clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.account, self.region, self.clock = account, region, clock
        self.calls: collections.Counter = collections.Counter()  # requests by operation, refused ones included
        self.max_ids_per_describe = 0  # the most ARNs or IDs one Describe* request asked for
        self._arn_prefix = f"arn:aws:ecs:{region}:{account}:"
        self._lock = threading.Lock()
        self._clusters: Dict[str, _Cluster] = {}
        self._tasks: Dict[str, _Entity] = {}
        self._instances: Dict[str, _Entity] = {}
        self._faults: List[_Fault] = []
        self._cluster_listing = _Listing()
        self._sequence = itertools.count(1)
        self._operations: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
            "ListClusters": self._list_clusters,
            "ListTasks": self._list_tasks,
            "DescribeTasks": self._describe_tasks,
            "ListContainerInstances": self._list_container_instances,
            "DescribeContainerInstances": self._describe_container_instances,
        }

    # -- server ---------------------------------------------------------------------------

    def _make_server(self) -> "_Server":
        return _Server(self)

    def _stopped(self, server: "_Server") -> None:
        server.close_connections()  # kept-alive ones too: a client must not hang on a stopped fake

    # -- building and changing the account ------------------------------------------------

    def add_cluster(self, name: str) -> str:
        """Create a cluster (or return the one of that name, as CreateCluster does); its ARN."""
        with self._lock:
            if name not in self._clusters:
                cluster = self._clusters[name] = _Cluster(name, f"{self._arn_prefix}cluster/{name}", next(self._sequence))
                self._cluster_listing.add(cluster.seq, cluster.arn)
            return self._clusters[name].arn

    def add_task(
        self,
        cluster: str,
        *,
        launch_type: str = "FARGATE",
        last_status: str = "RUNNING",
        desired_status: Optional[str] = None,
        task_id: Optional[str] = None,
        started_by: Optional[str] = None,
        group: Optional[str] = None,
        containers: int = 1,
        version: Optional[int] = None,
        container_instance: Optional[str] = None,
        execute_command: bool = False,
        tags: Optional[Dict[str, str]] = None,
    ) -> str:
        """A task that went through every state up to ``last_status``, its last change now.

        Its timestamps and members are those ECS had set by then, and its version is
        the number of states it went through (``version`` overrides it). ``desired_status``
        defaults to RUNNING before DEACTIVATING and STOPPED from then on; STOPPED before
        that is a stop ECS has not acted on yet (one more state change). An EC2 task runs
        on ``container_instance`` or, by default, on the cluster's ACTIVE instances in turn;
        placing it does not change the instance (use update_container_instance).
        """
        if launch_type not in ("EC2", "FARGATE"):
            raise ValueError(f"launch_type {launch_type!r}: the fake models EC2 and FARGATE")
        if last_status not in TASK_LIFECYCLE:
            raise ValueError(f"last_status {last_status!r} is not one of {TASK_LIFECYCLE}")
        if containers < 1:
            raise ValueError("a task has at least one container")
        history = [
            status for status in TASK_LIFECYCLE[: TASK_LIFECYCLE.index(last_status) + 1]
            if not (status == "PROVISIONING" and launch_type == "EC2" and last_status != "PROVISIONING")
            and not (status == "DEPROVISIONING" and last_status != "DEPROVISIONING")
        ]
        desired = _desired_status(last_status, desired_status, "RUNNING")
        late_stop = desired == "STOPPED" and last_status not in _STOPPING
        task_id = task_id or uuid.uuid4().hex
        if not _HEX_ID.fullmatch(task_id):
            raise ValueError(f"task_id {task_id!r}: ECS task IDs are 32 lowercase hex digits")
        now = self.clock()
        with self._lock:
            home = self._cluster_named(cluster)
            arn = f"{self._arn_prefix}task/{home.name}/{task_id}"
            if arn in self._tasks:
                raise ValueError(f"{arn} exists")
            instance = self._place(home, container_instance) if launch_type == "EC2" else None
            body = self._new_task(home, arn, task_id, launch_type, started_by, group, containers, instance, execute_command, tags)
            steps = [(status, "STOPPED" if status in _STOPPING else "RUNNING") for status in history]
            if late_stop:
                steps.append((last_status, "STOPPED"))
            times = _backdate(now, [_STATE_SECONDS.get(status, 0.0) for status, _ in steps])
            previous = times[0]
            for (status, step_desired), at in zip(steps, times):
                _advance_task(body, status, step_desired, at, previous)
                previous = at
            body["version"] = len(steps) if version is None else version
            self._store_task(home, arn, body, times[-1])
            return arn

    def transition_task(self, arn: str, last_status: str, desired_status: Optional[str] = None, **members: Any) -> Dict[str, Any]:
        """One state change, now: version + 1, timestamps and containers as ECS sets them.

        ``members`` (Task members by their API names, e.g. healthStatus, or stopCode and
        stoppedReason) are set first and ECS's own changes fill in what they leave unset,
        so a stopCode given decides how the containers exit. A task never goes back in
        its lifecycle. Returns the new task.
        """
        if last_status not in TASK_LIFECYCLE:
            raise ValueError(f"last_status {last_status!r} is not one of {TASK_LIFECYCLE}")
        _check_members(members, "Task")
        with self._lock:
            entity = self._tasks[arn]
            current = entity.body
            if TASK_LIFECYCLE.index(last_status) < TASK_LIFECYCLE.index(current["lastStatus"]):
                raise ValueError(f"{arn} is {current['lastStatus']}: it cannot go back to {last_status}")
            desired = _desired_status(last_status, desired_status, current["desiredStatus"])
            if current["desiredStatus"] == "STOPPED" and desired != "STOPPED":
                raise ValueError(f"{arn} is being stopped: its desired status stays STOPPED")
            at = self._change_time(entity)
            body = {**copy.deepcopy(current), **copy.deepcopy(members)}
            _advance_task(body, last_status, desired, at, entity.updated_at)
            body["version"] = current["version"] + 1
            self._replace(entity, body, at, self._clusters[entity.cluster].tasks, body["desiredStatus"])
            return copy.deepcopy(body)

    def forget_task(self, arn: str) -> None:
        """ECS no longer knows the task (it does so about an hour after the task stops)."""
        with self._lock:
            entity = self._tasks.pop(arn)
            self._unlist(entity, self._clusters[entity.cluster].tasks)

    def add_container_instance(
        self,
        cluster: str,
        *,
        status: str = "ACTIVE",
        instance_id: Optional[str] = None,
        version: Optional[int] = None,
        ec2_instance_id: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> str:
        """A registered EC2 instance (``instance_id``: the 32-hex ID in its ARN), its last change now."""
        if status not in CONTAINER_INSTANCE_STATUSES:
            raise ValueError(f"status {status!r} is not one of {CONTAINER_INSTANCE_STATUSES}")
        instance_id = instance_id or uuid.uuid4().hex
        if not _HEX_ID.fullmatch(instance_id):
            raise ValueError(f"instance_id {instance_id!r}: container instance IDs are 32 lowercase hex digits")
        now = self.clock()
        with self._lock:
            home = self._cluster_named(cluster)
            arn = f"{self._arn_prefix}container-instance/{home.name}/{instance_id}"
            if arn in self._instances:
                raise ValueError(f"{arn} exists")
            history = _INSTANCE_HISTORY[status]
            registered_at = epoch_ms(now - 60.0 * (len(history) - 1))
            body = _new_container_instance(arn, home, status, ec2_instance_id, registered_at, tags, len(self._instances))
            body["version"] = len(history) if version is None else version
            entity = _Entity(arn, home.name, next(self._sequence), body, epoch_ms(now), None)
            self._instances[arn] = entity
            self._relist(entity, home.instances, _instance_listing(status))
            return arn

    def update_container_instance(self, arn: str, **members: Any) -> Dict[str, Any]:
        """One state change, now: version + 1 and ``members`` set (ContainerInstance members
        by their API names: remainingResources, runningTasksCount, agentConnected, status, ...).
        Returns the new container instance."""
        _check_members(members, "ContainerInstance")
        if "status" in members and members["status"] not in CONTAINER_INSTANCE_STATUSES:
            raise ValueError(f"status {members['status']!r} is not one of {CONTAINER_INSTANCE_STATUSES}")
        with self._lock:
            return self._update_instance(arn, members)

    def deregister_container_instance(self, arn: str) -> Dict[str, Any]:
        """Deregistered: INACTIVE, agent disconnected, version + 1; no longer listed, still describable."""
        with self._lock:
            return self._update_instance(arn, {"status": "INACTIVE", "agentConnected": False})

    def forget_container_instance(self, arn: str) -> None:
        """ECS no longer knows the (deregistered) container instance."""
        with self._lock:
            entity = self._instances.pop(arn)
            self._unlist(entity, self._clusters[entity.cluster].instances)

    def task(self, arn: str) -> Dict[str, Any]:
        """The task as DescribeTasks with include TAGS returns it, timestamps as epoch floats."""
        with self._lock:
            return copy.deepcopy(self._tasks[arn].body)

    def container_instance(self, arn: str) -> Dict[str, Any]:
        """The container instance as DescribeContainerInstances returns it with every include."""
        with self._lock:
            return copy.deepcopy(self._instances[arn].body)

    # -- events ---------------------------------------------------------------------------

    def event_for_task(self, arn: str, *, time: Optional[float] = None, event_id: Optional[str] = None) -> Dict[str, Any]:
        """The "ECS Task State Change" event ECS would send for the task's current state."""
        with self._lock:
            body, updated_at = self._tasks[arn].body, self._tasks[arn].updated_at
        detail = {name: value for name, value in body.items() if name not in TASK_API_ONLY}
        detail["containers"] = [
            {name: value for name, value in container.items() if name not in CONTAINER_API_ONLY}
            for container in detail["containers"]
        ]
        detail["updatedAt"] = updated_at
        return self._event("ECS Task State Change", arn, detail, updated_at if time is None else time, event_id)

    def event_for_container_instance(self, arn: str, *, time: Optional[float] = None, event_id: Optional[str] = None) -> Dict[str, Any]:
        """The "ECS Container Instance State Change" event for the instance's current state."""
        with self._lock:
            entity = self._instances[arn]
            body, updated_at, cluster_arn = entity.body, entity.updated_at, self._clusters[entity.cluster].arn
        detail = {name: value for name, value in body.items() if name not in CONTAINER_INSTANCE_API_ONLY}
        detail["clusterArn"] = cluster_arn
        detail["updatedAt"] = updated_at
        return self._event("ECS Container Instance State Change", arn, detail, updated_at if time is None else time, event_id)

    def _event(self, detail_type: str, arn: str, detail: Dict[str, Any], at: float, event_id: Optional[str]) -> Dict[str, Any]:
        return {
            "version": "0",
            "id": event_id or str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.ecs",
            "account": self.account,
            "time": iso_seconds(at),
            "region": self.region,
            "resources": [arn],
            "detail": _with_iso_timestamps(detail),  # new dicts and lists all the way down
        }

    # -- faults and observation -----------------------------------------------------------

    def throttle(self, times: int, operation: Optional[str] = None) -> None:
        """The next ``times`` requests (for ``operation``, or any) answer 400 ThrottlingException."""
        self.fail(times, operation, code="ThrottlingException", status=400, message="Rate exceeded")

    def fail(self, times: int, operation: Optional[str] = None, code: str = "ServerException", status: int = 500,
             message: str = "Service encountered an error (injected)") -> None:
        """The next ``times`` requests (for ``operation``, or any) answer ``status`` with ``code``."""
        if operation is not None and operation not in self._operations:
            raise ValueError(f"{operation!r} is not served: {sorted(self._operations)}")
        if times > 0:
            with self._lock:
                self._faults.append(_Fault(operation, code, message, status, times))

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.max_ids_per_describe = 0

    # -- the wire protocol ----------------------------------------------------------------

    def handle(self, target: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
        """Answer one request: its HTTP status and JSON body."""
        service, _, operation = target.rpartition(".")
        with self._lock:
            self.calls[operation or target or "(no X-Amz-Target)"] += 1
            fault = self._take_fault(operation)
        try:
            if fault is not None:
                raise ECSError(fault.code, fault.message, fault.status)
            if service != TARGET_PREFIX or operation not in self._operations:
                raise ECSError("UnknownOperationException", f"{target or 'no X-Amz-Target'}: the fake serves {', '.join(self._operations)}")
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                raise ECSError("SerializationException", "The request body is not JSON") from None
            if not isinstance(request, dict):
                raise ECSError("SerializationException", "The request body is not a JSON object")
            return 200, self._operations[operation](request)
        except ECSError as error:
            return error.status, {"__type": error.code, "message": error.message}

    def _take_fault(self, operation: str) -> Optional[_Fault]:
        for fault in self._faults:
            if fault.operation in (None, operation):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _list_clusters(self, request: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            return self._page("ListClusters", request, {}, [self._cluster_listing], _everything, "clusterArns")

    def _list_tasks(self, request: Dict[str, Any]) -> Dict[str, Any]:
        desired = _string(request, "desiredStatus", "RUNNING")
        _enum("desiredStatus", desired, ("RUNNING", "PENDING", "STOPPED"))
        if "daemonName" in request:
            raise ECSError("InvalidParameterException", "daemonName: the fake does not model daemons")
        with self._lock:
            cluster = self._cluster_of(request)
            wanted = {name: _string(request, name) for name in ("launchType", "startedBy", "family", "serviceName", "containerInstance")}
            wanted = {name: value for name, value in wanted.items() if value is not None}
            if "launchType" in wanted:
                _enum("launchType", wanted["launchType"], LAUNCH_TYPES)
            if "containerInstance" in wanted:
                wanted["containerInstance"] = self._expand(wanted["containerInstance"], "container-instance", cluster)
            if "serviceName" in wanted:
                wanted["serviceName"] = "service:" + wanted["serviceName"].rsplit("/", 1)[-1]
            keep = functools.partial(self._task_matches, wanted) if wanted else _everything
            listing = cluster.tasks.get(desired, _Listing())
            fingerprint = {"cluster": cluster.arn, "desiredStatus": desired, **wanted}
            return self._page("ListTasks", request, fingerprint, [listing], keep, "taskArns")

    def _task_matches(self, wanted: Dict[str, str], arn: str) -> bool:
        body = self._tasks[arn].body
        actual = {
            "launchType": body.get("launchType"),
            "startedBy": body.get("startedBy"),
            "family": body["taskDefinitionArn"].rsplit("/", 1)[-1].split(":")[0],
            "serviceName": body.get("group"),
            "containerInstance": body.get("containerInstanceArn"),
        }
        return all(actual[name] == value for name, value in wanted.items())

    def _list_container_instances(self, request: Dict[str, Any]) -> Dict[str, Any]:
        status = _string(request, "status")
        if status is not None:
            _enum("status", status, ("ACTIVE", "DRAINING", "REGISTERING", "DEREGISTERING", "REGISTRATION_FAILED"))
        if "filter" in request:
            raise ECSError("InvalidParameterException", "filter: the fake does not evaluate the cluster query language")
        with self._lock:
            cluster = self._cluster_of(request)
            listings = [cluster.instances[status]] if status is not None else list(cluster.instances.values())
            fingerprint = {"cluster": cluster.arn, "status": status}
            return self._page("ListContainerInstances", request, fingerprint, listings, _everything, "containerInstanceArns")

    def _page(self, operation: str, request: Dict[str, Any], fingerprint: Dict[str, Any],
              listings: List[_Listing], keep: Callable[[str], bool], key: str) -> Dict[str, Any]:
        """One page of the listings merged in creation order, resuming after the token's cursor."""
        limit = _integer(request, "maxResults", PAGE_LIMIT)
        if not 1 <= limit <= PAGE_LIMIT:
            raise ECSError("InvalidParameterException", f"maxResults must be between 1 and {PAGE_LIMIT}")
        listing_id = hashlib.sha256(json.dumps([operation, fingerprint], sort_keys=True).encode()).hexdigest()[:16]
        cursor = _cursor(_string(request, "nextToken"), listing_id)
        merged = (entry for entry in heapq.merge(*(listing.after(cursor) for listing in listings)) if keep(entry[1]))
        page = list(itertools.islice(merged, limit + 1))
        response: Dict[str, Any] = {key: [arn for _, arn in page[:limit]]}
        if len(page) > limit:
            response["nextToken"] = _token(listing_id, page[limit - 1][0])
        return response

    def _describe_tasks(self, request: Dict[str, Any]) -> Dict[str, Any]:
        include = self._include(request, ("TAGS",))
        with self._lock:
            cluster = self._cluster_of(request)
            found, failures = self._describe(request, "tasks", "task", cluster, self._tasks)
        if "TAGS" not in include:
            found = [{name: value for name, value in body.items() if name != "tags"} for body in found]
        return {"tasks": found, "failures": failures}

    def _describe_container_instances(self, request: Dict[str, Any]) -> Dict[str, Any]:
        include = self._include(request, ("TAGS", "CONTAINER_INSTANCE_HEALTH"))
        hidden = {member for member, asked_by in (("tags", "TAGS"), ("healthStatus", "CONTAINER_INSTANCE_HEALTH")) if asked_by not in include}
        with self._lock:
            cluster = self._cluster_of(request)
            found, failures = self._describe(request, "containerInstances", "container-instance", cluster, self._instances)
        return {
            "containerInstances": [{name: value for name, value in body.items() if name not in hidden} for body in found],
            "failures": failures,
        }

    def _describe(self, request: Dict[str, Any], member: str, kind: str, cluster: _Cluster,
                  entities: Dict[str, _Entity]) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
        """The bodies ECS knows in ``cluster`` and a MISSING failure for every other ARN or ID."""
        refs = request.get(member)
        if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
            raise ECSError("SerializationException", f"{member} must be a list of strings")
        self.max_ids_per_describe = max(self.max_ids_per_describe, len(refs))
        if not refs:
            raise ECSError("InvalidParameterException", f"{member} cannot be empty.")
        if len(refs) > DESCRIBE_LIMIT:
            raise ECSError("InvalidParameterException", f"{member} cannot have more than {DESCRIBE_LIMIT} entries.")
        for ref in refs:
            self._check_identifier(ref, kind)
        found, failures = [], []
        for arn in dict.fromkeys(self._expand(ref, kind, cluster) for ref in refs):
            entity = entities.get(arn)
            if entity is not None and entity.cluster == cluster.name:
                found.append(entity.body)
            else:
                failures.append({"arn": arn, "reason": "MISSING"})
        return found, failures

    def _check_identifier(self, ref: str, kind: str) -> None:
        """ECS refuses the whole Describe* request, rather than answer one failure, for an ARN
        it cannot take: another account's (its message, as ECS words it), another region's or
        partition's, or not an ECS ARN of this resource type."""
        if not ref.startswith("arn:"):
            return  # an ID: of this cluster
        match = _ANY_ARN.fullmatch(ref)
        if match is None or match["service"] != "ecs" or match["resource"] != kind:
            raise ECSError("InvalidParameterException", f"Invalid identifier: {ref} is not a {kind} ARN")
        if match["account"] != self.account:
            raise ECSError("InvalidParameterException", f"Identifier is for {match['account']}. Your accountId is {self.account}")
        if (match["partition"], match["region"]) != ("aws", self.region):
            raise ECSError("InvalidParameterException", f"Invalid identifier: {ref} is not of region {self.region}")

    def _include(self, request: Dict[str, Any], allowed: Tuple[str, ...]) -> Set[str]:
        include = request.get("include", [])
        if not isinstance(include, list) or not all(isinstance(value, str) for value in include):
            raise ECSError("SerializationException", "include must be a list of strings")
        for value in include:
            _enum("include", value, allowed)
        return set(include)

    # -- internals (called with the lock held) ---------------------------------------------

    def _cluster_named(self, name: str) -> _Cluster:
        if name.startswith(self._arn_prefix + "cluster/"):
            name = name.rsplit("/", 1)[-1]
        if name not in self._clusters:
            raise KeyError(f"no cluster {name!r}: add_cluster first")
        return self._clusters[name]

    def _cluster_of(self, request: Dict[str, Any]) -> _Cluster:
        """The request's cluster, by name or ARN ("default" when absent), or ClusterNotFoundException."""
        ref = _string(request, "cluster", "default")
        prefix = self._arn_prefix + "cluster/"
        name = ref[len(prefix):] if ref.startswith(prefix) else (None if ref.startswith("arn:") else ref)
        cluster = self._clusters.get(name or "")
        if cluster is None:
            raise ECSError("ClusterNotFoundException", "Cluster not found.")
        return cluster

    def _expand(self, ref: str, kind: str, cluster: _Cluster) -> str:
        """An ARN as given, or an ID as the full ARN it names in ``cluster``."""
        return ref if ref.startswith("arn:") else f"{self._arn_prefix}{kind}/{cluster.name}/{ref}"

    def _place(self, cluster: _Cluster, container_instance: Optional[str]) -> _Entity:
        if container_instance is not None:
            instance = self._instances[self._expand(container_instance, "container-instance", cluster)]
            if instance.cluster != cluster.name:
                raise ValueError(f"{instance.arn} is not in cluster {cluster.name!r}")
            return instance
        active = cluster.instances.get("ACTIVE")
        if not active:
            raise ValueError(f"cluster {cluster.name!r} has no ACTIVE container instance for an EC2 task")
        cluster.placements += 1
        return self._instances[active.nth((cluster.placements - 1) % len(active))]

    def _new_task(self, cluster: _Cluster, arn: str, task_id: str, launch_type: str, started_by: Optional[str],
                  group: Optional[str], containers: int, instance: Optional[_Entity], execute_command: bool,
                  tags: Optional[Dict[str, str]]) -> Dict[str, Any]:
        """A task as ECS creates it, before its first state (see _advance_task)."""
        fargate = launch_type == "FARGATE"
        family = "web" if fargate else "batch-worker"
        number = len(self._tasks)
        names = [family] + [("log-router" if index == 1 else f"sidecar-{index}") for index in range(1, containers)]
        cpu, memory = (256, 512) if fargate else (1024, 1024)
        attachment_id = str(uuid.uuid4())
        private_ip = f"10.0.{number // 250 % 256}.{number % 250 + 4}"
        body: Dict[str, Any] = {
            "attachments": [],
            "attributes": [{"name": "ecs.cpu-architecture", "value": "x86_64"}],
            "availabilityZone": f"{self.region}{'abc'[number % 3]}",
            "clusterArn": cluster.arn,
            "containers": [],
            "cpu": str(cpu),
            "desiredStatus": "RUNNING",
            "enableExecuteCommand": execute_command,
            "group": group or f"family:{family}",
            "healthStatus": "UNKNOWN",
            "inferenceAccelerators": [],
            "lastStatus": "PROVISIONING" if fargate else "PENDING",
            "launchType": launch_type,
            "memory": str(memory),
            "overrides": {"containerOverrides": [{"name": name} for name in names]},
            "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
            "taskArn": arn,
            "taskDefinitionArn": f"{self._arn_prefix}task-definition/{family}:{17 if fargate else 9}",
            "version": 0,
        }
        if started_by is not None:
            body["startedBy"] = started_by
        if fargate:
            body["attachments"] = [{
                "id": attachment_id,
                "type": "eni",
                "status": "PRECREATED",
                "details": [
                    {"name": "subnetId", "value": "subnet-0c34d56e78f90a123"},
                    {"name": "networkInterfaceId", "value": f"eni-{task_id[:17]}"},
                    {"name": "macAddress", "value": ":".join(["0a"] + [task_id[i:i + 2] for i in range(0, 10, 2)])},
                    {"name": "privateDnsName", "value": f"ip-{private_ip.replace('.', '-')}.ec2.internal"},
                    {"name": "privateIPv4Address", "value": private_ip},
                ],
            }]
            body.update({
                "capacityProviderName": "FARGATE",
                "ephemeralStorage": {"sizeInGiB": 20},
                "fargateEphemeralStorage": {"sizeInGiB": 20},
                "platformFamily": "Linux",
                "platformVersion": "1.4.0",
            })
        else:
            assert instance is not None
            body["containerInstanceArn"] = instance.arn
            zone = [a["value"] for a in instance.body["attributes"] if a["name"] == "ecs.availability-zone"]
            body["availabilityZone"] = zone[0] if zone else body["availabilityZone"]
        for index, name in enumerate(names):
            image = f"{self.account}.dkr.ecr.{self.region}.amazonaws.com/{name}:2026.11.5" if index == 0 else _SIDECAR_IMAGE
            container: Dict[str, Any] = {
                "containerArn": f"{self._arn_prefix}container/{cluster.name}/{task_id}/{uuid.uuid4()}",
                "taskArn": arn,
                "name": name,
                "image": image,
                "lastStatus": "PENDING",
                "networkInterfaces": [{"attachmentId": attachment_id, "privateIpv4Address": private_ip}] if fargate else [],
                "healthStatus": "UNKNOWN",
                "cpu": str(cpu - 64 * (containers - 1) if index == 0 else 64),
                "memory": str(memory - 64 * (containers - 1) if index == 0 else 64),
            }
            if execute_command:
                container["managedAgents"] = [{"name": "ExecuteCommandAgent", "lastStatus": "PENDING"}]
            body["containers"].append(container)
        return body

    def _store_task(self, cluster: _Cluster, arn: str, body: Dict[str, Any], updated_at: float) -> None:
        entity = _Entity(arn, cluster.name, next(self._sequence), body, updated_at, None)
        self._tasks[arn] = entity
        self._relist(entity, cluster.tasks, body["desiredStatus"])

    def _update_instance(self, arn: str, members: Dict[str, Any]) -> Dict[str, Any]:
        entity = self._instances[arn]
        at = self._change_time(entity)
        body = {**copy.deepcopy(entity.body), **copy.deepcopy(members)}
        body["version"] = entity.body["version"] + 1
        self._replace(entity, body, at, self._clusters[entity.cluster].instances, _instance_listing(body["status"]))
        return copy.deepcopy(body)

    def _change_time(self, entity: _Entity) -> float:
        """Now, but never at or before the entity's last change: timestamps only move forward."""
        return epoch_ms(max(self.clock(), entity.updated_at + 0.001))

    def _replace(self, entity: _Entity, body: Dict[str, Any], at: float, listings: Dict[str, _Listing], listed_under: Optional[str]) -> None:
        entity.body, entity.updated_at = body, at
        if listed_under != entity.listed_under:
            self._unlist(entity, listings)
            self._relist(entity, listings, listed_under)

    @staticmethod
    def _relist(entity: _Entity, listings: Dict[str, _Listing], listed_under: Optional[str]) -> None:
        entity.listed_under = listed_under
        if listed_under is not None:
            listings[listed_under].add(entity.seq, entity.arn)

    @staticmethod
    def _unlist(entity: _Entity, listings: Dict[str, _Listing]) -> None:
        if entity.listed_under is not None:
            listings[entity.listed_under].remove(entity.seq)
            entity.listed_under = None


def _instance_listing(status: str) -> Optional[str]:
    """The listing a container instance of ``status`` is in: none once deregistered (INACTIVE)."""
    return None if status == "INACTIVE" else status


def _desired_status(last_status: str, desired_status: Optional[str], current: str) -> str:
    """ECS sets desiredStatus STOPPED when a task starts to stop; it is RUNNING or STOPPED."""
    desired = desired_status or ("STOPPED" if last_status in _STOPPING else current)
    if desired not in ("RUNNING", "STOPPED"):
        raise ValueError(f"desired status {desired!r}: ECS sets a task's to RUNNING or STOPPED")
    if desired == "RUNNING" and last_status in _STOPPING:
        raise ValueError(f"a {last_status} task's desired status is STOPPED")
    return desired


def _backdate(now: float, durations: List[float]) -> List[float]:
    """When each step of a replayed history happened, given how long each lasted, the last one now."""
    times = [now]
    for duration in reversed(durations[:-1]):
        times.append(times[-1] - duration)
    return [epoch_ms(moment) for moment in reversed(times)]


def _advance_task(body: Dict[str, Any], last_status: str, desired: str, at: float, previous: float) -> None:
    """Set in ``body`` what ECS sets when a task reaches ``last_status``/``desired`` at ``at``
    (``previous``: its last change). Members already set keep their first values."""
    if "createdAt" not in body:
        body["createdAt"] = at
    reached = TASK_LIFECYCLE.index(last_status)
    containers = body["containers"]
    fargate = body["launchType"] == "FARGATE"
    if reached >= TASK_LIFECYCLE.index("PENDING") and "connectivityAt" not in body:
        body["connectivity"], body["connectivityAt"] = "CONNECTED", at
        _set_attachments(body, "ATTACHED")
    if reached >= TASK_LIFECYCLE.index("ACTIVATING") and "pullStartedAt" not in body and desired == "RUNNING":
        body["pullStartedAt"] = epoch_ms(previous + (at - previous) * 0.05)
        body["pullStoppedAt"] = epoch_ms(previous + (at - previous) * 0.7)
        for index, container in enumerate(containers):
            container["imageDigest"] = "sha256:" + hashlib.sha256(container["image"].encode()).hexdigest()
            container["runtimeId"] = _runtime_id(body["taskArn"], index, fargate)
            container["lastStatus"] = "RUNNING"
    if reached >= TASK_LIFECYCLE.index("RUNNING") and "startedAt" not in body and desired == "RUNNING":
        body["startedAt"] = at
        for index, container in enumerate(containers):
            if not fargate:
                container["networkBindings"] = [{"bindIP": "0.0.0.0", "containerPort": 80 + index, "hostPort": 32768 + index, "protocol": "tcp"}]
            for agent in container.get("managedAgents", []):
                agent.update(lastStatus="RUNNING", lastStartedAt=at)
    if desired == "STOPPED" and "stoppingAt" not in body:
        body["stoppingAt"] = at
        stop_code, stopped_reason = _stop_cause(body)
        body.setdefault("stopCode", stop_code)
        body.setdefault("stoppedReason", stopped_reason)
        if body["stopCode"] == "EssentialContainerExited":
            containers[0].update(lastStatus="STOPPED", exitCode=1)
    if last_status == "STOPPING":
        _set_attachments(body, "DETACHING")
    if last_status == "STOPPED" and "stoppedAt" not in body:
        body["executionStoppedAt"] = epoch_ms(body["stoppingAt"] + (at - body["stoppingAt"]) * 0.6)
        body["stoppedAt"] = at
        _set_attachments(body, "DELETED")
        for container in containers:
            if container["lastStatus"] != "STOPPED" and "runtimeId" in container:
                container["exitCode"] = 0
            container["lastStatus"] = "STOPPED"
            for agent in container.get("managedAgents", []):
                agent["lastStatus"] = "STOPPED"
        if "startedAt" not in body:
            containers[0]["reason"] = "CannotPullContainerError: pull image manifest has been retried 1 time(s): not found"
    body["lastStatus"], body["desiredStatus"] = last_status, desired


def _stop_cause(body: Dict[str, Any]) -> Tuple[str, str]:
    """Why ECS stops a task: the stopCode given, else by how it was started and how far it got."""
    if body.get("stopCode") == "UserInitiated":
        return "UserInitiated", "Task stopped by user"
    if "startedAt" not in body:
        return "TaskFailedToStart", "Task failed to start"
    started_by = body.get("startedBy", "")
    if started_by.startswith("ecs-svc/"):
        return "ServiceSchedulerInitiated", f"Scaling activity initiated by (deployment {started_by})"
    return "EssentialContainerExited", "Essential container in task exited"


def _set_attachments(body: Dict[str, Any], status: str) -> None:
    for attachment in body["attachments"]:
        attachment["status"] = status


def _runtime_id(task_arn: str, index: int, fargate: bool) -> str:
    digest = hashlib.sha256(f"{task_arn}/{index}".encode()).hexdigest()
    task_id = task_arn.rsplit("/", 1)[-1]
    return f"{task_id}-{int(digest[:8], 16) % 10**10:010d}" if fargate else digest  # Fargate's form; Docker's ID on EC2


def _new_container_instance(arn: str, cluster: _Cluster, status: str, ec2_instance_id: Optional[str],
                            registered_at: float, tags: Optional[Dict[str, str]], number: int) -> Dict[str, Any]:
    zone = f"{arn.split(':')[3]}{'abc'[number % 3]}"
    body: Dict[str, Any] = {
        "containerInstanceArn": arn,
        "ec2InstanceId": ec2_instance_id or f"i-0{uuid.uuid4().hex[:16]}",
        "capacityProviderName": f"{cluster.name}-asg",
        "version": 0,
        "versionInfo": dict(_INSTANCE_AGENT),
        "remainingResources": _resources(),
        "registeredResources": _resources(),
        "status": status,
        "agentConnected": status not in ("INACTIVE", "REGISTRATION_FAILED"),
        "runningTasksCount": 0,
        "pendingTasksCount": 0,
        "attributes": [
            {"name": "ecs.capability.docker-remote-api.1.44"},
            {"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"},
            {"name": "ecs.capability.task-eni"},
            {"name": "ecs.os-type", "value": "linux"},
            {"name": "ecs.os-family", "value": "LINUX"},
            {"name": "ecs.instance-type", "value": "m7i.large"},
            {"name": "ecs.availability-zone", "value": zone},
            {"name": "ecs.cpu-architecture", "value": "x86_64"},
        ],
        "registeredAt": registered_at,
        "attachments": [],
        "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
        "healthStatus": {
            "overallStatus": "OK" if status in ("ACTIVE", "DRAINING") else "INSUFFICIENT_DATA",
            "details": [{"type": "CONTAINER_RUNTIME", "status": "OK", "lastUpdated": registered_at, "lastStatusChange": registered_at}],
        },
    }
    if status == "REGISTRATION_FAILED":
        body["statusReason"] = "Failed to attach the trunk network interface to the instance"
    return body


def _resources() -> List[Dict[str, Any]]:
    """An m7i.large's resources, one of each value type ECS uses."""
    return [
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 7680},
        {"name": "MEMORY_BYTES", "type": "LONG", "longValue": 8053063680},
        {"name": "CPU_CREDITS", "type": "DOUBLE", "doubleValue": 1.1},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
    ]


def _check_members(members: Dict[str, Any], shape: str) -> None:
    unknown = set(members) - model_members(shape)
    if unknown:
        raise ValueError(f"not {shape} members in botocore's model: {sorted(unknown)}")
    managed = set(members) & _MANAGED_MEMBERS
    if managed:
        raise ValueError(f"{sorted(managed)} are set by the control plane, not by hand")


def _everything(arn: str) -> bool:
    return True


def _string(request: Dict[str, Any], name: str, default: Optional[str] = None) -> Optional[str]:
    value = request.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ECSError("SerializationException", f"{name} must be a string")
    return value


def _integer(request: Dict[str, Any], name: str, default: int) -> int:
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ECSError("SerializationException", f"{name} must be an integer")
    return value


def _enum(name: str, value: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise ECSError("InvalidParameterException", f"{name} {value!r} is not one of {', '.join(allowed)}")


def _token(listing_id: str, cursor: int) -> str:
    """An opaque nextToken: which listing it pages and the last entry returned."""
    return base64.urlsafe_b64encode(json.dumps([listing_id, cursor]).encode()).decode()


def _cursor(token: Optional[str], listing_id: str) -> int:
    """The cursor a nextToken holds (0 without one); InvalidParameterException if it is not
    one this listing (same operation, cluster and filters) handed out."""
    if token is None:
        return 0
    try:
        token_listing, cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise ECSError("InvalidParameterException", "Invalid nextToken") from None
    if token_listing != listing_id or not isinstance(cursor, int):
        raise ECSError("InvalidParameterException", "Invalid nextToken: it belongs to another request")
    return cursor


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    disable_nagle_algorithm = True  # headers and body are two writes: without this each response waits ~40 ms for an ACK
    server: "_Server"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = self.server.fake.handle(self.headers.get("X-Amz-Target", ""), body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would bury the tests' own output


class _Server(ThreadingHTTPServer):
    """Serves 127.0.0.1 only and remembers open connections, so stop() can close kept-alive ones."""

    daemon_threads = True

    def __init__(self, fake: FakeECS) -> None:
        self.fake = fake
        self._connections: Set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client closed it already
