"""The fake ECS (tests/fake_ecs.py) against botocore's ECS model, the API's documented
behaviour and the events in events/, through a real boto3 ECS client.

Every response body a client receives is checked member by member against the
operation's output shape in botocore's service model (names, JSON types, enum
values, required members), and the members the fake never fills are listed
exactly, so a new one cannot slip in unchecked.
"""
import copy
import itertools
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Set, Tuple

import boto3
import botocore.retries.bucket
import botocore.retries.standard
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from tests.fake_ecs import (
    CONTAINER_API_ONLY,
    CONTAINER_INSTANCE_API_ONLY,
    CONTAINER_INSTANCE_STATUSES,
    TARGET_PREFIX,
    TASK_API_ONLY,
    TASK_LIFECYCLE,
    FakeECS,
)

EVENTS = Path(__file__).resolve().parent.parent / "events"
MODEL = botocore.session.get_session().get_service_model("ecs")
SERVED = ("ListClusters", "ListTasks", "DescribeTasks", "ListContainerInstances", "DescribeContainerInstances")
SERVICE_STARTER = "ecs-svc/1234567890123456789"
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,2}[1-9])?Z")
ISO_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# JSON types per botocore shape type; bool is never a number, a number never a bool.
JSON_TYPES = {
    "string": str, "integer": int, "long": int, "boolean": bool,
    "double": (int, float), "float": (int, float), "timestamp": (int, float),
}
# Members of the shapes the fake returns that it never fills. test_every_optional_member_*
# fails when this list is wrong either way.
NOT_MODELLED = {
    "Task": {"trustedExecutionSummary"},
    "Container": {"memoryReservation", "gpuIds", "neuronDeviceIds", "gpuSharingStrategy"},
    "ContainerInstance": {"gpuDevices"},
    "InstanceHealthCheckResult": {"statusReason"},
    "NetworkBinding": {"containerPortRange", "hostPortRange"},
    "NetworkInterface": {"ipv6Address"},
    "ManagedAgent": {"reason"},
    "Attribute": {"targetType", "targetId"},
    "Failure": {"detail"},
    "TaskOverride": {"cpu", "inferenceAcceleratorOverrides", "executionRoleArn", "memory", "taskRoleArn", "ephemeralStorage"},
    "ContainerOverride": {"command", "environment", "environmentFiles", "cpu", "memory", "memoryReservation", "resourceRequirements"},
    "TaskEphemeralStorage": {"kmsKeyId"},
}
# Members ECS documents for task events beyond those events/task-running.json shows.
OPTIONAL_TASK_EVENT_MEMBERS = {
    "containerInstanceArn", "executionStoppedAt", "stopCode", "stoppedAt", "stoppedReason", "stoppingAt",
}
OPTIONAL_CONTAINER_INSTANCE_EVENT_MEMBERS = {"attachments", "agentUpdateStatus", "statusReason"}


def shape_errors(shape: Any, value: Any, path: str = "$") -> List[str]:
    """Where ``value`` (JSON as sent on the wire) departs from botocore's ``shape``: members
    the shape lacks, required ones missing, wrong JSON types, strings outside an enum."""
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object ({shape.name})"]
        errors = [f"{path}.{name}: not a member of {shape.name}" for name in value if name not in shape.members]
        errors += [f"{path}.{name}: required by {shape.name}, missing" for name in shape.required_members if name not in value]
        for name, member in value.items():
            if name in shape.members:
                errors += shape_errors(shape.members[name], member, f"{path}.{name}")
        return errors
    if shape.type_name == "list":
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list ({shape.name})"]
        return [error for index, member in enumerate(value) for error in shape_errors(shape.member, member, f"{path}[{index}]")]
    if shape.type_name == "map":
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object ({shape.name})"]
        return [error for key, member in value.items() for error in shape_errors(shape.value, member, f"{path}.{key}")]
    if isinstance(value, bool) != (shape.type_name == "boolean") or not isinstance(value, JSON_TYPES[shape.type_name]):
        return [f"{path}: {value!r} is not of type {shape.type_name} ({shape.name})"]
    if shape.type_name == "string" and shape.enum and value not in shape.enum:
        return [f"{path}: {value!r} is not one of {shape.name}'s {shape.enum}"]
    return []


def members_seen(shape: Any, value: Any, seen: Dict[str, Set[str]]) -> None:
    """Record, per structure shape, which of its members ``value`` fills."""
    if shape.type_name == "structure" and isinstance(value, dict):
        seen.setdefault(shape.name, set()).update(name for name in value if name in shape.members)
        for name, member in value.items():
            if name in shape.members:
                members_seen(shape.members[name], member, seen)
    elif shape.type_name == "list" and isinstance(value, list):
        for member in value:
            members_seen(shape.member, member, seen)


def timestamp_members(shape: Any, found: Set[str], visited: Set[str]) -> Set[str]:
    """The names of every timestamp member reachable from ``shape`` in botocore's model."""
    if shape.name in visited:
        return found
    visited.add(shape.name)
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if member.type_name == "timestamp":
                found.add(name)
            timestamp_members(member, found, visited)
    elif shape.type_name == "list":
        timestamp_members(shape.member, found, visited)
    return found


class Wire:
    """The JSON bodies a client sends and receives, before botocore parses them."""

    def __init__(self, client: Any) -> None:
        self.sent: List[Tuple[str, Dict[str, Any]]] = []
        self.received: List[Tuple[str, int, Dict[str, Any]]] = []
        client.meta.events.register("before-send.ecs", self._on_send)
        client.meta.events.register("before-parse.ecs", self._on_parse)

    def _on_send(self, request: Any, **kwargs: Any) -> None:
        target = request.headers["X-Amz-Target"]
        operation = (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]
        self.sent.append((operation, json.loads(request.body)))

    def _on_parse(self, operation_model: Any, response_dict: Dict[str, Any], **kwargs: Any) -> None:
        self.received.append((operation_model.name, response_dict["status_code"], json.loads(response_dict["body"])))


