"""`make query` (tools/query.py) on DynamoDB Local: a workload recorded through the real recorder,
then the command's answers checked against the state its events leave (tools/replay.expected_state)."""
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest

from chalicelib import runtime
from chalicelib.model.clock import parse_time
from chalicelib.runtime import Runtime
from chalicelib.tables import ALL, CONTAINER_INSTANCES, PHASE_INDEX, READ_INDEX, TASKS
from tests.apps import client_for, load_app
from tests.conftest import TEST_SETTINGS
from tests.helpers import ACCOUNT, iso, record
from tools import policy_files, query
from tools.local_dynamodb import create_tables, local_environment
from tools.replay import expected_state
from tools.stage import ROOT, DeployError, aws_caller

MINUTE, HOUR, DAY = 60, 3600, 86_400
REGION = "us-east-1"
OTHER_ACCOUNT = "123456789012"  # moto's STS answers for this one
OOM = "OutOfMemoryError: Container killed due to memory usage"
EXITED, FAILED, SCALED = "EssentialContainerExited", "TaskFailedToStart", "ServiceSchedulerInitiated"
PULL = ("CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref "
        "111122223333.dkr.ecr.us-east-1.amazonaws.com/worker:2026.11.7: not found")

# The workload: per task, its cluster, group, when it stopped (minutes ago; None: still running),
# stop code, stopped reason and containers (name, exit code, reason); the events are made from it.
TASKS_WORKLOAD = [
    ("prod-a", "service:web", None, None, None, [("web", None, None), ("envoy", None, None)]),
    ("prod-a", "service:web", None, None, None, [("web", None, None), ("envoy", None, None)]),
    ("prod-a", "service:web", 20, SCALED, "Scaling activity initiated by (deployment ecs-svc/1234567890123456789)",
     [("web", 0, None), ("envoy", 0, None)]),
    ("prod-a", "service:web", 3 * 60, EXITED, "Essential container in task exited", [("web", 1, None), ("envoy", 0, None)]),
    ("prod-a", "service:worker", None, None, None, [("worker", None, None)]),
    ("prod-a", "service:worker", 5, EXITED, "Essential container in task exited", [("worker", 137, OOM)]),
    ("prod-a", "service:worker", 25, EXITED, "Essential container in task exited", [("worker", 1, None)]),
    ("prod-a", "service:worker", 45, FAILED, PULL, [("worker", None, PULL)]),
    ("prod-a", "service:worker", 75, EXITED, "Essential container in task exited", [("worker", 137, OOM)]),
    ("prod-a", "service:worker", 2 * DAY // MINUTE, EXITED, "Essential container in task exited", [("worker", 2, None)]),
    ("prod-a", "family:cron", None, None, None, [("cron", None, None)]),
    ("prod-a", "family:cron", 10, EXITED, "Essential container in task exited", [("cron", 0, None)]),
    ("prod-a", "family:cron", 26 * 60, EXITED, "Essential container in task exited", [("cron", 0, None)]),
    ("prod-b", "service:worker", None, None, None, [("worker", None, None)]),
    ("prod-b", "service:worker", 15, EXITED, "Essential container in task exited", [("worker", 137, OOM)]),
]
# Container instances: cluster, its statuses in order, and how long ago the last one came (minutes).
INSTANCES_WORKLOAD = [
    ("prod-a", ["ACTIVE"], 30),
    ("prod-a", ["ACTIVE", "DRAINING"], 12),
    ("prod-a", ["ACTIVE", "DRAINING", "INACTIVE"], 40),
    ("prod-b", ["ACTIVE"], 3),
]


def cluster_arn(name, account=ACCOUNT):
    return f"arn:aws:ecs:{REGION}:{account}:cluster/{name}"


def envelope(detail_type, arn, detail, moment):
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.ecs",
            "account": arn.split(":")[4], "time": iso(moment), "region": REGION, "resources": [arn], "detail": detail}


