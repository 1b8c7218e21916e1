"""The two on_cw_event handlers, as Chalice's test client invokes them."""
import json

import pytest
from chalice.test import Client

from app import app
from chalicelib import runtime
from chalicelib.errors import InvalidEvent
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.helpers import container_instance_event, count_requests, logs_and_metrics, stored_item, task_event


@pytest.fixture
def client():
    # A stage with no table variables of its own, so the fixtures' fresh tables apply.
    with Client(app, stage_name="test") as test_client:
        yield test_client


def test_exactly_the_two_named_handlers_subscribe_to_their_ecs_events():
    patterns = {source.name: source.event_pattern for source in app.event_sources if hasattr(source, "event_pattern")}
    assert patterns == {
        "task_state_change": {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"]},
        "container_instance_state_change": {
            "source": ["aws.ecs"], "detail-type": ["ECS Container Instance State Change"],
        },
    }


def test_task_handler_records_a_generated_cw_event(client, dynamodb_local):
    event = client.events.generate_cw_event(
        source="aws.ecs",
        detail_type=TASKS.detail_type,
        detail=task_event(3)["detail"],
        resources=[],
    )
    # Chalice dates its generated events 2015-11-11: far older than the creation window.
    assert client.lambda_.invoke("task_state_change", event).payload["outcome"] == "expired"
    event["time"] = task_event(3)["time"]  # an hour ago
    response = client.lambda_.invoke("task_state_change", event)
    arn = event["detail"]["taskArn"]
    assert response.payload == {"outcome": "created", "kind": "task", "key": arn, "version": 3, "stored_version": None}
    json.dumps(response.payload)  # what Lambda returns must serialise
    # generate_cw_event writes the envelope version as the integer 0; it is stored as given.
    assert stored_item(dynamodb_local, TASKS, arn)["cw_version"] == 0


def test_container_instance_handler_classifies_each_delivery(client, dynamodb_local):
    outcomes = [
        client.lambda_.invoke("container_instance_state_change", container_instance_event(v)).payload["outcome"]
        for v in (2, 1, 2, 3)
    ]
    assert outcomes == ["created", "stale", "duplicate", "updated"]
    arn = container_instance_event(0)["detail"]["containerInstanceArn"]
    assert stored_item(dynamodb_local, CONTAINER_INSTANCES, arn)["version"] == 3


def test_a_bad_event_fails_the_invocation_and_writes_nothing(client, dynamodb_local):
    requests = count_requests(dynamodb_local)
    event = task_event(4, cpu=float("nan"))
    with pytest.raises(InvalidEvent, match=r"detail\.cpu: NaN"):
        client.lambda_.invoke("task_state_change", event)
    assert requests == {}
    assert stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"]) is None


def test_dynamodb_errors_fail_the_invocation(client, dynamodb_local, configure):
    configure(task_table="no-such-table")
    with pytest.raises(Exception) as raised:
        client.lambda_.invoke("task_state_change", task_event(1))
    assert "ResourceNotFoundException" in str(raised.value)


def test_stage_variables_choose_the_tables(dynamodb_local, configure):
    # The dev stage names its own tables in .chalice/config.json; the test client
    # applies them for the invocation, over the fixture's, and the process's first
    # invocation reads them into its Runtime (as Lambda's first one does).
    dev_tasks = json.load(open(".chalice/config.json"))["stages"]["dev"]["environment_variables"][TASKS.name_env]
    dynamodb_local.create_table(**TASKS.create_table_request(dev_tasks))
    runtime.reset()
    with Client(app, stage_name="dev") as dev:
        assert dev.lambda_.invoke("task_state_change", task_event(5)).payload["outcome"] == "created"
    configure(task_table=dev_tasks)
    assert stored_item(dynamodb_local, TASKS, task_event(5)["detail"]["taskArn"])["version"] == 5


def test_one_log_line_and_one_metric_per_event(client, dynamodb_local, capsys, monkeypatch):
    with logs_and_metrics(capsys, monkeypatch) as lines:
        client.lambda_.invoke("task_state_change", task_event(8))
    logs = [line for line in lines if line.get("message") == "event recorded"]
    metrics = [line for line in lines if "_aws" in line]
    assert len(logs) == 1 and logs[0]["outcome"] == "created" and logs[0]["version"] == 8
    assert logs[0]["key"] == task_event(8)["detail"]["taskArn"]
    assert len(metrics) == 1
    definition = metrics[0]["_aws"]["CloudWatchMetrics"][0]
    assert definition["Namespace"] == "ECSState"
    assert definition["Metrics"] == [{"Name": "created", "Unit": "Count"}]
    assert metrics[0]["kind"] == "task"


def test_no_aws_call_and_no_client_at_import(monkeypatch):
    import importlib
    import sys

    import botocore.session

    created = []  # every client, boto3's included, is made by a botocore session
    monkeypatch.setattr(botocore.session.Session, "create_client", lambda self, *args, **kwargs: created.append(args))
    runtime.reset()
    sys.modules.pop("app", None)
    try:
        importlib.import_module("app")
    finally:
        runtime.reset()
    assert created == []