def ecs_client(fake: FakeECS, **config: Any) -> Any:
    return boto3.client(
        "ecs", endpoint_url=fake.endpoint, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x", config=Config(**config),
    )


def post(fake: FakeECS, target: str, body: bytes) -> Tuple[int, Dict[str, str], Dict[str, Any]]:
    """A raw request, for what botocore's own parameter checks would not send."""
    request = urllib.request.Request(fake.endpoint, data=body, method="POST", headers={"X-Amz-Target": target})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def all_task_arns(client: Any, **request: Any) -> List[str]:
    return [arn for page in client.get_paginator("list_tasks").paginate(**request) for arn in page["taskArns"]]


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def sample_events(name: str) -> List[Dict[str, Any]]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def fake():
    with FakeECS() as server:
        yield server


@pytest.fixture
def ecs(fake):
    return ecs_client(fake)


@pytest.fixture
def no_backoff(monkeypatch):
    """botocore's retries without their sleeps: the tests check what is retried, not how long it waits."""
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def every_kind(fake):
    """Tasks of both launch types in every lifecycle state, a failed start, a stop not yet acted
    on, and container instances of every status, all tagged."""
    fake.add_cluster("web")
    fake.add_cluster("batch")
    instances = {
        status: fake.add_container_instance("batch", status=status, tags={"team": "batch"})
        for status in CONTAINER_INSTANCE_STATUSES
    }
    fake.update_container_instance(instances["ACTIVE"], agentUpdateStatus="UPDATED", runningTasksCount=1)
    tasks = {
        (launch_type, status): fake.add_task(
            cluster, launch_type=launch_type, last_status=status, started_by=SERVICE_STARTER,
            containers=2, execute_command=True, tags={"team": cluster},
        )
        for launch_type, cluster in (("FARGATE", "web"), ("EC2", "batch"))
        for status in TASK_LIFECYCLE
    }
    failed = tasks["FARGATE", "failed"] = fake.add_task("web", last_status="PENDING")
    fake.transition_task(failed, "STOPPED")
    tasks["EC2", "stop requested"] = fake.add_task("batch", launch_type="EC2", desired_status="STOPPED")
    return SimpleNamespace(tasks=tasks, instances=instances)


@pytest.fixture
def every_response(fake, every_kind):
    """Every served operation's responses over ``every_kind``, paged, with and without include."""
    client = ecs_client(fake)
    wire = Wire(client)
    list(client.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 1}))
    missing_id = "0" * 32
    for cluster in ("web", "batch"):
        arns = []
        for desired in ("RUNNING", "STOPPED", "PENDING"):
            arns += all_task_arns(client, cluster=cluster, desiredStatus=desired, PaginationConfig={"PageSize": 3})
        for include in ([], ["TAGS"]):
            client.describe_tasks(cluster=cluster, tasks=arns + [missing_id], include=include)
    for status in (None, "ACTIVE", "DRAINING", "REGISTERING", "DEREGISTERING", "REGISTRATION_FAILED"):
        request = {"cluster": "batch", **({"status": status} if status else {})}
        list(client.get_paginator("list_container_instances").paginate(**request, PaginationConfig={"PageSize": 2}))
    for include in ([], ["TAGS", "CONTAINER_INSTANCE_HEALTH"]):
        client.describe_container_instances(
            cluster="batch", containerInstances=list(every_kind.instances.values()) + [missing_id], include=include
        )
    return wire.received


# -- faithfulness to botocore's model -------------------------------------------------------


def test_every_response_matches_botocore_model_member_for_member(every_response):
    assert {operation for operation, _, _ in every_response} == set(SERVED)
    assert [status for _, status, _ in every_response] == [200] * len(every_response)
    errors = [
        f"{operation}: {error}"
        for operation, _, body in every_response
        for error in shape_errors(MODEL.operation_model(operation).output_shape, body)
    ]
    assert errors == []


def test_every_optional_member_is_filled_at_least_once_but_those_not_modelled(every_response):
    seen: Dict[str, Set[str]] = {}
    for operation, _, body in every_response:
        members_seen(MODEL.operation_model(operation).output_shape, body, seen)
    unseen = {shape: set(MODEL.shape_for(shape).members) - names for shape, names in seen.items()}
    assert {shape: names for shape, names in unseen.items() if names} == NOT_MODELLED


@pytest.mark.parametrize(
    "corrupt, complaint",
    [
        (lambda task: task.update(createdAt="2026-11-05T07:58:44.215Z"), "$.tasks[0].createdAt: '2026-11-05T07:58:44.215Z' is not of type timestamp"),
        (lambda task: task.update(taskARN=task.pop("taskArn")), "$.tasks[0].taskARN: not a member of Task"),
        (lambda task: task.update(version=7.0), "$.tasks[0].version: 7.0 is not of type long"),
        (lambda task: task.update(enableExecuteCommand="true"), "$.tasks[0].enableExecuteCommand: 'true' is not of type boolean"),
        (lambda task: task.update(launchType="SPOT"), "$.tasks[0].launchType: 'SPOT' is not one of LaunchType's"),
        (lambda task: task["containers"][0].update(exitCode=True), "$.tasks[0].containers[0].exitCode: True is not of type integer"),
        (lambda task: task["containers"][0]["managedAgents"][0].update(lastStartedAt=None), "lastStartedAt: None is not of type timestamp"),
        (lambda task: task["attributes"][0].pop("name"), "$.tasks[0].attributes[0].name: required by Attribute, missing"),
        (lambda task: task.update(overrides=[]), "$.tasks[0].overrides: [] is not an object"),
    ],
)
def test_the_model_check_rejects_a_corrupted_response(fake, ecs, corrupt, complaint):
    fake.add_cluster("batch")
    fake.add_container_instance("batch")
    arn = fake.add_task("batch", launch_type="EC2", last_status="STOPPED", execute_command=True)
    wire = Wire(ecs)
    ecs.describe_tasks(cluster="batch", tasks=[arn])
    (_, _, body), = wire.received
    shape = MODEL.operation_model("DescribeTasks").output_shape
    assert shape_errors(shape, body) == []
    corrupted = copy.deepcopy(body)
    corrupt(corrupted["tasks"][0])
    errors = shape_errors(shape, corrupted)
    assert len(errors) == 1 and complaint in errors[0], errors


