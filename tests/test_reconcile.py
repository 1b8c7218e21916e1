"""The reconciler against the fake ECS API (tests/fake_ecs.py) and Amazon's DynamoDB Local."""
import os
import threading
import uuid
from typing import Any, Callable, Dict, List

import botocore.exceptions
import botocore.retries.standard
import pytest
from chalice.local import LambdaContext

from app import app
from chalicelib import runtime
from chalicelib.errors import OutOfTime, ReconcileFailed
from chalicelib.model.clock import iso_time, parse_time
from chalicelib.model.lifecycle import expires_at
from chalicelib.reconcile import passes
from chalicelib.reconcile.ecs import EcsReader, Pace
from chalicelib.reconcile.snapshots import TIMESTAMP_FIELDS
from chalicelib.store import StateStore
from chalicelib.store.client import TimeBoxed
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.fake_ecs import FakeECS
from tests.helpers import DAY, count_requests, logs_and_metrics, parse, record, stored_item, table_name
from tools.local_dynamodb import create_tables

METADATA = {"cw_version", "cw_time", "cw_source"}
EVENT_ONLY = {"updatedAt", "accountType"}  # what a snapshot cannot know (chalicelib/reconcile/snapshots.py)


@pytest.fixture
def fake(dynamodb_local, monkeypatch, configure):
    """An empty fake ECS account the app's ECS client talks to, and fresh tables on DynamoDB Local."""
    with FakeECS() as ecs:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", ecs.endpoint)  # (the Runtime makes its ECS client on first use)
        configure(ecs_calls_per_second=20.0)
        yield ecs


def scheduled_event(time="2026-11-22T10:15:00Z") -> Dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "111122223333", "time": time, "region": "us-east-1", "resources": [], "detail": {},
    }


def run_pass(time="2026-11-22T10:15:00Z", budget_seconds=None, ecs=None, dynamodb=None) -> Dict[str, Any]:
    """A pass as the scheduled function runs it, with the installed Runtime; ``ecs`` or ``dynamodb``:
    a client to use instead of the Runtime's (one that changes what the service answers)."""
    process = runtime.current()
    if ecs is None and dynamodb is None:
        return process.reconcile(scheduled_event(time), None, budget_seconds=budget_seconds)
    return passes.reconcile(scheduled_event(time), None, config=process.config, telemetry=process.telemetry,
                            dynamodb=lambda: dynamodb or process.dynamodb(), ecs=lambda: ecs or process.ecs(),
                            now=process.now, monotonic=process.monotonic, budget_seconds=budget_seconds)


class EcsAnswers:
    """The installed Runtime's ECS client, each call answered by ``answer(operation, params, send)``
    (``send()``: ECS's own answer): ECS answering otherwise than the fake does."""

    def __init__(self, answer: Callable[[str, Dict[str, Any], Callable[[], Dict[str, Any]]], Dict[str, Any]]):
        self._client = runtime.current().ecs()
        self._answer = answer

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name == "meta" or not callable(attribute):
            return attribute
        return lambda **params: self._answer(name, params, lambda: attribute(**params))


def comparable(item: Dict[str, Any]) -> Dict[str, Any]:
    return {name: value for name, value in item.items() if name not in METADATA | EVENT_ONLY}


def parse_event(event):
    """``event`` checked and built into its item with the installed Runtime's settings."""
    return parse(event, runtime.current().config.rules)


def event_item(event: Dict[str, Any]) -> Dict[str, Any]:
    """What recording ``event`` would store, without the metadata (compared with a snapshot's)."""
    return comparable({name: value for name, value in parse_event(event).item.items()})


def dynamodb_client():
    """The installed Runtime's DynamoDB client (the app's)."""
    return runtime.current().dynamodb()


def stored_raw(table, key):
    return dynamodb_client().get_item(
        TableName=table_name(table), Key={table.key: {"S": key}}, ConsistentRead=True
    ).get("Item")


def an_account(fake, clusters=("web", "batch")):
    """Each cluster: running and stopped tasks of both launch types, instances of several statuses."""
    tasks, instances = [], []
    for name in clusters:
        fake.add_cluster(name)
        instances += [fake.add_container_instance(name), fake.add_container_instance(name, status="DRAINING")]
        tasks += [fake.add_task(name), fake.add_task(name, launch_type="EC2"),
                  fake.add_task(name, last_status="PENDING"), fake.add_task(name, last_status="STOPPED")]
    return tasks, instances


# -- backfill: the API's state, in the events' shape, at the API's version ------------------


def test_backfill_stores_every_task_and_instance_at_its_version_as_its_event_would(fake):
    tasks, instances = an_account(fake)
    summary = run_pass()
    assert summary["complete"] and summary["errors"] == []
    assert (summary["clusters"], summary["tasks_seen"], summary["container_instances_seen"]) == (2, 8, 4)
    assert summary["written"] == {"created": 12, "updated": 0} and summary["unchanged"] == 0
    for arn in tasks:
        stored = stored_raw(TASKS, arn)
        assert stored["version"] == {"N": str(fake.task(arn)["version"])}
        assert stored["cw_source"] == {"S": "reconcile"}
        assert comparable(stored) == event_item(fake.event_for_task(arn))
    for arn in instances:
        stored = stored_raw(CONTAINER_INSTANCES, arn)
        assert stored["clusterArn"]["S"].endswith(":cluster/" + arn.split("/")[1])
        assert comparable(stored) == event_item(fake.event_for_container_instance(arn))


