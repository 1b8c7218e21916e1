"""High-water marks: duplicates and stale versions of keys this process saw stored cost no request."""
import threading

import pytest
from botocore.exceptions import ClientError

from chalicelib import recorder, settings
from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import TASKS
from tools.local_dynamodb import create_tables
from tests.helpers import EVENT_TIME, count_requests, iso, stored_item, task_event

ARN = task_event(1)["detail"]["taskArn"]


def test_a_mark_only_rises():
    marks = HighWaterMarks(10, 600)
    marks.saw_stored("t", "k", 5)
    marks.saw_stored("t", "k", 3)
    assert marks.highest("t", "k") == 5
    marks.saw_stored("t", "k", 8)
    assert marks.highest("t", "k") == 8


def test_marks_are_per_table_and_key():
    marks = HighWaterMarks(10, 600)
    marks.saw_stored("tasks-a", "k", 5)
    assert marks.highest("tasks-b", "k") is None
    assert marks.highest("tasks-a", "other") is None


def test_memory_stays_bounded_and_the_least_recently_used_key_goes_first():
    marks = HighWaterMarks(100, 600)
    for number in range(1000):
        marks.saw_stored("t", f"key-{number}", number)
        marks.highest("t", "key-0")  # kept in use, so never the one dropped
    assert len(marks) == 100
    assert marks.highest("t", "key-0") == 0
    assert marks.highest("t", "key-1") is None  # forgotten: its next event costs a request
    assert marks.highest("t", "key-999") == 999


def test_bounded_under_concurrent_use():
    marks = HighWaterMarks(50, 600)

    def fill(thread: int) -> None:
        for number in range(500):
            marks.saw_stored("t", f"{thread}-{number}", number)

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(marks) == 50


def test_duplicate_and_stale_versions_of_a_seen_key_make_no_request(dynamodb):
    assert recorder.record(task_event(5))["outcome"] == "created"
    counts = count_requests(dynamodb)
    assert recorder.record(task_event(5)) == {
        "outcome": "duplicate", "kind": "task", "key": ARN, "version": 5, "stored_version": 5,
    }
    assert recorder.record(task_event(3))["outcome"] == "stale"
    assert counts == {}


def test_a_newer_version_still_writes(dynamodb):
    recorder.record(task_event(5))
    counts = count_requests(dynamodb)
    assert recorder.record(task_event(6, lastStatus="STOPPED")) == {
        "outcome": "updated", "kind": "task", "key": ARN, "version": 6, "stored_version": 5,
    }
    assert counts == {"PutItem": 1}
    item = stored_item(dynamodb, TASKS, ARN)
    assert (item["version"], item["lastStatus"]) == (6, "STOPPED")


def test_a_version_stored_by_another_container_raises_the_mark_from_the_refusal(dynamodb):
    recorder.record(task_event(5))
    # Another Lambda container (its own process, its own marks) stores version 9.
    other_container = recorder.StateStore(dynamodb)
    assert other_container.put_if_newer(recorder.parse_event(task_event(9))).outcome == "updated"
    counts = count_requests(dynamodb)
    assert recorder.record(task_event(7)) == {
        "outcome": "stale", "kind": "task", "key": ARN, "version": 7, "stored_version": 9,
    }
    assert recorder.record(task_event(8))["outcome"] == "stale"  # answered by the raised mark
    assert recorder.record(task_event(9))["outcome"] == "duplicate"
    assert counts == {"PutItem": 1}
    assert stored_item(dynamodb, TASKS, ARN)["version"] == 9


def test_a_mark_for_one_table_does_not_answer_for_another(dynamodb, monkeypatch):
    recorder.record(task_event(5))
    # Same process, same marks, same key: but the stage now writes to another table.
    monkeypatch.setenv(TASKS.name_env, settings.table_name(TASKS) + "-other")
    create_tables(dynamodb, {TASKS: settings.table_name(TASKS)})
    assert recorder.record(task_event(5))["outcome"] == "created"
    assert stored_item(dynamodb, TASKS, ARN)["version"] == 5


def test_the_settings_size_age_or_turn_off_the_marks(monkeypatch):
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "25")
    monkeypatch.setenv(settings.HIGH_WATER_SECONDS_ENV, "30")
    assert (settings.high_water_marks().max_entries, settings.high_water_marks().max_age_seconds) == (25, 30)
    monkeypatch.setenv(settings.HIGH_WATER_SECONDS_ENV, "0")
    assert settings.high_water_marks() is None
    monkeypatch.delenv(settings.HIGH_WATER_SECONDS_ENV)
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "0")
    assert settings.high_water_marks() is None
    monkeypatch.delenv(settings.HIGH_WATER_ENTRIES_ENV)
    marks = settings.high_water_marks()
    assert (marks.max_entries, marks.max_age_seconds) == (
        settings.DEFAULT_HIGH_WATER_ENTRIES, settings.DEFAULT_HIGH_WATER_SECONDS,
    )