def task_events(cluster, group, stopped_ago, stop_code, reason, containers, now, account=ACCOUNT):
    """A task's lifecycle as ECS sends it: PROVISIONING, PENDING, RUNNING, then DEACTIVATING and STOPPED."""
    task_id = uuid.uuid4().hex
    arn = f"arn:aws:ecs:{REGION}:{account}:task/{cluster}/{task_id}"
    stopped_at = None if stopped_ago is None else now - stopped_ago * MINUTE
    created = (stopped_at or now) - 20 * MINUTE
    base = {
        "taskArn": arn, "clusterArn": cluster_arn(cluster, account), "group": group, "launchType": "FARGATE",
        "cpu": "256", "memory": "512", "desiredStatus": "RUNNING", "createdAt": iso(created),
        "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{account}:task-definition/{group.split(':')[1]}:7",
        "startedBy": "ecs-svc/1234567890123456789" if group.startswith("service:") else "events-rule/cron",
    }
    states = [("PROVISIONING", created, {}), ("PENDING", created + 30, {}),
              ("RUNNING", created + 60, {"startedAt": iso(created + 60)})]
    if stopped_at is not None:
        stopping = {"desiredStatus": "STOPPED", "stoppingAt": iso(stopped_at - 20), "stopCode": stop_code,
                    "stoppedReason": reason}
        states += [("DEACTIVATING", stopped_at - 20, {"startedAt": iso(created + 60), **stopping}),
                   ("STOPPED", stopped_at, {"startedAt": iso(created + 60), **stopping, "stoppedAt": iso(stopped_at),
                                            "executionStoppedAt": iso(stopped_at - 5)})]
    events = []
    for version, (status, moment, extra) in enumerate(states, start=1):
        finished = status == "STOPPED"
        detail = {**base, **extra, "lastStatus": status, "version": version, "updatedAt": iso(moment),
                  "containers": [_container(arn, name, status, exit_code if finished else None,
                                            reason_of if finished else None)
                                 for name, exit_code, reason_of in containers]}
        events.append(envelope(TASKS.detail_type, arn, detail, moment))
    return events


def _container(task_arn, name, status, exit_code, reason):
    container = {"containerArn": f"{task_arn.replace(':task/', ':container/')}/{uuid.uuid4()}", "name": name,
                 "taskArn": task_arn, "lastStatus": "STOPPED" if status == "STOPPED" else status,
                 "image": f"111122223333.dkr.ecr.us-east-1.amazonaws.com/{name}:2026.11.6", "networkInterfaces": []}
    if exit_code is not None:
        container["exitCode"] = exit_code
    if reason is not None:
        container["reason"] = reason
    return container


def instance_events(cluster, statuses, ago, now):
    instance_id = uuid.uuid4().hex
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{instance_id}"
    last = now - ago * MINUTE
    events = []
    for version, status in enumerate(statuses, start=1):
        moment = last - (len(statuses) - version) * 5 * MINUTE
        detail = {
            "containerInstanceArn": arn, "clusterArn": cluster_arn(cluster), "ec2InstanceId": f"i-{instance_id[:17]}",
            "status": status, "agentConnected": status != "INACTIVE", "runningTasksCount": 0 if status != "ACTIVE" else 3,
            "pendingTasksCount": 0, "registeredAt": iso(last - HOUR), "updatedAt": iso(moment), "version": version,
            "registeredResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                                    {"name": "CPU_CREDITS", "type": "DOUBLE", "doubleValue": 1.1}],
        }
        if status == "INACTIVE":
            detail["statusReason"] = "Instance deregistered by the Auto Scaling group's scale-in"
        events.append(envelope(CONTAINER_INSTANCES.detail_type, arn, detail, moment))
    return events