def test_a_stopped_snapshot_expires_from_the_tasks_own_stoppedAt(fake, configure):
    configure(retention_seconds=14 * DAY)
    fake.add_cluster("web")
    arn = fake.add_task("web", last_status="STOPPED")
    run_pass()
    assert int(stored_item(dynamodb_client(), TASKS, arn)["cw_expires_at"]) == (
        expires_at(fake.task(arn)["stoppedAt"], 14 * 86_400)
    )


def test_snapshot_timestamps_are_every_timestamp_of_botocores_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    found = set()

    def walk(shape, seen):
        if shape.name in seen:
            return
        seen = seen | {shape.name}
        members = shape.members.items() if shape.type_name == "structure" else []
        for name, member in members:
            if member.type_name == "timestamp":
                found.add(name)
            walk(member, seen)
        if shape.type_name == "list":
            walk(shape.member, seen)

    walk(model.shape_for("Task"), set())
    walk(model.shape_for("ContainerInstance"), set())
    assert found == set(TIMESTAMP_FIELDS)


def test_describe_asks_for_at_most_100_and_lists_every_page(fake):
    fake.add_cluster("big")
    arns = [fake.add_task("big") for _ in range(230)] + [fake.add_task("big", last_status="STOPPED") for _ in range(20)]
    summary = run_pass()
    assert summary["tasks_seen"] == 250 and summary["written"]["created"] == 250
    assert fake.max_ids_per_describe <= 100
    assert summary["ecs_calls"]["describe_tasks"] == 3 and summary["ecs_calls"]["list_tasks"] == 4  # 3 + 1 pages
    assert all(stored_raw(TASKS, arn) for arn in arns)


# -- order: a snapshot never lowers a version; a newer event always wins -------------------


def test_a_newer_event_replaces_a_snapshot_and_an_older_one_does_not(fake):
    fake.add_cluster("web")
    arn = fake.add_task("web")
    older = fake.event_for_task(arn)
    run_pass()
    fake.transition_task(arn, "DEACTIVATING")
    newer = fake.event_for_task(arn)
    assert record(older)["outcome"] == "duplicate"  # same version as the snapshot
    assert record(newer)["outcome"] == "updated"
    assert stored_raw(TASKS, arn)["cw_source"] == {"S": "event"}


def test_a_snapshot_at_the_stored_version_writes_nothing(fake):
    fake.add_cluster("web")
    arn = fake.add_task("web")
    record(fake.event_for_task(arn))
    requests = count_requests(dynamodb_client())
    summary = run_pass()
    assert summary["written"] == {"created": 0, "updated": 0} and summary["unchanged"] == 1
    assert "PutItem" not in requests and stored_raw(TASKS, arn)["cw_source"] == {"S": "event"}


def test_a_snapshot_never_lowers_a_version_even_racing_events(fake):
    """Events of versions above the API's land while passes run; the highest version always stays."""
    fake.add_cluster("web")
    arns = [fake.add_task("web") for _ in range(20)]
    snapshot_versions = {arn: fake.task(arn)["version"] for arn in arns}
    newer_events = []
    for arn in arns:
        fake.transition_task(arn, "DEACTIVATING")
        newer_events.append(fake.event_for_task(arn))
    # ECS describes the older state, as if the pass had read it just before the change:
    ecs = described_older(snapshot_versions)
    barrier = threading.Barrier(len(newer_events) + 1)

    def deliver(event):
        barrier.wait()
        record(event)

    threads = [threading.Thread(target=deliver, args=(event,)) for event in newer_events]
    for thread in threads:
        thread.start()
    barrier.wait()
    run_pass(ecs=ecs)
    for thread in threads:
        thread.join()
    for arn in arns:
        assert int(stored_raw(TASKS, arn)["version"]["N"]) == snapshot_versions[arn] + 1


def described_older(versions):
    """ECS describing each task of ``versions`` (ARN: version) at that version, still running."""

    def older(operation, params, send):
        response = send()
        if operation == "describe_tasks":
            response["tasks"] = [{**task, "version": versions[task["taskArn"]], "lastStatus": "RUNNING",
                                  "desiredStatus": "RUNNING"} if task["taskArn"] in versions else task
                                 for task in response["tasks"]]
        return response

    return EcsAnswers(older)


# -- an unchanged account: nothing written --------------------------------------------------


def test_a_second_pass_over_an_unchanged_account_writes_nothing(fake):
    an_account(fake)
    run_pass()
    requests = count_requests(dynamodb_client())
    summary = run_pass()
    assert summary["written"] == {"created": 0, "updated": 0} and summary["unchanged"] == 12
    assert set(requests) <= {"BatchGetItem", "Query"}
    assert requests["BatchGetItem"] == 4  # one per cluster and kind: 100 keys fit one


def test_a_changed_task_is_the_only_one_written(fake):
    tasks, _ = an_account(fake)
    run_pass()
    fake.transition_task(tasks[0], "DEACTIVATING")
    summary = run_pass()
    assert summary["written"] == {"created": 0, "updated": 1} and summary["unchanged"] == 11


