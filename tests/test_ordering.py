"""Any delivery order, any duplicates, any concurrency: the highest version wins.

Proved on Amazon's DynamoDB Local, whose conditional writes are atomic as
DynamoDB's are (moto's in-process backend is not, so it proves nothing here).
"""
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from chalice.local import LambdaContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import app
from chalicelib.tables import TASKS
from tests.helpers import record, stored_item, task_event

deliveries = st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=25)


def expected_outcomes(versions):
    """What each delivery must be called, given the ones before it."""
    highest, outcomes = None, []
    for version in versions:
        if highest is None:
            outcomes.append("created")
        elif version > highest:
            outcomes.append("updated")
        elif version == highest:
            outcomes.append("duplicate")
        else:
            outcomes.append("stale")
        highest = version if highest is None else max(highest, version)
    return outcomes


# One table for all examples (a fresh task per example), hence the function-scoped fixture.
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=deliveries)
def test_any_interleaving_keeps_the_highest_version_and_classifies_each_delivery(dynamodb_local, versions):
    task_id = uuid.uuid4().hex  # a fresh task per example: the table is shared by the examples
    events = [task_event(v, task_id=task_id, lastStatus=f"status-{v}") for v in versions]
    outcomes = [record(event)["outcome"] for event in events]
    assert outcomes == expected_outcomes(versions)
    item = stored_item(dynamodb_local, TASKS, events[0]["detail"]["taskArn"])
    assert item["version"] == max(versions)
    assert item["lastStatus"] == f"status-{max(versions)}"  # the highest version's detail, whole


def deliver_all_at_once(events):
    """Each delivery in its own thread, released together, through the handler as Lambda calls it."""
    handler = app.handler_map["task_state_change"]
    barrier = threading.Barrier(len(events))

    def deliver(event):
        context = LambdaContext("ecs-state-test-task_state_change", memory_size=256)
        barrier.wait()
        return handler(event, context)["outcome"]

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        return list(pool.map(deliver, events))


def test_concurrent_deliveries_never_lose_the_newest_state(dynamodb_local):
    for trial in range(15):
        task_id = uuid.uuid4().hex
        versions = list(range(1, 9)) + [8, 3]  # every version by its own invocation, plus duplicates
        outcomes = deliver_all_at_once(
            [task_event(v, task_id=task_id, lastStatus=f"status-{v}") for v in versions]
        )
        item = stored_item(dynamodb_local, TASKS, task_event(0, task_id=task_id)["detail"]["taskArn"])
        assert (item["version"], item["lastStatus"]) == (8, "status-8"), f"trial {trial}"
        assert outcomes.count("created") == 1
        assert outcomes.count("duplicate") + outcomes.count("stale") + outcomes.count("updated") == len(versions) - 1
        # Exactly one delivery of version 8 wrote it; the other found it stored.
        eights = sorted(outcome for version, outcome in zip(versions, outcomes) if version == 8)
        assert eights in (["created", "duplicate"], ["duplicate", "updated"]), f"trial {trial}: {eights}"