def test_requests_botocore_sends_with_every_member_are_accepted(fake, ecs):
    fake.add_cluster("web")
    fake.add_cluster("batch")
    instance, _ = fake.add_container_instance("batch"), fake.add_container_instance("batch")
    started = [
        fake.add_task("batch", launch_type="EC2", container_instance=instance, started_by="nightly", group="service:api")
        for _ in range(2)
    ]
    wire = Wire(ecs)
    task_filters = {
        "cluster": "batch", "containerInstance": instance, "family": "batch-worker", "startedBy": "nightly",
        "serviceName": "api", "desiredStatus": "RUNNING", "launchType": "EC2",
    }
    first = ecs.list_tasks(**task_filters, maxResults=1)
    second = ecs.list_tasks(**task_filters, maxResults=1, nextToken=first["nextToken"])
    assert first["taskArns"] + second["taskArns"] == started
    ecs.list_clusters(maxResults=1, nextToken=ecs.list_clusters(maxResults=1)["nextToken"])
    ecs.describe_tasks(cluster="batch", tasks=started, include=["TAGS"])
    token = ecs.list_container_instances(cluster="batch", status="ACTIVE", maxResults=1)["nextToken"]
    ecs.list_container_instances(cluster="batch", status="ACTIVE", maxResults=1, nextToken=token)
    ecs.describe_container_instances(cluster="batch", containerInstances=[instance], include=["TAGS", "CONTAINER_INSTANCE_HEALTH"])
    errors = [
        f"{operation}: {error}"
        for operation, body in wire.sent
        for error in shape_errors(MODEL.operation_model(operation).input_shape, body)
    ]
    assert errors == []
    assert [status for _, status, _ in wire.received] == [200] * len(wire.received)
    sent_members = {(operation, name) for operation, body in wire.sent for name in body}
    every_member = {(operation, name) for operation in SERVED for name in MODEL.operation_model(operation).input_shape.members}
    assert every_member - sent_members == {("ListTasks", "daemonName"), ("ListContainerInstances", "filter")}


def test_filters_the_fake_cannot_evaluate_are_refused_not_ignored(fake, ecs):
    fake.add_cluster("batch")
    assert error_code(lambda: ecs.list_tasks(cluster="batch", daemonName="agent")) == "InvalidParameterException"
    assert error_code(lambda: ecs.list_container_instances(cluster="batch", filter="attribute:ecs.instance-type == t3.small")) == "InvalidParameterException"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda ecs: ecs.list_tasks(cluster="nowhere"),
        lambda ecs: ecs.list_tasks(),  # "default", which this account lacks
        lambda ecs: ecs.describe_tasks(cluster="arn:aws:ecs:us-east-1:111122223333:cluster/nowhere", tasks=["x"]),
        lambda ecs: ecs.describe_tasks(cluster="arn:aws:ecs:eu-west-1:111122223333:cluster/web", tasks=["x"]),
        lambda ecs: ecs.list_container_instances(cluster="nowhere"),
        lambda ecs: ecs.describe_container_instances(cluster="nowhere", containerInstances=["x"]),
    ],
)
def test_an_unknown_cluster_is_cluster_not_found(fake, ecs, call):
    fake.add_cluster("web")
    with pytest.raises(ecs.exceptions.ClusterNotFoundException, match="Cluster not found"):
        call(ecs)


@pytest.mark.parametrize("operation", ["list_clusters", "list_tasks", "list_container_instances"])
@pytest.mark.parametrize("max_results", [0, 101, -1])
def test_max_results_outside_1_to_100_is_an_invalid_parameter(fake, ecs, operation, max_results):
    fake.add_cluster("default")
    assert error_code(lambda: getattr(ecs, operation)(maxResults=max_results)) == "InvalidParameterException"


def test_a_next_token_must_be_one_this_listing_handed_out(fake, ecs):
    fake.add_cluster("web")
    for _ in range(3):
        fake.add_task("web")
    token = ecs.list_tasks(cluster="web", maxResults=1)["nextToken"]
    assert ecs.list_tasks(cluster="web", nextToken=token)["taskArns"]
    assert error_code(lambda: ecs.list_tasks(cluster="web", nextToken="not a token")) == "InvalidParameterException"
    assert error_code(lambda: ecs.list_tasks(cluster="web", desiredStatus="STOPPED", nextToken=token)) == "InvalidParameterException"
    assert error_code(lambda: ecs.list_clusters(nextToken=token)) == "InvalidParameterException"


def test_values_outside_an_enum_are_invalid_parameters(fake, ecs):
    fake.add_cluster("default")
    arn = fake.add_task("default")
    assert error_code(lambda: ecs.list_tasks(desiredStatus="DONE")) == "InvalidParameterException"
    assert error_code(lambda: ecs.list_tasks(launchType="SPOT")) == "InvalidParameterException"
    assert error_code(lambda: ecs.list_container_instances(status="INACTIVE")) == "InvalidParameterException"
    assert error_code(lambda: ecs.describe_tasks(tasks=[arn], include=["CONTAINER_INSTANCE_HEALTH"])) == "InvalidParameterException"