class LeavesEveryKeyUnprocessed:
    """A DynamoDB client whose BatchGetItem reads nothing: DynamoDB shedding load, every time."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems):
        return {"Responses": {}, "UnprocessedKeys": RequestItems}


def test_keys_dynamodb_left_unread_are_deferred_never_written_blind(fake, monkeypatch, capsys):
    """A conditional write refused is billed at the stored item's size: no snapshot is written, no
    ghost marked, unless the stored version was read."""
    fake.add_cluster("web")
    for _ in range(50):
        fake.add_task("web")
    ghost = fake.add_task("web")
    run_pass()
    fake.forget_task(ghost)
    client = dynamodb_client()
    requests = count_requests(client)
    with logs_and_metrics(capsys, monkeypatch) as lines:
        summary = run_pass(dynamodb=LeavesEveryKeyUnprocessed(client))
    # No PutItem, no UpdateItem (the unread BatchGetItems are the wrapper's). Per table, a query of
    # the read index, after one of the previous index, which this stage never had (refused, free).
    assert requests == {"Query": 4}
    assert (summary["deferred"], summary["unchanged"], summary["missing"], summary["errors"]) == (51, 0, 0, [])
    assert "cw_missing_since" not in stored_raw(TASKS, ghost)
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["deferred"] == 51 and metrics["reconcile_deferred"] == [51.0]


# -- ghosts ---------------------------------------------------------------------------------


def test_a_task_whose_stopped_event_was_lost_is_marked_not_deleted_and_expires(fake, configure):
    configure(retention_seconds=14 * DAY)
    fake.add_cluster("web")
    arn = fake.add_task("web")
    running_event = fake.event_for_task(arn)
    record(running_event)  # then its STOPPED event is lost, and ECS forgets the task
    fake.transition_task(arn, "STOPPED")
    fake.forget_task(arn)
    configure(now=lambda: 1_800_000_000.0)
    summary = run_pass()
    assert summary["missing"] == 1
    item = stored_item(dynamodb_client(), TASKS, arn)
    assert item["version"] == running_event["detail"]["version"] and item["lastStatus"] == "RUNNING"
    assert item["cw_missing_since"] == iso_time(1_800_000_000)
    assert item["cw_expires_at"] == expires_at(1_800_000_000, 14 * 86_400)
    requests = count_requests(dynamodb_client())
    assert run_pass()["missing"] == 0 and "UpdateItem" not in requests  # marked once


def lost_stop(fake):
    """A running task recorded from its event, whose STOPPED event is then lost and which ECS
    forgets: its ARN and the lost event."""
    fake.add_cluster("web")
    arn = fake.add_task("web")
    record(fake.event_for_task(arn))
    fake.transition_task(arn, "STOPPED")
    stopped = fake.event_for_task(arn)
    fake.forget_task(arn)
    return arn, stopped


def test_a_later_event_clears_the_mark(fake):
    arn, stopped = lost_stop(fake)
    run_pass()
    assert "cw_missing_since" in stored_raw(TASKS, arn)
    assert record(stopped)["outcome"] == "updated"  # the lost event, redriven at last
    item = stored_raw(TASKS, arn)
    assert "cw_missing_since" not in item and item["lastStatus"] == {"S": "STOPPED"}


def test_an_event_that_races_in_first_wins_over_the_mark(fake, monkeypatch):
    arn, stopped = lost_stop(fake)
    mark_missing = StateStore.mark_missing

    def event_lands_first(store, *args, **kwargs):
        record(stopped)
        return mark_missing(store, *args, **kwargs)

    monkeypatch.setattr(StateStore, "mark_missing", event_lands_first)
    assert run_pass()["missing"] == 0
    item = stored_raw(TASKS, arn)
    assert "cw_missing_since" not in item and item["lastStatus"] == {"S": "STOPPED"}


def test_a_deregistered_instance_ecs_still_describes_is_healed_not_marked(fake):
    fake.add_cluster("batch")
    arn = fake.add_container_instance("batch")
    run_pass()
    fake.deregister_container_instance(arn)  # its event lost; no longer listed, still describable
    summary = run_pass()
    assert summary["missing"] == 0 and summary["written"]["updated"] == 1
    item = stored_raw(CONTAINER_INSTANCES, arn)
    assert item["status"] == {"S": "INACTIVE"} and "cw_expires_at" in item and item["cw_phase"] == {"S": "finished"}


def test_an_instance_ecs_forgot_is_marked(fake):
    fake.add_cluster("batch")
    arn = fake.add_container_instance("batch")
    run_pass()
    fake.deregister_container_instance(arn)
    fake.forget_container_instance(arn)
    assert run_pass()["missing"] == 1
    assert "cw_missing_since" in stored_raw(CONTAINER_INSTANCES, arn)


def test_finished_and_listed_items_are_never_ghosts(fake):
    tasks, _ = an_account(fake)
    run_pass()
    for arn in tasks:
        if fake.task(arn)["lastStatus"] == "STOPPED":
            fake.forget_task(arn)  # finished: not in the open phase, nothing to confirm
    summary = run_pass()
    assert summary["missing"] == 0 and summary["ecs_calls"]["describe_tasks"] == 2  # the listed ones only


def without_the_read_index(configure, monkeypatch, segments=1):
    """The stage without the read index, on tables of its own; the sweep covers them in ``segments`` passes."""
    configure(read_index=False, **{f"{table.kind}_table": table_name(table) + "-bare" for table in (TASKS, CONTAINER_INSTANCES)})
    client = dynamodb_client()
    create_tables(client, {table: table_name(table) for table in (TASKS, CONTAINER_INSTANCES)}, read_index=False)
    monkeypatch.setattr(passes, "SWEEP_SEGMENTS", segments)
    return client


def forgotten_tasks(fake, cluster, count):
    """``count`` running tasks of ``cluster`` recorded from their events, which ECS then forgets (ghosts)."""
    fake.add_cluster(cluster)
    arns = [fake.add_task(cluster) for _ in range(count)]
    for arn in arns:
        record(fake.event_for_task(arn))
        fake.forget_task(arn)
    return arns


def test_without_the_read_index_ghosts_are_found_by_the_sweep(fake, configure, monkeypatch):
    without_the_read_index(configure, monkeypatch, segments=2)
    fake.add_cluster("web")
    arns = [fake.add_task("web") for _ in range(6)]
    run_pass()
    for arn in arns:
        fake.transition_task(arn, "STOPPED")
        fake.forget_task(arn)
    requests = count_requests(dynamodb_client())
    found = [run_pass(time=f"2026-11-22T10:{minute}:00Z")["missing"] for minute in ("15", "30")]  # two segments
    assert sum(found) == 6
    assert "Query" not in requests and requests["Scan"] >= 2
    assert all("cw_missing_since" in stored_raw(TASKS, arn) for arn in arns)


def test_without_the_read_index_a_cluster_that_fails_does_not_stop_the_sweep(fake, configure, monkeypatch):
    """A stale cluster name in the settings fails the pass, but the other clusters' ghosts are marked."""
    without_the_read_index(configure, monkeypatch)
    ghosts = forgotten_tasks(fake, "web", 3)
    configure(reconcile_clusters=("web", "old-cluster"))
    with pytest.raises(ReconcileFailed, match="old-cluster: no such cluster") as failed:
        run_pass()
    assert failed.value.summary["missing"] == 3 and not failed.value.summary["complete"]
    assert all("cw_missing_since" in stored_raw(TASKS, arn) for arn in ghosts)