class Workload:
    """The recorded events' latest state, and the command line that reads it back (the tables recorded in)."""

    def __init__(self, events, now, config):
        self.now = now
        state = expected_state(events)
        self.tasks = [event["detail"] for (kind, _), event in state.items() if kind == TASKS.kind]
        self.instances = [event["detail"] for (kind, _), event in state.items() if kind == CONTAINER_INSTANCES.kind]
        self.argv = ["--stage", "dev", "--task-table", config.task_table,
                     "--container-instance-table", config.container_instance_table]

    def stopped(self, cluster, since=None, until=None, **equal):
        """The cluster's STOPPED tasks (finished from ``since`` to ``until``, with ``equal``'s values), newest first."""
        found = [task for task in self.tasks if task["clusterArn"] == cluster_arn(cluster)
                 and task["lastStatus"] == "STOPPED" and all(task.get(name) == value for name, value in equal.items())
                 and (since is None or parse_time(task["stoppedAt"], "") >= since)
                 and (until is None or parse_time(task["stoppedAt"], "") <= until)]
        return sorted(found, key=lambda task: parse_time(task["stoppedAt"], ""), reverse=True)


def record_workload(process):
    """The workload's events, every one delivered once or twice, shuffled, through ``process``'s recorder."""
    now = float(int(time.time()))
    events = [event for spec in TASKS_WORKLOAD for event in task_events(*spec, now=now)]
    events += [event for spec in INSTANCES_WORKLOAD for event in instance_events(*spec, now=now)]
    deliveries = events + random.Random(15).sample(events, len(events) // 3)
    random.Random(7).shuffle(deliveries)
    for event in deliveries:
        assert process.record(event)["outcome"] in ("created", "updated", "duplicate", "stale")
    return Workload(events, now, process.config)


@pytest.fixture(scope="module")
def recorded(dynamodb_local_endpoint):
    """The workload, recorded once in tables of the module's own on DynamoDB Local; the tests only read it."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_environment(dynamodb_local_endpoint).items():
            patch.setenv(name, value)
        suffix = uuid.uuid4().hex[:8]
        process = Runtime(TEST_SETTINGS._replace(**{f"{spec.kind}_table": f"query-{spec.kind}-{suffix}" for spec in ALL}))
        create_tables(process.dynamodb(), {spec: process.config.table_name(spec) for spec in ALL}, read_index=True)
        yield record_workload(process)


@pytest.fixture
def workload(recorded, dynamodb_local_endpoint, monkeypatch):
    """The recorded workload, its tables the installed Runtime's (the routes read them) and DynamoDB Local's
    endpoint boto3's."""
    for name, value in local_environment(dynamodb_local_endpoint).items():
        monkeypatch.setenv(name, value)
    runtime.use(Runtime(TEST_SETTINGS._replace(task_table=recorded.argv[3], container_instance_table=recorded.argv[5])))
    yield recorded
    runtime.reset()


def run(capsys, workload, *argv):
    """The command's exit status, stdout and stderr."""
    status = query.main([*workload.argv, *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def short(arn):
    return arn.rsplit("/", 1)[-1][:12]


def table_rows(out):
    """The table's rows: (its cells split on runs of 2+ spaces, the container lines under it)."""
    lines = out.splitlines()
    rows = []
    for line in lines[1:]:
        if line.startswith(" "):
            rows[-1][1].append(line.strip())
        else:
            rows.append((re.split(r" {2,}", line), []))
    return lines[0], rows


# -- the post-mortem questions -------------------------------------------------------------------------


def test_worker_tasks_stopped_in_the_last_hour_with_why_and_each_containers_exit(workload, capsys):
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--service", "worker",
                           "--status", "stopped", "--since", "1h")
    assert (status, err) == (0, "")
    expected = workload.stopped("prod-a", since=workload.now - HOUR, group="service:worker")
    assert len(expected) == 3  # 5, 25 and 45 minutes ago; not 75 minutes or 2 days ago, nor prod-b's
    header, rows = table_rows(out)
    assert re.split(r" {2,}", header) == ["TASK", "GROUP", "STATUS", "STOPPED (UTC)", "STOP CODE", "STOPPED REASON"]
    assert [cells[0] for cells, _ in rows] == [short(task["taskArn"]) for task in expected]  # newest first
    for (cells, containers), task in zip(rows, expected):
        assert cells[1:5] == ["service:worker", "STOPPED", query.when(task["stoppedAt"]), task["stopCode"]]
        reason = cells[5]
        assert reason == task["stoppedReason"] or (reason.endswith("…") and task["stoppedReason"].startswith(reason[:-1]))
        assert len(containers) == len(task["containers"])
        for shown, container in zip(containers, task["containers"]):
            name, exit_code, *why = re.split(r" {2,}", shown)
            assert name == container["name"]
            assert exit_code == (f"exit {container['exitCode']}" if "exitCode" in container else "no exit code")
            assert why == ([] if "reason" not in container else [why[0]])
            if why:
                assert why[0] == container["reason"] or container["reason"].startswith(why[0][:-1])
    assert any(OOM in line for line in out.splitlines())  # the OOM kill, with its reason whole
    assert max(len(line) for line in out.splitlines()) <= query.WIDTH


def test_the_same_question_as_json_is_the_stored_items(workload, capsys):
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--service", "worker",
                           "--status", "STOPPED", "--since", "1h", "--output", "json")
    assert (status, err) == (0, "")
    items = json.loads(out)
    expected = workload.stopped("prod-a", since=workload.now - HOUR, group="service:worker")
    assert [item["taskArn"] for item in items] == [task["taskArn"] for task in expected]
    for item, task in zip(items, expected):
        assert {name: item[name] for name in task} == task  # every field of the latest event, as sent
        assert item["cw_source"] == "event"


def test_iso_times_select_a_window_of_every_group(workload, capsys):
    since, until = workload.now - 90 * MINUTE, workload.now - 20 * MINUTE
    status, out, _ = run(capsys, workload, "tasks", "--cluster", "prod-a", "--since", iso(since),
                         "--until", iso(until), "--output", "json")
    expected = workload.stopped("prod-a", since=since, until=until)
    assert {task["group"] for task in expected} == {"service:web", "service:worker"}
    assert status == 0 and [item["taskArn"] for item in json.loads(out)] == [task["taskArn"] for task in expected]


def test_a_stop_code_since_a_day_and_the_oom_kills_among_them(workload, capsys):
    status, out, _ = run(capsys, workload, "tasks", "--cluster", "prod-a", "--stop-code", EXITED, "--since", "1d",
                         "--output", "json")
    items = json.loads(out)
    expected = workload.stopped("prod-a", since=workload.now - DAY, stopCode=EXITED)
    assert status == 0 and [item["taskArn"] for item in items] == [task["taskArn"] for task in expected]
    oom = [item for item in items if any(c.get("reason", "").startswith("OutOfMemoryError") for c in item["containers"])]
    assert len(oom) == 2  # 5 and 75 minutes ago; prod-b's is another cluster


def test_running_tasks_of_a_service(workload, capsys):
    status, out, _ = run(capsys, workload, "tasks", "--cluster", "prod-a", "--service", "web", "--status", "running")
    expected = {short(task["taskArn"]) for task in workload.tasks
                if task["clusterArn"] == cluster_arn("prod-a") and task["group"] == "service:web"
                and task["lastStatus"] == "RUNNING"}
    _, rows = table_rows(out)
    assert status == 0 and len(expected) == 2
    assert {cells[0] for cells, _ in rows} == expected
    assert all(cells[1:3] == ["service:web", "RUNNING"] and containers == [] for cells, containers in rows)


@pytest.mark.parametrize("group", ["family:cron", "service:worker"])
def test_a_group_lists_its_tasks_unfinished_first_then_newest_finished(workload, capsys, group):
    option = ["--group", group] if group.startswith("family:") else ["--service", group.split(":")[1]]
    status, out, _ = run(capsys, workload, "tasks", "--cluster", cluster_arn("prod-a"), *option, "--output", "json")
    in_group = [task for task in workload.tasks if task["group"] == group and task["clusterArn"] == cluster_arn("prod-a")]
    expected = [task["taskArn"] for task in in_group if task["lastStatus"] != "STOPPED"]
    expected += [task["taskArn"] for task in workload.stopped("prod-a", group=group)]
    assert status == 0 and [item["taskArn"] for item in json.loads(out)] == expected


def test_fields_are_the_tables_columns(workload, capsys):
    status, out, _ = run(capsys, workload, "tasks", "--cluster", "prod-a", "--service", "worker", "--since", "1h",
                         "--fields", "lastStatus,cpu")
    header, rows = table_rows(out)
    assert status == 0 and re.split(r" {2,}", header) == ["TASK", "lastStatus", "cpu"]
    assert [cells for cells, _ in rows] == [[short(task["taskArn"]), "STOPPED", "256"]
                                           for task in workload.stopped("prod-a", since=workload.now - HOUR,
                                                                        group="service:worker")]


# -- one task ------------------------------------------------------------------------------------------


def test_one_task_by_its_id_and_cluster_name(workload, capsys):
    [task] = workload.stopped("prod-a", since=workload.now - 10 * MINUTE, group="service:worker")
    task_id = task["taskArn"].rsplit("/", 1)[1]
    status, out, err = run(capsys, workload, "tasks", "get", task_id, "--cluster", "prod-a")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["taskArn", task["taskArn"]]
    assert [line.split(None, 1) for line in lines if line.split()[0] in ("stopCode", "stoppedAt", "group")] == [
        ["group", "service:worker"], ["stopCode", EXITED], ["stoppedAt", task["stoppedAt"]]]
    containers = lines[lines.index("containers") + 1:]
    assert [re.split(r" {2,}", line.strip()) for line in containers] == [["worker", "exit 137", OOM]]

    status, out, _ = run(capsys, workload, "tasks", "get", task["taskArn"], "--output", "json")  # by its ARN
    item = json.loads(out)
    assert status == 0 and {name: item[name] for name in task} == task


# -- clusters and container instances ------------------------------------------------------------------


def test_clusters_are_those_with_recorded_items(workload, capsys):
    recorded = sorted({item["clusterArn"] for item in workload.tasks + workload.instances})
    status, out, _ = run(capsys, workload, "clusters", "--output", "json")
    assert status == 0 and json.loads(out) == [{"clusterArn": arn, "clusterName": arn.rsplit("/", 1)[1]}
                                               for arn in recorded]
    status, out, err = run(capsys, workload, "clusters", "--limit", "1", "--all-pages", "--output", "json")
    assert (status, err) == (0, "") and [cluster["clusterArn"] for cluster in json.loads(out)] == recorded
    status, out, _ = run(capsys, workload, "clusters")
    header, rows = table_rows(out)
    assert re.split(r" {2,}", header) == ["NAME", "ARN"]
    assert [cells for cells, _ in rows] == [[arn.rsplit("/", 1)[1], arn] for arn in recorded]


def test_container_instances_of_a_cluster(workload, capsys):
    in_cluster = [item for item in workload.instances if item["clusterArn"] == cluster_arn("prod-a")]
    status, out, _ = run(capsys, workload, "container-instances", "--cluster", "prod-a")
    header, rows = table_rows(out)
    assert status == 0 and re.split(r" {2,}", header)[:3] == ["INSTANCE", "EC2 INSTANCE", "STATUS"]
    shown = {cells[0]: cells for cells, _ in rows}
    assert set(shown) == {short(item["containerInstanceArn"]) for item in in_cluster}
    for item in in_cluster:
        cells = shown[short(item["containerInstanceArn"])]
        assert cells[1:4] == [item["ec2InstanceId"], item["status"], "yes" if item["agentConnected"] else "no"]
    assert rows[-1][0][2] == "INACTIVE"  # the finished one last

    status, out, _ = run(capsys, workload, "container-instances", "--cluster", "prod-a", "--status", "draining",
                         "--output", "json")
    assert [item["containerInstanceArn"] for item in json.loads(out)] == [
        item["containerInstanceArn"] for item in in_cluster if item["status"] == "DRAINING"]
    status, out, _ = run(capsys, workload, "container-instances", "--cluster", "prod-a", "--since", "1h",
                         "--output", "json")  # deregistered in the last hour: INACTIVE, dated by its event
    assert [item["containerInstanceArn"] for item in json.loads(out)] == [
        item["containerInstanceArn"] for item in in_cluster if item["status"] == "INACTIVE"]
    status, out, _ = run(capsys, workload, "container-instances", "get", short(in_cluster[0]["containerInstanceArn"]),
                         "--cluster", "prod-a")
    assert status == 1  # an ID cut to 12 characters is not its ID


# -- pages ---------------------------------------------------------------------------------------------


def test_one_page_at_a_time_or_all_of_them(workload, capsys):
    expected = [task["taskArn"] for task in workload.stopped("prod-a")]
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--status", "stopped", "--limit", "3",
                           "--output", "json")
    first = [item["taskArn"] for item in json.loads(out)]
    [token] = re.findall(r"--next (\S+)", err)
    assert status == 0 and first == expected[:3]
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--status", "stopped", "--limit", "3",
                           "--next", token, "--output", "json")
    assert status == 0 and [item["taskArn"] for item in json.loads(out)] == expected[3:6]

    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--status", "stopped", "--limit", "3",
                           "--all-pages", "--output", "json")
    assert (status, err) == (0, "") and [item["taskArn"] for item in json.loads(out)] == expected
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--status", "stopped", "--limit", "3",
                           "--all-pages")
    assert [cells[0] for cells, _ in table_rows(out)[1]] == [short(arn) for arn in expected]

    # The whole cluster, unfinished and finished, two at a time: every page ends on an item's entry.
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-a", "--limit", "2", "--all-pages",
                           "--output", "json")
    listed = [item["taskArn"] for item in json.loads(out)]
    in_cluster = [task for task in workload.tasks if task["clusterArn"] == cluster_arn("prod-a")]
    assert (status, err) == (0, "") and len(listed) == len(set(listed)) == len(in_cluster)
    assert listed[-len(expected):] == expected  # the finished ones last, newest first


