"""High-water marks: duplicates and stale versions of keys this process saw stored cost no request."""
import threading

import pytest

from chalicelib import recorder, settings
from chalicelib.high_water import HighWaterMarks
from chalicelib.tables import TASKS
from tools.local_dynamodb import create_tables
from tests.helpers import count_requests, stored_item, task_event

ARN = task_event(1)["detail"]["taskArn"]


def test_a_mark_only_rises():
    marks = HighWaterMarks(10)
    marks.saw_stored("t", "k", 5)
    marks.saw_stored("t", "k", 3)
    assert marks.highest("t", "k") == 5
    marks.saw_stored("t", "k", 8)
    assert marks.highest("t", "k") == 8


def test_marks_are_per_table_and_key():
    marks = HighWaterMarks(10)
    marks.saw_stored("tasks-a", "k", 5)
    assert marks.highest("tasks-b", "k") is None
    assert marks.highest("tasks-a", "other") is None


def test_memory_stays_bounded_and_the_least_recently_used_key_goes_first():
    marks = HighWaterMarks(100)
    for number in range(1000):
        marks.saw_stored("t", f"key-{number}", number)
        marks.highest("t", "key-0")  # kept in use, so never the one dropped
    assert len(marks) == 100
    assert marks.highest("t", "key-0") == 0
    assert marks.highest("t", "key-1") is None  # forgotten: its next event costs a request
    assert marks.highest("t", "key-999") == 999


def test_bounded_under_concurrent_use():
    marks = HighWaterMarks(50)

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


def test_the_setting_sizes_or_turns_off_the_marks(monkeypatch):
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "25")
    assert settings.high_water_marks().max_entries == 25
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "0")
    assert settings.high_water_marks() is None
    monkeypatch.delenv(settings.HIGH_WATER_ENTRIES_ENV)
    assert settings.high_water_marks().max_entries == settings.DEFAULT_HIGH_WATER_ENTRIES


@pytest.mark.parametrize("value", ["ten", "-1", "1.5"])
def test_a_bad_setting_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, value)
    with pytest.raises(ValueError, match=settings.HIGH_WATER_ENTRIES_ENV):
        settings.high_water_marks()