def test_the_sweep_goes_on_with_the_other_clusters_when_one_fails(fake, configure, monkeypatch):
    without_the_read_index(configure, monkeypatch)
    forgotten_tasks(fake, "a", 2)
    ghosts = forgotten_tasks(fake, "b", 2)
    describe = EcsReader.describe_tasks

    def bug_in_a(reader, cluster, arns):  # only the sweep describes in a: ECS lists nothing there
        if cluster.endswith("/a"):
            raise RuntimeError("a bug")
        return describe(reader, cluster, arns)

    monkeypatch.setattr(EcsReader, "describe_tasks", bug_in_a)
    with pytest.raises(ReconcileFailed) as failed:
        run_pass()
    summary = failed.value.summary
    assert summary["errors"] == [f"{fake.add_cluster('a')}: RuntimeError: a bug"] and summary["missing"] == 2
    assert all("cw_missing_since" in stored_raw(TASKS, arn) for arn in ghosts)


def test_a_pass_ecs_throttles_beyond_its_retries_does_not_sweep(fake, configure, monkeypatch):
    """ECS's bucket is the account's: after a throttled cluster the sweep's describes would be throttled too."""
    without_the_read_index(configure, monkeypatch)
    forgotten_tasks(fake, "web", 1)

    def throttled(reader, cluster):
        raise botocore.exceptions.ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                                              "ListContainerInstances")

    monkeypatch.setattr(EcsReader, "container_instance_arns", throttled)
    requests = count_requests(dynamodb_client())
    with pytest.raises(ReconcileFailed, match="ThrottlingException") as failed:
        run_pass()
    assert failed.value.summary["missing"] == 0 and "Scan" not in requests


def ecs_forgets_for_a_moment(arn, described=False):
    """ECS leaving ``arn`` out of every listing and (unless ``described``) answering MISSING when
    asked to describe it, though it still knows it: as its API may for a moment."""

    def forgetful(operation, params, send):
        response = send()
        for member in ("taskArns", "containerInstanceArns"):
            if member in response:
                response[member] = [listed for listed in response[member] if listed != arn]
        for member, key in (("tasks", "taskArn"), ("containerInstances", "containerInstanceArn")):
            if not described and any(found[key] == arn for found in response.get(member, [])):
                response[member] = [found for found in response[member] if found[key] != arn]
                response["failures"] = response.get("failures", []) + [{"arn": arn, "reason": "MISSING"}]
        return response

    return EcsAnswers(forgetful)


def a_task_marked_by_mistake(fake):
    """A running task recorded from its event, marked a ghost by a pass in which ECS answered MISSING for it."""
    fake.add_cluster("web")
    arn = fake.add_task("web")
    record(fake.event_for_task(arn))
    assert run_pass(ecs=ecs_forgets_for_a_moment(arn))["missing"] == 1
    assert {"cw_missing_since", "cw_expires_at"} <= set(stored_raw(TASKS, arn))
    return arn


