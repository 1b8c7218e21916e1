"""Finished items expire; no event ever brings back what TTL deleted, whatever the retention did."""
import pytest

from chalicelib import runtime
from chalicelib.config import RETENTION_DAYS_ENV
from chalicelib.tables import ALL, CONTAINER_INSTANCES, TASKS
from tests.helpers import (
    DAY,
    EVENT_TIME,
    HOUR,
    container_instance_event,
    count_requests,
    iso,
    record,
    stored_item,
    table_name,
    task_event,
)

ARN = task_event(1)["detail"]["taskArn"]


@pytest.fixture
def retention_14_days(dynamodb, configure):
    configure(retention_seconds=14 * DAY, high_water_entries=0)  # every event asks DynamoDB


def days_after_the_events(configure, days):
    configure(now=lambda: EVENT_TIME + days * DAY)


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_tables_expire_items_on_cw_expires_at(dynamodb, table):
    description = dynamodb.describe_time_to_live(TableName=table_name(table))["TimeToLiveDescription"]
    assert (description["TimeToLiveStatus"], description["AttributeName"]) == ("ENABLED", "cw_expires_at")


def test_a_stopped_task_carries_its_expiry_and_a_running_one_none(dynamodb, retention_14_days):
    record(task_event(3))
    assert "cw_expires_at" not in stored_item(dynamodb, TASKS, ARN)
    stopped_at = EVENT_TIME - 30
    record(task_event(4, lastStatus="STOPPED", stoppedAt=iso(stopped_at + 0.125)))
    # 14 days' retention is under the delivery horizon: the item stays 16 days, plus the hour.
    assert stored_item(dynamodb, TASKS, ARN)["cw_expires_at"] == int(stopped_at) + 16 * DAY + HOUR


def test_a_deregistered_instance_carries_its_expiry(dynamodb, retention_14_days):
    event = container_instance_event(9, status="INACTIVE")
    record(event)
    item = stored_item(dynamodb, CONTAINER_INSTANCES, event["detail"]["containerInstanceArn"])
    assert item["cw_expires_at"] == int(EVENT_TIME) + 16 * DAY + HOUR


def test_an_old_event_for_an_unknown_key_is_expired_and_writes_nothing(dynamodb, retention_14_days, configure):
    days_after_the_events(configure, 14)
    requests = count_requests(dynamodb)
    summary = record(task_event(2, lastStatus="RUNNING"))
    assert summary == {"outcome": "expired", "kind": "task", "key": ARN, "version": 2, "stored_version": None}
    assert requests == {"PutItem": 1}  # still exactly one request
    assert stored_item(dynamodb, TASKS, ARN) is None


def test_an_old_event_for_a_known_key_still_updates_it(dynamodb, retention_14_days, configure):
    record(task_event(2))
    days_after_the_events(configure, 30)
    assert record(task_event(5, lastStatus="STOPPED"))["outcome"] == "updated"
    assert record(task_event(4))["outcome"] == "stale"
    assert record(task_event(5))["outcome"] == "duplicate"
    assert stored_item(dynamodb, TASKS, ARN)["lastStatus"] == "STOPPED"


def test_an_event_just_younger_than_the_retention_still_creates(dynamodb, retention_14_days, configure):
    days_after_the_events(configure, 14 - 1 / DAY)
    assert record(task_event(2))["outcome"] == "created"


def test_the_expired_outcome_is_counted_and_logged_like_the_others(dynamodb, retention_14_days, configure, monkeypatch):
    days_after_the_events(configure, 20)
    telemetry = runtime.current().telemetry
    counted, logged = [], []
    monkeypatch.setattr(telemetry, "count", lambda outcome, kind: counted.append((outcome, kind)))
    monkeypatch.setattr(telemetry, "log_result", lambda summary, request_id: logged.append(summary["outcome"]))
    record(task_event(2))
    assert counted == [("expired", "task")] and logged == ["expired"]


@pytest.mark.parametrize("days", ["1", "0", "-3", "two"])
def test_a_retention_under_two_days_is_refused_by_name(monkeypatch, days):
    monkeypatch.setenv(RETENTION_DAYS_ENV, days)
    runtime.reset()  # the process's first event reads the stage's settings
    with pytest.raises(ValueError, match=RETENTION_DAYS_ENV):
        record(task_event(1))


@pytest.mark.parametrize("first_days, then_days", [(2, 14), (2, 400), (14, 30), (20, 400), (400, 2)])
def test_no_change_of_the_retention_brings_back_what_ttl_deleted(dynamodb, configure, first_days, then_days):
    """Stored under one retention, deleted by TTL at its earliest, then every event of the task
    redriven under another retention: none creates the item again."""
    configure(high_water_entries=0, retention_seconds=first_days * DAY)
    lifecycle = [task_event(2, lastStatus="PENDING"), task_event(3),
                 task_event(4, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))]
    for event in lifecycle:
        record(event)
    expires_at = stored_item(dynamodb, TASKS, ARN)["cw_expires_at"]
    days_after_the_events(configure, (int(expires_at) - EVENT_TIME) / DAY)  # the earliest TTL may delete it
    dynamodb.delete_item(TableName=table_name(TASKS), Key={"taskArn": {"S": ARN}})
    configure(retention_seconds=then_days * DAY)
    assert [record(event)["outcome"] for event in lifecycle] == ["expired"] * 3
    assert stored_item(dynamodb, TASKS, ARN) is None


def test_a_redriven_event_younger_than_the_window_still_creates_under_a_raised_retention(dynamodb, configure):
    """The other side: what was never stored is created by a redrive within the window."""
    configure(retention_seconds=30 * DAY)
    days_after_the_events(configure, 15)  # the dead-letter queue still holds it
    assert record(task_event(3))["outcome"] == "created"