# -- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, exit_status, message", [
    (["tasks", "--cluster", "prod-a", "--since", "yesterday"], 2, "since: must be an ISO-8601 time with its zone"),
    (["tasks", "--cluster", "prod-a", "--since", "2026-11-22T10:00:00"], 2, "since: must be an ISO-8601 time"),
    (["tasks", "--cluster", "prod-a", "--limit", "0"], 2, "limit: must be an integer from 1 to 100, got '0'"),
    (["tasks", "--cluster", "prod-a", "--status", "running", "--since", "1h"], 2,
     "since: selects STOPPED tasks; status=RUNNING has none"),
    (["tasks", "--service", "worker"], 2, "cluster: is required"),
    (["tasks", "--cluster", "prod-a", "--next", "not-a-token"], 2, "next: is not a token from this listing"),
    (["container-instances", "--cluster", "a/b"], 2, "cluster: must be a cluster name or ARN"),
    (["tasks", "get", "f" * 32], 2, "cluster: is required with a task ID"),
    (["tasks", "--cluster", "nowhere"], 1, "no recorded cluster is named nowhere"),
    (["tasks", "get", "0" * 32, "--cluster", "prod-a"], 1, f"task {'0' * 32} is not recorded in cluster prod-a"),
])
def test_a_refusal_is_the_routes_own_message_on_stderr(workload, capsys, argv, exit_status, message):
    status, out, err = run(capsys, workload, *argv)
    assert (status, out) == (exit_status, "")
    assert err.startswith(f"error: {message}") or f"error: {message}" in err.splitlines()[0], err
    # What GET /tasks answers for the same parameters (the same code, on the same tables).
    kind, *rest = argv
    path, params = f"/{kind}", {}
    if rest[0] == "get":
        path, rest = f"/{kind}/{rest[1]}", rest[2:]
    params = {query.parameter_of(name): value for name, value in zip(rest[::2], rest[1::2])}
    answer = client_for(load_app(events_route=False)).http.get(f"{path}?{urlencode(params)}")
    assert answer.status_code == {2: 400, 1: 404}[exit_status]
    assert err.splitlines()[0] == f"error: {answer.json_body['Message']}"