def test_a_mark_goes_when_ecs_lists_the_item_again_at_the_same_version(fake):
    arn = a_task_marked_by_mistake(fake)
    before = stored_raw(TASKS, arn)
    requests = count_requests(dynamodb_client())
    summary = run_pass()  # ECS lists it again, at the version stored
    assert (summary["cleared"], summary["unchanged"], summary["written"]) == (1, 0, {"created": 0, "updated": 0})
    assert requests.get("UpdateItem") == 1 and "PutItem" not in requests  # one conditioned write, the mark only
    after = stored_raw(TASKS, arn)
    assert after == {name: value for name, value in before.items() if name not in ("cw_missing_since", "cw_expires_at")}
    requests.clear()
    summary = run_pass()  # nothing left to clear: reads only
    assert (summary["cleared"], summary["unchanged"]) == (0, 1) and set(requests) <= {"BatchGetItem", "Query"}
    assert stored_raw(TASKS, arn) == after


def test_a_mark_goes_when_ecs_describes_the_item_again_though_it_does_not_list_it(fake):
    arn = a_task_marked_by_mistake(fake)
    summary = run_pass(ecs=ecs_forgets_for_a_moment(arn, described=True))
    assert summary["cleared"] == 1 and summary["ecs_calls"]["describe_tasks"] == 1  # the ghost, described again
    assert not {"cw_missing_since", "cw_expires_at"} & set(stored_raw(TASKS, arn))


def test_a_ghost_still_missing_is_described_again_but_not_written(fake):
    arn, _ = lost_stop(fake)
    assert run_pass()["missing"] == 1
    marked = stored_raw(TASKS, arn)
    requests = count_requests(dynamodb_client())
    summary = run_pass()
    assert (summary["missing"], summary["cleared"], summary["ecs_calls"]["describe_tasks"]) == (0, 0, 1)
    assert set(requests) <= {"BatchGetItem", "Query"} and stored_raw(TASKS, arn) == marked


def test_clearing_a_mark_never_undoes_a_newer_event(fake, monkeypatch):
    """The task stops, and its STOPPED event lands between the pass's read and its clearing write."""
    arn = a_task_marked_by_mistake(fake)
    fake.transition_task(arn, "STOPPED")
    stopped = fake.event_for_task(arn)
    clear_missing = StateStore.clear_missing

    def event_lands_first(store, *args, **kwargs):
        assert record(stopped)["outcome"] == "updated"
        return clear_missing(store, *args, **kwargs)

    monkeypatch.setattr(StateStore, "clear_missing", event_lands_first)
    # ECS lists it, and describes it as it was at the stored version (just before it stopped):
    summary = run_pass(ecs=described_older({arn: int(stopped["detail"]["version"]) - 1}))
    assert summary["cleared"] == 0
    item = stored_item(dynamodb_client(), TASKS, arn)
    assert item["lastStatus"] == "STOPPED" and "cw_missing_since" not in item
    assert item["cw_expires_at"] == expires_at(
        parse_time(stopped["detail"]["stoppedAt"], "stoppedAt"), runtime.current().config.retention_seconds
    )


def test_a_finished_item_is_never_marked_and_keeps_its_own_expiry(fake):
    fake.add_cluster("web")
    arn = fake.add_task("web", last_status="STOPPED")
    record(fake.event_for_task(arn))
    stored = stored_raw(TASKS, arn)
    process = runtime.current()
    store = StateStore(process.dynamodb(), process.config)
    assert not store.mark_missing(TASKS, arn, int(stored["version"]["N"]), process.now())
    assert stored_raw(TASKS, arn) == stored


# -- time budget and rotation ------------------------------------------------------------------


def test_a_pass_short_of_time_stops_cleanly_and_later_passes_cover_every_cluster(fake, configure, monkeypatch):
    for number in range(5):
        fake.add_cluster(f"c{number}")
        fake.add_task(f"c{number}")
    clock = {"now": 0.0}
    configure(monotonic=lambda: clock["now"])
    list_tasks = EcsReader.task_arns

    def slow_listing(reader, cluster, desired):
        clock["now"] += 10  # each listing takes 10 s: a 25 s budget covers one cluster
        return list_tasks(reader, cluster, desired)

    monkeypatch.setattr(EcsReader, "task_arns", slow_listing)
    covered, firsts = set(), []
    for time in ("10:00", "10:15", "10:30", "10:45", "11:00"):  # five consecutive passes
        clock["now"] = 0.0
        summary = run_pass(time=f"2026-11-22T{time}:00Z", budget_seconds=25)
        assert not summary["complete"] and summary["errors"] == [] and summary["clusters"] == 1
        firsts.append(summary["first_cluster"])
        covered |= {item["clusterArn"]["S"] for item in _all_items(TASKS)}
    assert len(set(firsts)) == 5 and len(covered) == 5


class SlowDynamoDB:
    """A DynamoDB client each of whose requests takes ``seconds`` of the pass's clock (moved, not slept)."""

    def __init__(self, client, clock, seconds):
        self._client, self._clock, self._seconds = client, clock, seconds

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name == "meta" or not callable(attribute):
            return attribute

        def request(*args, **kwargs):
            self._clock["now"] += self._seconds
            return attribute(*args, **kwargs)

        return request