def test_the_wire_protocol_refuses_what_ecs_refuses(fake):
    fake.add_cluster("default")
    status, headers, body = post(fake, f"{TARGET_PREFIX}.ListTasks", b'{"maxResults": "ten"}')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert headers["Content-Type"] == "application/x-amz-json-1.1" and headers["x-amzn-RequestId"]
    assert post(fake, f"{TARGET_PREFIX}.DescribeTasks", b'{"tasks": "abc"}')[2]["__type"] == "SerializationException"
    assert post(fake, f"{TARGET_PREFIX}.ListTasks", b"{not json")[2]["__type"] == "SerializationException"
    assert post(fake, f"{TARGET_PREFIX}.ListTasks", b"[]")[2]["__type"] == "SerializationException"
    status, _, body = post(fake, "DynamoDB_20120810.ListTables", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    assert body["message"].startswith("DynamoDB_20120810.ListTables: the fake serves ListClusters, ListTasks")
    assert fake.calls == {"ListTasks": 3, "DescribeTasks": 1, "ListTables": 1}


def test_an_operation_the_fake_does_not_serve_is_an_unknown_operation(fake, ecs):
    assert error_code(lambda: ecs.run_task(taskDefinition="web:1")) == "UnknownOperationException"
    assert fake.calls == {"RunTask": 1}


# -- paging ----------------------------------------------------------------------------------


def test_250_tasks_list_in_pages_of_100_100_and_50_each_once(fake, ecs):
    fake.add_cluster("web")
    added = [fake.add_task("web") for _ in range(250)]
    pages, token = [], {}
    while True:
        response = ecs.list_tasks(cluster="web", **token)
        pages.append(response["taskArns"])
        if "nextToken" not in response:
            break
        token = {"nextToken": response["nextToken"]}
    assert [len(page) for page in pages] == [100, 100, 50]
    assert list(itertools.chain(*pages)) == added  # creation order, each ARN once


def test_botocore_paginators_walk_every_listing(fake, ecs):
    for index in range(5):
        fake.add_cluster(f"cluster-{index}")
    added = [fake.add_task("cluster-2") for _ in range(250)]
    instances = [fake.add_container_instance("cluster-2") for _ in range(7)]
    assert all_task_arns(ecs, cluster="cluster-2") == added
    assert all_task_arns(ecs, cluster="cluster-2", PaginationConfig={"PageSize": 30}) == added
    clusters = list(ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(page["clusterArns"]) for page in clusters] == [2, 2, 1]
    listed = ecs.get_paginator("list_container_instances").paginate(cluster="cluster-2", PaginationConfig={"PageSize": 3})
    assert [arn for page in listed for arn in page["containerInstanceArns"]] == instances


def test_pages_stay_stable_while_tasks_come_and_go(fake, ecs):
    fake.add_cluster("web")
    added = [fake.add_task("web") for _ in range(250)]
    first = ecs.list_tasks(cluster="web")
    stopped = added[:5] + added[150:155]  # five already listed, five not yet
    for arn in stopped:
        fake.transition_task(arn, "STOPPED")
    newer = [fake.add_task("web") for _ in range(3)]
    rest = all_task_arns(ecs, cluster="web", PaginationConfig={"StartingToken": first["nextToken"]})
    listed = first["taskArns"] + rest
    assert len(listed) == len(set(listed))
    assert set(listed) == set(added + newer) - set(added[150:155])
    assert set(all_task_arns(ecs, cluster="web", desiredStatus="STOPPED")) == set(stopped)


def test_container_instances_page_across_statuses_in_registration_order(fake, ecs):
    fake.add_cluster("batch")
    statuses = ["ACTIVE", "DRAINING", "REGISTERING", "ACTIVE", "DEREGISTERING", "REGISTRATION_FAILED", "INACTIVE", "ACTIVE"]
    instances = [fake.add_container_instance("batch", status=status) for status in statuses]
    listed = ecs.get_paginator("list_container_instances").paginate(cluster="batch", PaginationConfig={"PageSize": 2})
    assert [arn for page in listed for arn in page["containerInstanceArns"]] == [
        arn for arn, status in zip(instances, statuses) if status != "INACTIVE"
    ]


def test_a_10000_task_account_in_20_clusters_lists_and_describes_quickly(fake, ecs):
    for index in range(20):
        fake.add_cluster(f"cluster-{index:02d}")
        fake.add_container_instance(f"cluster-{index:02d}")
    for number in range(10_000):
        nth_in_cluster = number // 20  # each cluster: 500 tasks, one in 5 stopped, one in 3 on EC2
        fake.add_task(
            f"cluster-{number % 20:02d}", launch_type="EC2" if nth_in_cluster % 3 == 0 else "FARGATE",
            last_status="STOPPED" if nth_in_cluster % 5 == 0 else "RUNNING",
        )
    started = time.perf_counter()
    listed = {
        (cluster, desired): all_task_arns(ecs, cluster=cluster, desiredStatus=desired)
        for cluster in ecs.list_clusters()["clusterArns"]
        for desired in ("RUNNING", "STOPPED")
    }
    listing_seconds = time.perf_counter() - started
    arns = [arn for cluster_arns in listed.values() for arn in cluster_arns]
    assert len(arns) == len(set(arns)) == 10_000
    assert [len(cluster_arns) for cluster_arns in listed.values()] == [400, 100] * 20
    assert fake.calls["ListTasks"] == 20 * (4 + 1)  # no empty last page
    assert listing_seconds < 5, f"listing took {listing_seconds:.1f}s"
    started = time.perf_counter()
    (cluster, _), cluster_arns = next(iter(listed.items()))
    described = [
        task
        for start in range(0, len(cluster_arns), 100)
        for task in ecs.describe_tasks(cluster=cluster, tasks=cluster_arns[start:start + 100])["tasks"]
    ]
    assert [task["taskArn"] for task in described] == cluster_arns
    assert time.perf_counter() - started < 5
    assert fake.max_ids_per_describe == 100


# -- describing ------------------------------------------------------------------------------


def test_describing_more_than_100_at_once_is_refused_and_recorded(fake, ecs):
    fake.add_cluster("web")
    arns = [fake.add_task("web") for _ in range(101)]
    assert len(ecs.describe_tasks(cluster="web", tasks=arns[:100])["tasks"]) == 100
    assert fake.max_ids_per_describe == 100
    assert error_code(lambda: ecs.describe_tasks(cluster="web", tasks=arns)) == "InvalidParameterException"
    assert fake.max_ids_per_describe == 101
    assert error_code(lambda: ecs.describe_tasks(cluster="web", tasks=[])) == "InvalidParameterException"
    assert error_code(lambda: ecs.describe_container_instances(cluster="web", containerInstances=["a"] * 101)) == "InvalidParameterException"
    fake.reset_calls()
    assert (fake.calls, fake.max_ids_per_describe) == ({}, 0)


def test_tasks_ecs_does_not_know_in_the_cluster_come_back_missing(fake, ecs):
    web, _ = fake.add_cluster("web"), fake.add_cluster("api")
    present = fake.add_task("web")
    forgotten = fake.add_task("web", last_status="STOPPED")
    elsewhere = fake.add_task("api")
    fake.forget_task(forgotten)
    unknown_id = uuid.uuid4().hex
    response = ecs.describe_tasks(cluster=web, tasks=[present.rsplit("/", 1)[1], forgotten, elsewhere, unknown_id, present])
    assert [task["taskArn"] for task in response["tasks"]] == [present]
    assert response["failures"] == [
        {"arn": forgotten, "reason": "MISSING"},
        {"arn": elsewhere, "reason": "MISSING"},
        {"arn": f"arn:aws:ecs:us-east-1:111122223333:task/web/{unknown_id}", "reason": "MISSING"},
    ]
    assert forgotten not in all_task_arns(ecs, cluster="web", desiredStatus="STOPPED")


def test_tags_are_described_only_when_included(fake, ecs):
    fake.add_cluster("web")
    arn = fake.add_task("web", tags={"team": "web"})
    assert "tags" not in ecs.describe_tasks(cluster="web", tasks=[arn])["tasks"][0]
    assert ecs.describe_tasks(cluster="web", tasks=[arn], include=["TAGS"])["tasks"][0]["tags"] == [{"key": "team", "value": "web"}]
    instance = fake.add_container_instance("web", tags={"team": "web"})
    described = ecs.describe_container_instances(cluster="web", containerInstances=[instance])["containerInstances"][0]
    assert "tags" not in described and "healthStatus" not in described and "clusterArn" not in described
    described = ecs.describe_container_instances(
        cluster="web", containerInstances=[instance], include=["TAGS", "CONTAINER_INSTANCE_HEALTH"]
    )["containerInstances"][0]
    assert described["tags"] == [{"key": "team", "value": "web"}] and described["healthStatus"]["overallStatus"] == "OK"


# -- listing filters -------------------------------------------------------------------------


def test_a_task_is_listed_under_the_desired_status_it_has(fake, ecs, every_kind):
    expected: Dict[str, Set[str]] = {"RUNNING": set(), "STOPPED": set()}
    for arn in every_kind.tasks.values():
        task = fake.task(arn)
        if task["clusterArn"].endswith("/batch"):
            expected[task["desiredStatus"]].add(arn)
    assert set(all_task_arns(ecs, cluster="batch")) == expected["RUNNING"]
    assert set(all_task_arns(ecs, cluster="batch", desiredStatus="STOPPED")) == expected["STOPPED"]
    assert all_task_arns(ecs, cluster="batch", desiredStatus="PENDING") == []  # ECS never sets it on a task
    stop_requested = every_kind.tasks["EC2", "stop requested"]
    assert fake.task(stop_requested)["lastStatus"] == "RUNNING" and stop_requested in expected["STOPPED"]
    running = every_kind.tasks["EC2", "RUNNING"]
    fake.transition_task(running, "DEACTIVATING")
    assert running in all_task_arns(ecs, cluster="batch", desiredStatus="STOPPED")
    assert running not in all_task_arns(ecs, cluster="batch")


def test_tasks_filter_by_launch_type_started_by_family_service_and_instance(fake, ecs):
    fake.add_cluster("mixed")
    first, second = fake.add_container_instance("mixed"), fake.add_container_instance("mixed")
    on_first = fake.add_task("mixed", launch_type="EC2", container_instance=first, started_by="nightly")
    on_second = fake.add_task("mixed", launch_type="EC2", container_instance=second)
    service = fake.add_task("mixed", started_by=SERVICE_STARTER, group="service:web")
    assert all_task_arns(ecs, cluster="mixed", launchType="EC2") == [on_first, on_second]
    assert all_task_arns(ecs, cluster="mixed", launchType="FARGATE") == [service]
    assert all_task_arns(ecs, cluster="mixed", startedBy="nightly") == [on_first]
    assert all_task_arns(ecs, cluster="mixed", family="web") == [service]
    assert all_task_arns(ecs, cluster="mixed", serviceName="web") == [service]
    assert all_task_arns(ecs, cluster="mixed", containerInstance=second.rsplit("/", 1)[1]) == [on_second]
    assert all_task_arns(ecs, cluster="mixed", launchType="EC2", startedBy="nightly", desiredStatus="STOPPED") == []


def test_container_instances_list_every_status_but_inactive_by_default(fake, ecs, every_kind):
    listed = set(ecs.list_container_instances(cluster="batch")["containerInstanceArns"])
    assert listed == {arn for status, arn in every_kind.instances.items() if status != "INACTIVE"}
    for status, arn in every_kind.instances.items():
        if status != "INACTIVE":
            assert ecs.list_container_instances(cluster="batch", status=status)["containerInstanceArns"] == [arn]


def test_a_deregistered_instance_is_unlisted_but_describable_until_forgotten(fake, ecs):
    fake.add_cluster("batch")
    arn = fake.add_container_instance("batch")
    fake.update_container_instance(arn, status="DRAINING")
    assert ecs.list_container_instances(cluster="batch", status="DRAINING")["containerInstanceArns"] == [arn]
    fake.deregister_container_instance(arn)
    assert ecs.list_container_instances(cluster="batch")["containerInstanceArns"] == []
    described = ecs.describe_container_instances(cluster="batch", containerInstances=[arn])
    assert [(i["status"], i["agentConnected"], i["version"]) for i in described["containerInstances"]] == [("INACTIVE", False, 3)]
    fake.forget_container_instance(arn)
    described = ecs.describe_container_instances(cluster="batch", containerInstances=[arn.rsplit("/", 1)[1]])
    assert described == {**described, "containerInstances": [], "failures": [{"arn": arn, "reason": "MISSING"}]}


# -- versions and timestamps -----------------------------------------------------------------

# The timestamps ECS has set once a task reached each state (from the samples in events/).
SET_ON_REACHING = {
    "PROVISIONING": {"createdAt"}, "PENDING": {"createdAt", "connectivityAt"},
    "ACTIVATING": {"pullStartedAt", "pullStoppedAt"}, "RUNNING": {"startedAt"},
    "DEACTIVATING": {"stoppingAt"}, "STOPPED": {"executionStoppedAt", "stoppedAt"},
}
TASK_TIMESTAMPS = ("createdAt", "connectivityAt", "pullStartedAt", "pullStoppedAt", "startedAt", "stoppingAt", "executionStoppedAt", "stoppedAt")


def timestamp_errors(task: Dict[str, Any]) -> List[str]:
    """How a task's timestamps and members disagree with its lastStatus."""
    reached = TASK_LIFECYCLE[: TASK_LIFECYCLE.index(task["lastStatus"]) + 1]
    expected = set().union(*(SET_ON_REACHING.get(status, set()) for status in reached))
    present = {name for name in TASK_TIMESTAMPS if name in task}
    errors = [f"{task['lastStatus']}: timestamps {sorted(present)}, expected {sorted(expected)}"] if present != expected else []
    times = [task[name] for name in TASK_TIMESTAMPS if name in task]
    if times != sorted(times):
        errors.append(f"timestamps out of order: {times}")
    stopping = task["lastStatus"] in TASK_LIFECYCLE[TASK_LIFECYCLE.index("DEACTIVATING"):]
    if stopping != all(name in task for name in ("stopCode", "stoppedReason")) or stopping != (task["desiredStatus"] == "STOPPED"):
        errors.append(f"{task['lastStatus']}: desiredStatus {task['desiredStatus']}, stopCode {task.get('stopCode')}")
    for container in task["containers"]:
        started = "pullStartedAt" in task
        if started != ("runtimeId" in container and "imageDigest" in container):
            errors.append(f"{task['lastStatus']}: container {container['name']} runtimeId {container.get('runtimeId')}")
        if task["lastStatus"] == "STOPPED" and (container["lastStatus"] != "STOPPED" or "exitCode" not in container):
            errors.append(f"STOPPED: container {container['name']} {container['lastStatus']}, exit {container.get('exitCode')}")
        for agent in container.get("managedAgents", []):
            if ("lastStartedAt" in agent) != ("startedAt" in task):
                errors.append(f"{task['lastStatus']}: managed agent {agent}")
    return errors


@pytest.mark.parametrize("launch_type", ["FARGATE", "EC2"])
@pytest.mark.parametrize("last_status", TASK_LIFECYCLE)
def test_an_added_task_has_the_timestamps_and_members_of_its_status(fake, launch_type, last_status):
    fake.add_cluster("c")
    fake.add_container_instance("c")
    arn = fake.add_task("c", launch_type=launch_type, last_status=last_status, containers=2, execute_command=True)
    task = fake.task(arn)
    assert timestamp_errors(task) == []
    assert ("containerInstanceArn" in task) == (launch_type == "EC2")
    fargate_only = {"capacityProviderName", "platformVersion", "platformFamily", "ephemeralStorage", "fargateEphemeralStorage"}
    assert fargate_only <= set(task) if launch_type == "FARGATE" else not fargate_only & set(task)
    assert bool(task["attachments"]) == (launch_type == "FARGATE")


@pytest.mark.parametrize("launch_type, sample", [("FARGATE", "fargate-task-lifecycle.json"), ("EC2", "ec2-task-lifecycle.json")])
def test_versions_grow_by_one_per_transition_through_the_lifecycle(fake, ecs, launch_type, sample):
    fake.add_cluster("c")
    fake.add_container_instance("c")
    statuses = [event["detail"]["lastStatus"] for event in sample_events(sample)]
    arn = fake.add_task("c", launch_type=launch_type, last_status=statuses[0])
    seen = [fake.task(arn)]
    for status in statuses[1:]:
        fake.transition_task(arn, status)
        described = ecs.describe_tasks(cluster="c", tasks=[arn])["tasks"][0]
        seen.append(fake.task(arn))
        assert described["version"] == seen[-1]["version"]
    assert [task["version"] for task in seen] == [event["detail"]["version"] for event in sample_events(sample)]
    assert [timestamp_errors(task) for task in seen] == [[]] * len(seen)
    updated = [fake.event_for_task(arn)["detail"]["updatedAt"]]
    fake.transition_task(arn, "STOPPED", healthStatus="UNHEALTHY")
    assert fake.task(arn)["version"] == seen[-1]["version"] + 1 and fake.task(arn)["healthStatus"] == "UNHEALTHY"
    assert epoch_of(fake.event_for_task(arn)["detail"]["updatedAt"]) > epoch_of(updated[0])


def test_an_added_task_starts_at_the_version_the_samples_show(fake):
    fake.add_cluster("c")
    fake.add_container_instance("c")
    for sample, launch_type in (("fargate-task-lifecycle.json", "FARGATE"), ("ec2-task-lifecycle.json", "EC2")):
        for event in sample_events(sample):
            arn = fake.add_task("c", launch_type=launch_type, last_status=event["detail"]["lastStatus"])
            assert fake.task(arn)["version"] == event["detail"]["version"], (sample, event["detail"]["lastStatus"])
    assert fake.task(fake.add_task("c", version=14801))["version"] == 14801


def test_a_transition_happens_at_the_clock_and_never_goes_back(fake):
    now = iter(itertools.count(1_795_000_000, 10))
    clocked = FakeECS(clock=lambda: float(next(now)))
    clocked.add_cluster("c")
    arn = clocked.add_task("c")  # at 1_795_000_000
    task = clocked.transition_task(arn, "DEACTIVATING", stopCode="UserInitiated", stoppedReason="Task stopped by user")
    assert (task["stoppingAt"], task["stopCode"], task["stoppedReason"]) == (1_795_000_010, "UserInitiated", "Task stopped by user")
    task = clocked.transition_task(arn, "STOPPED")
    assert task["stoppedAt"] == 1_795_000_020 and task["stoppingAt"] < task["executionStoppedAt"] < task["stoppedAt"]
    assert [container["exitCode"] for container in task["containers"]] == [0]
    with pytest.raises(ValueError, match="cannot go back"):
        clocked.transition_task(arn, "RUNNING")
    with pytest.raises(ValueError, match="not Task members"):
        clocked.transition_task(arn, "STOPPED", stopcode="UserInitiated")
    with pytest.raises(ValueError, match="set by the control plane"):
        clocked.transition_task(arn, "STOPPED", version=99)


def test_container_instance_changes_bump_the_version_by_one(fake):
    fake.add_cluster("batch")
    arn = fake.add_container_instance("batch", version=14801)
    remaining = fake.container_instance(arn)["remainingResources"]
    remaining[0]["integerValue"] = 1024
    changed = fake.update_container_instance(arn, remainingResources=remaining, runningTasksCount=1)
    assert (changed["version"], changed["remainingResources"][0]["integerValue"], changed["runningTasksCount"]) == (14802, 1024, 1)
    assert fake.update_container_instance(arn, agentConnected=False)["version"] == 14803
    assert fake.deregister_container_instance(arn)["version"] == 14804
    assert fake.container_instance(arn) == {**changed, "version": 14804, "status": "INACTIVE", "agentConnected": False}


# -- faults ----------------------------------------------------------------------------------


def throttling_verdicts(client: Any) -> List[bool]:
    """botocore's own verdict on each response the client gets: throttling or not."""
    detector = botocore.retries.standard.ThrottlingErrorDetector(botocore.retries.standard.RetryEventAdapter())
    verdicts: List[bool] = []

    def judge(**kwargs: Any) -> None:
        verdicts.append(detector.is_throttling_error(**kwargs))

    client.meta.events.register("needs-retry.ecs", judge)
    return verdicts


def test_throttling_is_retried_by_botocore_standard_mode(fake, no_backoff):
    fake.add_cluster("web")
    client = ecs_client(fake, retries={"mode": "standard"})
    verdicts = throttling_verdicts(client)
    fake.throttle(2)
    response = client.list_clusters()
    assert response["clusterArns"] == ["arn:aws:ecs:us-east-1:111122223333:cluster/web"]
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert fake.calls == {"ListClusters": 3}
    assert verdicts == [True, True, False]


def test_throttling_beyond_the_attempts_raises_throttling_exception(fake, no_backoff):
    fake.add_cluster("web")
    client = ecs_client(fake, retries={"mode": "standard", "total_max_attempts": 2})
    fake.throttle(5)
    with pytest.raises(ClientError) as raised:
        client.list_clusters()
    assert raised.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fake.calls == {"ListClusters": 2}


def test_adaptive_mode_sees_throttling_too(fake, no_backoff, monkeypatch):
    monkeypatch.setattr(botocore.retries.bucket.TokenBucket, "acquire", lambda self, amount=1, block=True: True)  # its wait
    fake.add_cluster("web")
    client = ecs_client(fake, retries={"mode": "adaptive", "total_max_attempts": 3})
    verdicts = throttling_verdicts(client)
    fake.throttle(1, operation="ListTasks")
    assert client.list_clusters()["clusterArns"]  # another operation: not throttled
    assert client.list_tasks(cluster="web")["ResponseMetadata"]["RetryAttempts"] == 1
    assert verdicts == [False, True, False]


def test_injected_server_errors_are_retried_then_raised(fake, no_backoff):
    fake.add_cluster("web")
    client = ecs_client(fake, retries={"mode": "standard", "total_max_attempts": 3})
    fake.fail(1, operation="DescribeTasks")
    assert client.describe_tasks(cluster="web", tasks=["x"])["failures"]
    fake.fail(3, code="ServerException")
    assert error_code(lambda: client.list_clusters()) == "ServerException"
    fake.fail(1, code="AccessDeniedException", status=400)
    assert error_code(lambda: client.list_clusters()) == "AccessDeniedException"
    assert fake.calls == {"DescribeTasks": 2, "ListClusters": 4}
    with pytest.raises(ValueError, match="not served"):
        fake.throttle(1, operation="RunTask")


# -- events ----------------------------------------------------------------------------------

EVENT_TIMESTAMPS = timestamp_members(MODEL.shape_for("Task"), set(), set()) | timestamp_members(
    MODEL.shape_for("ContainerInstance"), set(), set()
) | {"updatedAt"}


def floats_and_timestamps(value: Any, path: str = "detail") -> List[Tuple[str, Any]]:
    """Every float in an event detail, and every value of a member named like a timestamp."""
    found: List[Tuple[str, Any]] = []
    if isinstance(value, dict):
        for name, member in value.items():
            if name in EVENT_TIMESTAMPS or isinstance(member, float):
                found.append((f"{path}.{name}", member))
            else:
                found += floats_and_timestamps(member, f"{path}.{name}")
    elif isinstance(value, list):
        for index, member in enumerate(value):
            found += floats_and_timestamps(member, f"{path}[{index}]")
    return found


def test_a_task_event_is_the_current_task_as_events_carry_it(fake, every_kind):
    for arn in every_kind.tasks.values():
        task, event = fake.task(arn), fake.event_for_task(arn)
        assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
        assert (event["version"], event["detail-type"], event["source"]) == ("0", "ECS Task State Change", "aws.ecs")
        assert (event["account"], event["region"], event["resources"]) == ("111122223333", "us-east-1", [arn])
        assert uuid.UUID(event["id"]) and ISO_SECONDS.fullmatch(event["time"])
        detail = event["detail"]
        assert event["time"] == detail["updatedAt"][:19] + "Z"
        for path, value in floats_and_timestamps(detail):
            assert isinstance(value, str) and ISO_MS.fullmatch(value), f"{path}: {value!r}"
        assert not set(detail) & TASK_API_ONLY
        assert not any(set(container) & CONTAINER_API_ONLY for container in detail["containers"])
        api_members = set(task) - TASK_API_ONLY
        assert set(detail) == api_members | {"updatedAt"}
        for name in set(TASK_TIMESTAMPS) & api_members:
            assert round(epoch_of(detail[name]), 3) == task[name], name
        agents = [agent for container in detail["containers"] for agent in container.get("managedAgents", [])]
        assert all(ISO_MS.fullmatch(agent["lastStartedAt"]) for agent in agents if "lastStartedAt" in agent)
        assert epoch_of(detail["updatedAt"]) >= max(task[name] for name in TASK_TIMESTAMPS if name in task)


def test_an_event_takes_the_time_and_id_it_is_given(fake):
    fake.add_cluster("web")
    arn = fake.add_task("web")
    event = fake.event_for_task(arn, time=1_795_000_000.999, event_id="22599d39-4663-44ae-857c-01f8466a621f")
    assert (event["time"], event["id"]) == ("2026-11-18T11:06:40Z", "22599d39-4663-44ae-857c-01f8466a621f")


@pytest.mark.parametrize("sample, launch_type", [("fargate-task-lifecycle.json", "FARGATE"), ("ec2-task-lifecycle.json", "EC2")])
def test_task_events_have_the_members_the_samples_show_in_each_state(fake, sample, launch_type):
    fake.add_cluster("c")
    fake.add_container_instance("c")
    for real in sample_events(sample):
        expected = real["detail"]
        arn = fake.add_task(
            "c", launch_type=launch_type, last_status=expected["lastStatus"],
            started_by=expected["startedBy"], containers=len(expected["containers"]),
        )
        detail = fake.event_for_task(arn)["detail"]
        state = f"{sample} {expected['lastStatus']}"
        assert set(detail) == set(expected), state
        assert (detail["version"], detail["desiredStatus"]) == (expected["version"], expected["desiredStatus"]), state
        assert [a["status"] for a in detail["attachments"]] == [a["status"] for a in expected["attachments"]], state
        assert [c["lastStatus"] for c in detail["containers"]] == [c["lastStatus"] for c in expected["containers"]], state
        for ours, theirs in zip(detail["containers"], expected["containers"]):
            assert set(ours) ^ set(theirs) <= {"reason"}, state  # why an essential container exited varies


def test_a_running_fargate_task_event_has_no_member_the_sample_lacks(fake):
    (real,) = sample_events("task-running.json")
    fake.add_cluster("web-prod")
    arn = fake.add_task("web-prod", started_by="ecs-svc/5555555555555555555", group="service:api")
    assert set(fake.event_for_task(arn)["detail"]) <= set(real["detail"]) | OPTIONAL_TASK_EVENT_MEMBERS


def test_a_container_instance_event_is_the_instance_plus_cluster_and_update_time(fake, every_kind):
    real_members = set(sample_events("container-instance.json")[0]["detail"])
    for status, arn in every_kind.instances.items():
        instance, event = fake.container_instance(arn), fake.event_for_container_instance(arn)
        assert (event["detail-type"], event["resources"]) == ("ECS Container Instance State Change", [arn])
        detail = event["detail"]
        assert detail["clusterArn"] == "arn:aws:ecs:us-east-1:111122223333:cluster/batch"
        assert ISO_MS.fullmatch(detail["updatedAt"]) and event["time"] == detail["updatedAt"][:19] + "Z"
        assert not set(detail) & CONTAINER_INSTANCE_API_ONLY
        assert set(detail) == set(instance) - CONTAINER_INSTANCE_API_ONLY | {"clusterArn", "updatedAt"}
        assert real_members <= set(detail) <= real_members | OPTIONAL_CONTAINER_INSTANCE_EVENT_MEMBERS, status
        assert [(path, value) for path, value in floats_and_timestamps(detail) if not isinstance(value, str)] == [
            (f"detail.{resources}[3].doubleValue", 1.1) for resources in ("remainingResources", "registeredResources")
        ]
        assert round(epoch_of(detail["registeredAt"]), 3) == instance["registeredAt"]


# -- the server ------------------------------------------------------------------------------


def test_it_listens_on_127_0_0_1_only_and_its_port_closes_on_stop():
    fake = FakeECS().start()
    fake.add_cluster("web")
    port = int(fake.endpoint.rsplit(":", 1)[1])
    assert fake.endpoint == f"http://127.0.0.1:{port}"
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=1)  # loopback too, but not the bound address
    client = ecs_client(fake, retries={"total_max_attempts": 1})
    assert client.list_clusters()["clusterArns"]  # and keeps its connection open
    fake.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        client.list_clusters()  # the kept-alive connection was closed too
    fake.stop()  # twice is harmless