@pytest.mark.parametrize("argv, problem", [
    (["tasks", "--cluster", "prod-a", "--bogus"], "unrecognized arguments: --bogus"),
    (["tasks", "--cluster", "prod-a", "--service", "web", "get", "f" * 32], "--service: only with a listing"),
    (["tasks", "--output", "yaml"], "invalid choice: 'yaml'"),
    (["pods"], "invalid choice: 'pods'"),
])
def test_a_malformed_command_line_exits_2_saying_why(capsys, argv, problem):
    with pytest.raises(SystemExit) as exited:
        query.main(["--stage", "dev", *argv])
    assert exited.value.code == 2 and problem in capsys.readouterr().err


def test_a_table_without_the_read_index_is_not_answered(workload, capsys):
    name = f"bare-{uuid.uuid4().hex[:8]}"  # as the docs example makes it: its key only
    runtime.current().dynamodb().create_table(**TASKS.create_table_request(name, read_index=False))
    status, out, err = run(capsys, workload, "--task-table", name, "tasks", "--cluster", "prod-a")
    assert (status, out) == (3, "")
    assert err.startswith(f"error: 503 ServiceUnavailableError: table {name} has no usable index") and "(retry in 2 s)" in err


def test_an_empty_listing_says_where_it_looked(workload, capsys):
    status, out, err = run(capsys, workload, "tasks", "--cluster", "prod-b", "--group", "family:cron")
    assert status == 0 and out.splitlines()[0].startswith("TASK") and len(out.splitlines()) == 1
    assert f"no task matched in cluster prod-b, table {runtime.current().config.task_table}" in err