def test_a_slow_dynamodb_stops_the_pass_within_its_budget_with_nothing_half_written(fake, configure):
    fake.add_cluster("web")
    arns = [fake.add_task("web") for _ in range(100)]
    clock = {"now": 0.0}
    configure(monotonic=lambda: clock["now"])
    summary = run_pass(budget_seconds=2, dynamodb=SlowDynamoDB(dynamodb_client(), clock, 0.1))
    assert not summary["complete"] and summary["errors"] == []
    assert summary["duration_ms"] <= 2100  # the budget, and at most the one request under way when it ran out
    written = [arn for arn in arns if stored_raw(TASKS, arn)]
    assert 0 < len(written) == summary["written"]["created"] < 100
    assert all(comparable(stored_raw(TASKS, arn)) == event_item(fake.event_for_task(arn)) for arn in written)


def _all_items(table) -> List[Dict[str, Any]]:
    return dynamodb_client().scan(TableName=table_name(table))["Items"]


def test_the_lambda_budget_is_the_remaining_time_less_the_margin(fake, monkeypatch):
    fake.add_cluster("web")
    fake.add_task("web")
    context = LambdaContext("ecs-state-test-reconcile", 256, max_runtime_ms=(passes.STOP_MARGIN_SECONDS - 1) * 1000)
    summary = app.handler_map["reconcile"](scheduled_event(), context)
    assert summary["complete"] is False and summary["clusters"] == 0  # no time left for even ListClusters
    assert fake.calls == {}


# -- throttling ------------------------------------------------------------------------------


@pytest.fixture
def no_backoff_sleep(monkeypatch):
    """botocore's backoff delays, as computed, without sleeping them; returns the list of them."""
    delays = []
    delay_amount = botocore.retries.standard.ExponentialBackoff.delay_amount

    def record(self, context):
        delays.append(delay_amount(self, context))
        return 0

    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", record)
    return delays


@pytest.mark.real_clock  # botocore's adaptive rate limiter, once throttled, waits on a timed Condition
def test_throttling_is_retried_with_backoff_and_the_pass_completes(fake, no_backoff_sleep):
    an_account(fake)
    fake.throttle(2, operation="DescribeTasks")
    summary = run_pass()
    assert summary["complete"] and summary["written"]["created"] == 12
    assert fake.calls["DescribeTasks"] == summary["ecs_calls"]["describe_tasks"] + 2
    assert len(no_backoff_sleep) == 2 and all(delay > 0 for delay in no_backoff_sleep)
    assert runtime.current().ecs().meta.config.retries["mode"] == "adaptive"  # and slows its rate after a throttle


@pytest.mark.real_clock  # botocore's adaptive rate limiter, once throttled, waits on a timed Condition
def test_a_pass_throttled_beyond_its_retries_fails_and_leaves_nothing_half_written(fake, no_backoff_sleep):
    tasks, instances = an_account(fake, clusters=("a", "b", "c"))
    fake.throttle(10**6, operation="DescribeContainerInstances")
    with pytest.raises(ReconcileFailed) as failed:
        run_pass()
    summary = failed.value.summary
    assert not summary["complete"] and "ThrottlingException" in summary["errors"][0]
    assert len(summary["errors"]) == 1  # it stopped at the first throttled cluster
    first = summary["first_cluster"].rsplit("/", 1)[-1]
    # The first cluster's tasks were whole-item writes before its instances failed; nothing else changed.
    for arn in tasks:
        item = stored_raw(TASKS, arn)
        if arn.split("/")[1] == first:
            assert comparable(item) == event_item(fake.event_for_task(arn))
        else:
            assert item is None
    assert all(stored_raw(CONTAINER_INSTANCES, arn) is None for arn in instances)


# -- settings, summary, log and metrics --------------------------------------------------------


def test_the_stage_can_restrict_the_clusters_by_name_or_arn(fake, configure):
    for name in ("web", "batch", "other"):
        fake.add_cluster(name)
        fake.add_task(name)
    configure(reconcile_clusters=("web", fake.add_cluster("batch")))
    summary = run_pass()
    assert summary["clusters"] == 2 and summary["clusters_in_account"] == 3
    assert {item["clusterArn"]["S"].rsplit("/", 1)[-1] for item in _all_items(TASKS)} == {"web", "batch"}


def test_a_named_cluster_that_does_not_exist_fails_the_pass_by_name(fake, configure):
    fake.add_cluster("web")
    configure(reconcile_clusters=("web", "typo"))
    with pytest.raises(ReconcileFailed, match="typo: no such cluster"):
        run_pass()


def test_the_handler_returns_and_logs_the_summary_with_a_metric_per_count(fake, monkeypatch, capsys):
    import json

    an_account(fake)
    with logs_and_metrics(capsys, monkeypatch) as lines:
        context = LambdaContext("ecs-state-test-reconcile", 256, max_runtime_ms=300_000)
        summary = app.handler_map["reconcile"](scheduled_event(), context)
    for name in ("clusters", "tasks_seen", "container_instances_seen", "written", "unchanged", "missing", "complete", "duration_ms"):
        assert name in summary
    json.dumps(summary)
    (logged,) = [line for line in lines if line.get("message") == "reconcile pass"]
    assert logged["tasks_seen"] == 8 and logged["written"] == {"created": 12, "updated": 0}
    (metrics,) = [line for line in lines if "_aws" in line]
    names = {metric["Name"] for metric in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"reconcile_clusters", "reconcile_tasks_seen", "reconcile_created", "reconcile_missing",
            "reconcile_duration"} <= names
    assert metrics["reconcile_created"] == [12.0]


# -- one bad item, one bad cluster: counted, logged, and the pass goes on -------------------------


