"""Finished items expire; no event ever brings back what TTL deleted, whatever the retention did."""
import pytest

from chalicelib import events, recorder, settings
from chalicelib.tables import ALL, CONTAINER_INSTANCES, TASKS
from tests.helpers import (
    DAY,
    EVENT_TIME,
    HOUR,
    container_instance_event,
    count_requests,
    iso,
    stored_item,
    task_event,
)

ARN = task_event(1)["detail"]["taskArn"]


@pytest.fixture
def retention_14_days(monkeypatch):
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, "14")
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "0")  # every event asks DynamoDB


def days_after_the_events(monkeypatch, days):
    monkeypatch.setattr(events, "now", lambda: EVENT_TIME + days * DAY)


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_tables_expire_items_on_cw_expires_at(dynamodb, table):
    description = dynamodb.describe_time_to_live(TableName=settings.table_name(table))["TimeToLiveDescription"]
    assert (description["TimeToLiveStatus"], description["AttributeName"]) == ("ENABLED", "cw_expires_at")


def test_a_stopped_task_carries_its_expiry_and_a_running_one_none(dynamodb, retention_14_days):
    recorder.record(task_event(3))
    assert "cw_expires_at" not in stored_item(dynamodb, TASKS, ARN)
    stopped_at = EVENT_TIME - 30
    recorder.record(task_event(4, lastStatus="STOPPED", stoppedAt=iso(stopped_at + 0.125)))
    # 14 days' retention is under the delivery horizon: the item stays 16 days, plus the hour.
    assert stored_item(dynamodb, TASKS, ARN)["cw_expires_at"] == int(stopped_at) + 16 * DAY + HOUR


def test_a_deregistered_instance_carries_its_expiry(dynamodb, retention_14_days):
    event = container_instance_event(9, status="INACTIVE")
    recorder.record(event)
    item = stored_item(dynamodb, CONTAINER_INSTANCES, event["detail"]["containerInstanceArn"])
    assert item["cw_expires_at"] == int(EVENT_TIME) + 16 * DAY + HOUR


def test_an_old_event_for_an_unknown_key_is_expired_and_writes_nothing(dynamodb, retention_14_days, monkeypatch):
    days_after_the_events(monkeypatch, 14)
    requests = count_requests(dynamodb)
    summary = recorder.record(task_event(2, lastStatus="RUNNING"))
    assert summary == {"outcome": "expired", "kind": "task", "key": ARN, "version": 2, "stored_version": None}
    assert requests == {"PutItem": 1}  # still exactly one request
    assert stored_item(dynamodb, TASKS, ARN) is None


def test_an_old_event_for_a_known_key_still_updates_it(dynamodb, retention_14_days, monkeypatch):
    recorder.record(task_event(2))
    days_after_the_events(monkeypatch, 30)
    assert recorder.record(task_event(5, lastStatus="STOPPED"))["outcome"] == "updated"
    assert recorder.record(task_event(4))["outcome"] == "stale"
    assert recorder.record(task_event(5))["outcome"] == "duplicate"
    assert stored_item(dynamodb, TASKS, ARN)["lastStatus"] == "STOPPED"


def test_an_event_just_younger_than_the_retention_still_creates(dynamodb, retention_14_days, monkeypatch):
    days_after_the_events(monkeypatch, 14 - 1 / DAY)
    assert recorder.record(task_event(2))["outcome"] == "created"


def test_the_expired_outcome_is_counted_and_logged_like_the_others(dynamodb, retention_14_days, monkeypatch):
    from chalicelib import observability

    counted, logged = [], []
    monkeypatch.setattr(observability, "count", lambda outcome, kind: counted.append((outcome, kind)))
    monkeypatch.setattr(observability, "log_result", lambda summary, request_id: logged.append(summary["outcome"]))
    days_after_the_events(monkeypatch, 20)
    recorder.record(task_event(2))
    assert counted == [("expired", "task")] and logged == ["expired"]


@pytest.mark.parametrize("days", ["1", "0", "-3", "two"])
def test_a_retention_under_two_days_is_refused_by_name(monkeypatch, days):
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, days)
    with pytest.raises(ValueError, match=settings.RETENTION_DAYS_ENV):
        recorder.record(task_event(1))


@pytest.mark.parametrize("first_days, then_days", [(2, 14), (2, 400), (14, 30), (20, 400), (400, 2)])
def test_no_change_of_the_retention_brings_back_what_ttl_deleted(dynamodb, monkeypatch, first_days, then_days):
    """Stored under one retention, deleted by TTL at its earliest, then every event of the task
    redriven under another retention: none creates the item again."""
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "0")
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, str(first_days))
    lifecycle = [task_event(2, lastStatus="PENDING"), task_event(3),
                 task_event(4, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))]
    for event in lifecycle:
        recorder.record(event)
    expires_at = stored_item(dynamodb, TASKS, ARN)["cw_expires_at"]
    days_after_the_events(monkeypatch, (int(expires_at) - EVENT_TIME) / DAY)  # the earliest TTL may delete it
    dynamodb.delete_item(TableName=settings.table_name(TASKS), Key={"taskArn": {"S": ARN}})
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, str(then_days))
    assert [recorder.record(event)["outcome"] for event in lifecycle] == ["expired"] * 3
    assert stored_item(dynamodb, TASKS, ARN) is None


def test_a_redriven_event_younger_than_the_window_still_creates_under_a_raised_retention(dynamodb, monkeypatch):
    """The other side: what was never stored is created by a redrive within the window."""
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, "30")
    days_after_the_events(monkeypatch, 15)  # the dead-letter queue still holds it
    assert recorder.record(task_event(3))["outcome"] == "created"