# -- where a cluster name is taken ----------------------------------------------------------------------


def test_a_name_is_the_callers_account_and_region_with_sts(dynamodb_local, capsys, moto_endpoint, monkeypatch):
    """The default off loopback (STS); on DynamoDB Local, asked for with --cluster-names account."""
    now = float(int(time.time()))
    theirs, mine = (task_events("prod-a", "service:worker", 3, EXITED, "Essential container in task exited",
                                [("worker", 137, OOM)], now=now, account=account) for account in (ACCOUNT, OTHER_ACCOUNT))
    for event in theirs + mine:
        record(event)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    config = runtime.current().config  # (dynamodb_local's fresh tables)
    tables = SimpleNamespace(argv=["--stage", "dev", "--task-table", config.task_table,
                                   "--container-instance-table", config.container_instance_table])
    argv = ["tasks", "--cluster", "prod-a", "--since", "10m", "--output", "json"]
    status, out, err = run(capsys, tables, "--cluster-names", "account", *argv)
    assert (status, err) == (0, "")
    assert [item["taskArn"] for item in json.loads(out)] == [mine[-1]["detail"]["taskArn"]]

    status, out, err = run(capsys, tables, *argv)  # on loopback: among the recorded clusters, two of that name
    assert status == 2 and err.startswith("error: cluster: names 2 recorded clusters")
    assert cluster_arn("prod-a") in err and cluster_arn("prod-a", OTHER_ACCOUNT) in err