def reconcile_pass_lines(lines):
    """The pass's log line and its metrics (EMF) line."""
    (logged,) = [line for line in lines if line.get("message") == "reconcile pass"]
    (metrics,) = [line for line in lines if "reconcile_failed" in line]
    return logged, metrics


def test_another_writers_fractional_version_is_refused_by_the_sweep_and_the_pass_goes_on(fake, configure, monkeypatch,
                                                                                          capsys):
    client = without_the_read_index(configure, monkeypatch)  # every pass sweeps the whole table
    fake.add_cluster("web")
    ghost = fake.add_task("web")
    record(fake.event_for_task(ghost))
    fake.forget_task(ghost)
    odd = dict(parse_event(fake.event_for_task(fake.add_task("web"))).item, version={"N": "5.5"})  # another writer's
    fake.forget_task(odd["taskArn"]["S"])
    client.put_item(TableName=table_name(TASKS), Item=odd)
    with logs_and_metrics(capsys, monkeypatch) as lines:
        summary = run_pass()
    assert (summary["missing"], summary["refused"], summary["errors"]) == (1, 1, [])
    assert odd["taskArn"]["S"] in summary["refusals"][0] and "cw_missing_since" in stored_raw(TASKS, ghost)
    assert stored_raw(TASKS, odd["taskArn"]["S"]) == odd  # left alone
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["refusals"] == summary["refusals"] and metrics["reconcile_refused"] == [1.0]


class RefusesOneItem:
    """A DynamoDB client that answers PutItem for one key as DynamoDB answers an item over 400 KB."""

    def __init__(self, client, key):
        self._client, self._key = client, key

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_item(self, **request):
        if request["Item"]["taskArn"]["S"] == self._key:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "ValidationException", "Message": "Item size has exceeded the maximum allowed size"}},
                "PutItem")
        return self._client.put_item(**request)


def test_an_item_dynamodb_refuses_for_its_size_is_counted_and_the_pass_goes_on(fake, monkeypatch, capsys):
    fake.add_cluster("web")
    too_large, fine = fake.add_task("web"), fake.add_task("web")  # the refused one first
    with logs_and_metrics(capsys, monkeypatch) as lines:
        summary = run_pass(dynamodb=RefusesOneItem(dynamodb_client(), too_large))
    assert (summary["written"]["created"], summary["refused"], summary["errors"]) == (1, 1, [])
    assert too_large in summary["refusals"][0] and "maximum allowed size" in summary["refusals"][0]
    assert stored_raw(TASKS, fine) and stored_raw(TASKS, too_large) is None
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["refused"] == 1 and metrics["reconcile_refused"] == [1.0] and metrics["reconcile_failed"] == [0.0]


def test_a_stored_key_ecs_cannot_be_asked_about_is_refused_and_the_cluster_goes_on(fake):
    """Ghost candidates come from the table, where any writer may have put any key; ECS refuses
    a whole Describe call for an ARN of another account or region (tests/fake_ecs.py)."""
    web = fake.add_cluster("web")
    template = fake.add_task("web")
    item = parse_event(fake.event_for_task(template)).item  # unfinished, in web
    fake.forget_task(template)
    listed, (ghost,) = fake.add_task("web"), forgotten_tasks(fake, "web", 1)
    task_id = uuid.uuid4().hex
    old_format = f"arn:aws:ecs:us-east-1:111122223333:task/{task_id}"  # no cluster in it: ECS may know it
    foreign = [
        f"arn:aws:ecs:us-east-1:444455556666:task/web/{task_id}",  # another account
        f"arn:aws:ecs:eu-west-1:111122223333:task/web/{task_id}",  # another region
        f"arn:aws:ecs:us-east-1:111122223333:container-instance/web/{task_id}",  # not a task
        f"arn:aws:ecs:us-east-1:111122223333:task/batch/{task_id}",  # another cluster's
        f"web/{task_id}",  # not an ARN
    ]
    for key in foreign + [old_format]:
        dynamodb_client().put_item(TableName=table_name(TASKS), Item={**item, "taskArn": {"S": key}})
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidParameterException"):
        runtime.current().ecs().describe_tasks(cluster=web, tasks=[foreign[0]])  # the whole call, as ECS answers it
    summary = run_pass()
    assert (summary["errors"], summary["clusters"], summary["refused"], summary["missing"]) == ([], 1, 5, 2)
    assert all(any(key in refusal for refusal in summary["refusals"]) for key in foreign)
    assert summary["ecs_calls"]["describe_tasks"] == 2  # the listed task; the ghost and the old-format key
    assert stored_raw(TASKS, listed) and {"cw_missing_since"} <= set(stored_raw(TASKS, ghost)) & set(stored_raw(TASKS, old_format))
    assert all("cw_missing_since" not in stored_raw(TASKS, key) for key in foreign)


def test_a_describe_ecs_refuses_is_split_and_only_the_key_it_refuses_is_refused(fake):
    ghosts = forgotten_tasks(fake, "web", 3)
    odd = ghosts[1]

    def refuses_odd(operation, params, send):
        if odd in params.get("tasks", []):
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InvalidParameterException", "Message": "Invalid identifier"}}, "DescribeTasks")
        return send()

    summary = run_pass(ecs=EcsAnswers(refuses_odd))
    assert (summary["errors"], summary["refused"], summary["missing"]) == ([], 1, 2)
    assert odd in summary["refusals"][0] and "InvalidParameterException" in summary["refusals"][0]
    assert all(("cw_missing_since" in stored_raw(TASKS, arn)) == (arn != odd) for arn in ghosts)