@pytest.mark.parametrize("variable", [settings.HIGH_WATER_ENTRIES_ENV, settings.HIGH_WATER_SECONDS_ENV])
@pytest.mark.parametrize("value", ["ten", "-1", "1.5"])
def test_a_bad_setting_is_refused_by_name(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        settings.high_water_marks()


# -- what the marks may assume: deletions ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_mark_older_than_its_age_no_longer_answers():
    clock = Clock()
    marks = HighWaterMarks(10, max_age_seconds=600, clock=clock)
    marks.saw_stored("t", "k", 5)
    clock.now += 600
    assert marks.highest("t", "k") == 5
    clock.now += 1
    assert marks.highest("t", "k") is None
    assert len(marks) == 0


def test_a_higher_mark_keeps_the_time_it_was_confirmed():
    clock = Clock()
    marks = HighWaterMarks(10, max_age_seconds=600, clock=clock)
    marks.saw_stored("t", "k", 9)
    clock.now += 500
    marks.saw_stored("t", "k", 4)  # proves 4 is stored now, not that 9 still is
    clock.now += 101
    assert marks.highest("t", "k") is None


def test_forgetting_a_table_keeps_the_marks_of_others():
    marks = HighWaterMarks(10, 600)
    marks.saw_stored("a", "k", 5)
    marks.saw_stored("b", "k", 7)
    marks.forget_table("a")
    assert (marks.highest("a", "k"), marks.highest("b", "k")) == (None, 7)


def _store_with(client, marks):
    return recorder.StateStore(client, marks=marks)


def test_after_the_table_is_recreated_a_replay_stores_the_highest_version(dynamodb_local):
    # Issue: a restore into the same name answered a dead-letter redrive "stale" and stored nothing.
    marks = HighWaterMarks(100, 600)
    store = _store_with(dynamodb_local, marks)
    for version in (3, 5):
        recorder.record(task_event(version), store=store)
    name = settings.table_name(TASKS)
    dynamodb_local.delete_table(TableName=name)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        recorder.record(task_event(6), store=store)  # fails, and clears this table's marks
    create_tables(dynamodb_local, {TASKS: name})
    assert [recorder.record(task_event(v), store=store)["outcome"] for v in (3, 5)] == ["created", "updated"]
    assert stored_item(dynamodb_local, TASKS, ARN)["version"] == 5


def test_after_a_silent_restore_marks_stop_answering_within_their_age(dynamodb_local):
    clock = Clock()
    marks = HighWaterMarks(100, max_age_seconds=600, clock=clock)
    store = _store_with(dynamodb_local, marks)
    recorder.record(task_event(5), store=store)
    dynamodb_local.delete_item(TableName=settings.table_name(TASKS), Key={"taskArn": {"S": ARN}})  # restored to before
    assert recorder.record(task_event(5), store=store)["outcome"] == "duplicate"  # the bounded exposure
    clock.now += 601
    assert recorder.record(task_event(5), store=store)["outcome"] == "created"
    assert stored_item(dynamodb_local, TASKS, ARN)["version"] == 5


def test_when_ttl_deletes_a_finished_item_marks_and_dynamodb_both_write_nothing(dynamodb_local, monkeypatch):
    # The argument in chalicelib/high_water.py: an event at or below a finished item's
    # version is older than any creation window by the time TTL may delete the item.
    from chalicelib import events

    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, "2")
    stopped = task_event(8, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    with_marks = _store_with(dynamodb_local, HighWaterMarks(100, 10**9))
    assert recorder.record(stopped, store=with_marks)["outcome"] == "created"
    expires_at = int(stored_item(dynamodb_local, TASKS, ARN)["cw_expires_at"])
    monkeypatch.setattr(events, "now", lambda: float(expires_at))  # the earliest TTL may delete it
    dynamodb_local.delete_item(TableName=settings.table_name(TASKS), Key={"taskArn": {"S": ARN}})
    for late in (task_event(6, lastStatus="RUNNING"), stopped):
        assert recorder.record(late, store=with_marks)["outcome"] in ("stale", "duplicate")
        assert recorder.record(late, store=_store_with(dynamodb_local, None))["outcome"] == "expired"
    assert stored_item(dynamodb_local, TASKS, ARN) is None