def test_only_loopback_dynamodb_skips_sts():
    assert all(query.on_loopback(url) for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                                                  "http://127.3.4.5"))
    assert not any(query.on_loopback(url) for url in (None, "https://dynamodb.us-east-1.amazonaws.com",
                                                      "http://10.0.0.5:8000", "http://localhost.example.com"))


# -- the stage ------------------------------------------------------------------------------------------


def test_the_local_stage_reads_make_locals_tables(workload, capsys, monkeypatch):
    """`make local`'s stage: its endpoint and dummy credentials where the environment sets none."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.setenv(name, os.environ[name])  # (restored after the test, whatever the command sets)
    status, out, _ = run(capsys, workload, "clusters")  # (the test's tables, named over the stage's)
    with_dev = out
    workload.argv[1] = "local"
    assert run(capsys, workload, "clusters") == (0, with_dev, "")
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"].startswith("http://127.0.0.1:")  # the test's, not the stage's


def test_no_region_or_credentials_is_said_before_any_request(monkeypatch):
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # (nothing but loopback traffic)
    with pytest.raises(DeployError, match="no AWS region"):
        query.main(["--stage", "dev", "clusters"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with pytest.raises(DeployError, match="no AWS credentials"):
        query.main(["--stage", "dev", "clusters"])


def test_the_command_loads_none_of_the_local_launchers():
    loaded = subprocess.run([sys.executable, "-c", "import json, sys, tools.query; print(json.dumps(sorted(sys.modules)))"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not {"tools.local_api", "tools.local_dynamodb", "tools.replay", "moto"} & set(json.loads(loaded))


def test_the_make_target_passes_the_stage_and_the_tables():
    dry = subprocess.run(["make", "-n", "query", "STAGE=prod", "TASK_TABLE=t", "ARGS=clusters --output json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m tools.query --stage prod --task-table 't' clusters --output json" in " ".join(dry.replace("\\\n", " ").split())


# -- the docs ---------------------------------------------------------------------------------------------


def documented_commands():
    """Every `make query ... ARGS="..."` line of README.md and docs/local-and-api.md, as argv."""
    found = []
    for doc in ("README.md", "docs/local-and-api.md"):
        for stage, args in re.findall(r'make query STAGE=(\w+) ARGS="([^"]*)"', (ROOT / doc).read_text()):
            found.append(["--stage", stage, *shlex.split(args)])
    return found


def test_the_documented_commands_parse():
    commands = documented_commands()
    assert len(commands) >= 8
    for argv in commands:
        query.question(query.parser().parse_args(argv), query.parser())


def test_the_documented_policy_allows_every_call_make_query_makes(workload, capsys, moto_endpoint, monkeypatch):
    """docs/deploy.md's policy for make query (for the prod stage's tables), against the calls of each command,
    made on this test's tables: the previous read index's Query included, which these tables answer has no index."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"`make query` reads the tables directly.*?```json\n(.*?)```", doc, re.S).group(1)
    policy = json.loads(block.replace("<region>", REGION).replace("<account>", ACCOUNT))
    calls = []

    class Recording(Runtime):
        def dynamodb(self):
            client = super().dynamodb()
            client.meta.events.register("before-parameter-build.dynamodb", lambda model, params, **_: calls.append((model.name, params)),
                                        unique_id="test-query-calls")
            return client

    def caller():
        calls.append(("GetCallerIdentity", None))
        return aws_caller()

    monkeypatch.setattr(query, "Runtime", Recording)
    monkeypatch.setattr(query, "aws_caller", caller)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    task = workload.tasks[0]
    instance = workload.instances[0]
    for argv in (["tasks", "--cluster", "prod-a", "--since", "1h", "--stop-code", EXITED, "--output", "json"],
                 ["tasks", "--cluster", "prod-a", "--service", "web", "--limit", "1", "--all-pages"],
                 ["--cluster-names", "account", "tasks", "--cluster", "prod-a"],
                 ["tasks", "get", task["taskArn"]], ["container-instances", "get", instance["containerInstanceArn"]],
                 ["container-instances", "--cluster", cluster_arn("prod-a"), "--status", "active"], ["clusters"]):
        assert run(capsys, workload, *argv)[0] == 0, argv
    prod = {runtime.current().config.table_name(table): table.default_name for table in ALL}  # (prod's names)
    requests = set()
    for operation, params in calls:
        if operation == "GetCallerIdentity":
            requests.add(("sts:GetCallerIdentity", "*"))
            continue
        for name in params.get("RequestItems") or [params["TableName"]]:
            index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
            requests.add((f"dynamodb:{operation}", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{prod[name]}{index}"))
    assert {action for action, _ in requests} == {"dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:GetItem",
                                                  "sts:GetCallerIdentity"}
    assert {resource for action, resource in requests if action == "dynamodb:Query"} == {
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table.default_name}/index/{index.name}"
        for table in ALL for index in (READ_INDEX, PHASE_INDEX)}
    assert [request for request in sorted(requests)
            if not policy_files.allows(policy["Statement"], *request, {}, {})] == []
    assert not policy_files.allows(policy["Statement"], "dynamodb:GetItem",
                                   f"arn:aws:dynamodb:{REGION}:{OTHER_ACCOUNT}:table/ECSTaskState", {}, {})