def test_describing_while_tasks_change_sees_each_task_s_versions_in_order(fake):
    fake.add_cluster("web")
    arns = [fake.add_task("web", last_status="PROVISIONING") for _ in range(20)]
    errors: List[str] = []
    rounds: List[int] = []
    stop = threading.Event()
    shape = MODEL.operation_model("DescribeTasks").output_shape

    def describe() -> None:
        client = ecs_client(fake)
        wire = Wire(client)
        last: Dict[str, int] = {}
        while True:  # one round at least, however fast the changes are
            for task in client.describe_tasks(cluster="web", tasks=arns)["tasks"]:
                if task["version"] < last.get(task["taskArn"], 0):
                    errors.append(f"{task['taskArn']} went back to version {task['version']}")
                last[task["taskArn"]] = task["version"]
            errors.extend(error for _, _, body in wire.received for error in shape_errors(shape, body))
            wire.received.clear()
            rounds.append(1)
            if stop.is_set():
                break

    readers = [threading.Thread(target=describe) for _ in range(4)]
    for reader in readers:
        reader.start()
    for status in TASK_LIFECYCLE[1:]:
        for arn in arns:
            fake.transition_task(arn, status)
    stop.set()
    for reader in readers:
        reader.join(timeout=10)
    assert errors == [] and len(rounds) >= len(readers)
    assert {fake.task(arn)["version"] for arn in arns} == {len(TASK_LIFECYCLE)}