class TaskReadWithABug(dict):
    """A described task whose fields ecs-state's code fails to read, as with a bug: KeyError."""

    def items(self):
        raise KeyError("containers")


def test_an_unexpected_error_on_one_item_fails_the_pass_only_after_the_rest_is_done(fake, monkeypatch, capsys):
    fake.add_cluster("web")
    broken, fine = fake.add_task("web"), fake.add_task("web")

    def bug_on_one(operation, params, send):
        response = send()
        if operation == "describe_tasks":
            response["tasks"] = [TaskReadWithABug(task) if task["taskArn"] == broken else task for task in response["tasks"]]
        return response

    with logs_and_metrics(capsys, monkeypatch) as lines, pytest.raises(ReconcileFailed) as failed:
        run_pass(ecs=EcsAnswers(bug_on_one))
    summary = failed.value.summary
    assert summary["written"]["created"] == 1 and stored_raw(TASKS, fine) and summary["complete"]
    assert summary["refused"] == 1 and broken in summary["refusals"][0] and "KeyError" in summary["refusals"][0]
    assert broken in summary["errors"][0]
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["level"] == "ERROR" and logged["errors"] == summary["errors"] and metrics["reconcile_failed"] == [1.0]
    assert any(line.get("key") == broken and "KeyError" in line.get("exception", "") for line in lines)  # its traceback


def test_an_unexpected_error_in_one_cluster_fails_it_and_the_others_are_done(fake, monkeypatch, capsys):
    for name in ("a", "b"):
        fake.add_cluster(name)
        fake.add_task(name)
    listing = EcsReader.container_instance_arns

    def bug_in_a(reader, cluster):
        if cluster.endswith("/a"):
            raise RuntimeError("a bug")
        return listing(reader, cluster)

    monkeypatch.setattr(EcsReader, "container_instance_arns", bug_in_a)
    with logs_and_metrics(capsys, monkeypatch) as lines, pytest.raises(ReconcileFailed) as failed:
        run_pass()
    summary = failed.value.summary
    assert summary["clusters"] == 1 and not summary["complete"]
    assert len(summary["errors"]) == 1 and summary["errors"][0].endswith("/a: RuntimeError: a bug")
    assert {item["clusterArn"]["S"].rsplit("/", 1)[-1] for item in _all_items(TASKS)} == {"a", "b"}  # a's tasks were done
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["errors"] == summary["errors"] and metrics["reconcile_failed"] == [1.0]


def test_a_pass_that_cannot_start_still_logs_its_summary_and_metrics(fake, monkeypatch, capsys):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):  # its ECS client cannot be made: no region
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # (nor a profile's)
    with logs_and_metrics(capsys, monkeypatch) as lines, pytest.raises(ReconcileFailed, match="region"):
        run_pass()
    logged, metrics = reconcile_pass_lines(lines)
    assert logged["level"] == "ERROR" and not logged["complete"] and metrics["reconcile_failed"] == [1.0]
    assert fake.calls == {}


# -- the ECS reader ------------------------------------------------------------------------------


class _Client:
    """A client answering DescribeTasks with ``response``."""

    def __init__(self, response):
        self.response = response

    def describe_tasks(self, **params):
        return self.response


def test_an_arn_in_neither_tasks_nor_failures_is_gone_but_another_failure_reason_is_not():
    reader = EcsReader(_Client({"tasks": [{"taskArn": "a"}], "failures": [{"arn": "b", "reason": "MISSING"},
                                                                            {"arn": "c", "reason": "ACCESS_DENIED"}]}),
                       Pace(1000))
    described, gone = reader.describe_tasks("cluster", ["a", "b", "c", "d"])
    assert [task["taskArn"] for task in described] == ["a"] and gone == ["b", "d"]


def test_more_than_100_arns_are_refused_before_any_call():
    with pytest.raises(ValueError, match="100"):
        EcsReader(_Client({}), Pace(1000)).describe_tasks("cluster", [str(n) for n in range(101)])


def test_the_pace_spaces_calls_evenly():
    now = {"t": 0.0}
    slept = []
    pace = Pace(10, clock=lambda: now["t"], sleep=lambda seconds: (slept.append(seconds), now.__setitem__("t", now["t"] + seconds)))
    for _ in range(5):
        pace.wait()
    assert slept == pytest.approx([0.1] * 4)


def test_no_call_once_the_time_is_up():
    reader = EcsReader(_Client({}), Pace(1000), time_left=lambda: False)
    with pytest.raises(OutOfTime):
        reader.describe_tasks("cluster", ["a"])


def test_no_dynamodb_request_once_the_time_is_up():
    sent = []

    class Client:
        meta = "its meta"

        def scan(self, **request):
            sent.append(request)
            return {}

    assert TimeBoxed(Client(), lambda: True).scan(Segment=0) == {} and sent == [{"Segment": 0}]
    boxed = TimeBoxed(Client(), lambda: False)
    with pytest.raises(OutOfTime):
        boxed.scan(Segment=1)
    assert sent == [{"Segment": 0}] and boxed.meta == "its meta"
