"""High-water marks: duplicates and stale versions of keys this process saw stored cost no request."""
import threading
import time

import pytest
from botocore.exceptions import ClientError

from chalicelib import config as settings
from chalicelib import runtime
from chalicelib.config import from_environment
from chalicelib.ingest.recorder import Recorder
from chalicelib.runtime import Runtime
from chalicelib.store import StateStore
from chalicelib.store.high_water import HighWaterMarks
from chalicelib.tables import TASKS
from tests.helpers import (
    DAY,
    EVENT_TIME,
    count_requests,
    iso,
    parse,
    record,
    stored_item,
    table_name,
    task_event,
)
from tools.local_dynamodb import create_tables

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
    assert record(task_event(5))["outcome"] == "created"
    counts = count_requests(dynamodb)
    assert record(task_event(5)) == {
        "outcome": "duplicate", "kind": "task", "key": ARN, "version": 5, "stored_version": 5,
    }
    assert record(task_event(3))["outcome"] == "stale"
    assert counts == {}


def test_a_newer_version_still_writes(dynamodb):
    record(task_event(5))
    counts = count_requests(dynamodb)
    assert record(task_event(6, lastStatus="STOPPED")) == {
        "outcome": "updated", "kind": "task", "key": ARN, "version": 6, "stored_version": 5,
    }
    assert counts == {"PutItem": 1}
    item = stored_item(dynamodb, TASKS, ARN)
    assert (item["version"], item["lastStatus"]) == (6, "STOPPED")


def test_a_version_stored_by_another_container_raises_the_mark_from_the_refusal(dynamodb):
    record(task_event(5))
    # Another Lambda container (its own process, its own marks) stores version 9.
    other_container = StateStore(dynamodb, runtime.current().config)
    assert other_container.put_if_newer(parse(task_event(9))).outcome == "updated"
    counts = count_requests(dynamodb)
    assert record(task_event(7)) == {
        "outcome": "stale", "kind": "task", "key": ARN, "version": 7, "stored_version": 9,
    }
    assert record(task_event(8))["outcome"] == "stale"  # answered by the raised mark
    assert record(task_event(9))["outcome"] == "duplicate"
    assert counts == {"PutItem": 1}
    assert stored_item(dynamodb, TASKS, ARN)["version"] == 9


def test_a_mark_for_one_table_does_not_answer_for_another(dynamodb, configure):
    record(task_event(5))
    marks = runtime.current().marks
    # Same process, same marks, same key: but the stage now writes to another table.
    configure(task_table=table_name(TASKS) + "-other")
    create_tables(dynamodb, {TASKS: table_name(TASKS)})
    assert _recorder_with(marks).record(task_event(5))["outcome"] == "created"
    assert stored_item(dynamodb, TASKS, ARN)["version"] == 5


def marks_of(environ):
    """The high-water marks of a process whose stage sets ``environ``."""
    return Runtime(from_environment(environ)).marks


def test_the_settings_size_age_or_turn_off_the_marks():
    sized = {settings.HIGH_WATER_ENTRIES_ENV: "25", settings.HIGH_WATER_SECONDS_ENV: "30"}
    assert (marks_of(sized).max_entries, marks_of(sized).max_age_seconds) == (25, 30)
    assert marks_of({settings.HIGH_WATER_ENTRIES_ENV: "25", settings.HIGH_WATER_SECONDS_ENV: "0"}) is None
    assert marks_of({settings.HIGH_WATER_ENTRIES_ENV: "0"}) is None
    marks = marks_of({})
    assert (marks.max_entries, marks.max_age_seconds) == (
        settings.DEFAULT_HIGH_WATER_ENTRIES, settings.DEFAULT_HIGH_WATER_SECONDS,
    )


@pytest.mark.parametrize("variable", [settings.HIGH_WATER_ENTRIES_ENV, settings.HIGH_WATER_SECONDS_ENV])
@pytest.mark.parametrize("value", ["ten", "-1", "1.5"])
def test_a_bad_setting_is_refused_by_name(variable, value):
    with pytest.raises(ValueError, match=variable):
        marks_of({variable: value})


# -- what the marks may assume: deletions ---------------------------------------


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

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


def _recorder_with(marks, now=time.time):
    """A recorder of the installed Runtime's settings and client, with these marks (None: none)
    and this wall clock: another process of the same stage, or the same process's marks."""
    process = runtime.current()
    store = StateStore(process.dynamodb(), process.config, marks, now=now)
    return Recorder(store, process.config.rules, None, process.telemetry, now=now)


def test_after_the_table_is_recreated_a_replay_stores_the_highest_version(dynamodb_local):
    # Issue: a restore into the same name answered a dead-letter redrive "stale" and stored nothing.
    marks = HighWaterMarks(100, 600)
    recorder = _recorder_with(marks)
    for version in (3, 5):
        recorder.record(task_event(version))
    name = table_name(TASKS)
    dynamodb_local.delete_table(TableName=name)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        recorder.record(task_event(6))  # fails, and clears this table's marks
    create_tables(dynamodb_local, {TASKS: name})
    assert [recorder.record(task_event(v))["outcome"] for v in (3, 5)] == ["created", "updated"]
    assert stored_item(dynamodb_local, TASKS, ARN)["version"] == 5


def test_after_a_silent_restore_marks_stop_answering_within_their_age(dynamodb_local):
    clock = Clock()
    marks = HighWaterMarks(100, max_age_seconds=600, clock=clock)
    recorder = _recorder_with(marks)
    recorder.record(task_event(5))
    dynamodb_local.delete_item(TableName=table_name(TASKS), Key={"taskArn": {"S": ARN}})  # restored to before
    assert recorder.record(task_event(5))["outcome"] == "duplicate"  # the bounded exposure
    clock.now += 601
    assert recorder.record(task_event(5))["outcome"] == "created"
    assert stored_item(dynamodb_local, TASKS, ARN)["version"] == 5


def test_when_ttl_deletes_a_finished_item_marks_and_dynamodb_both_write_nothing(dynamodb_local, configure):
    # The argument in chalicelib/high_water.py: an event at or below a finished item's
    # version is older than any creation window by the time TTL may delete the item.
    configure(retention_seconds=2 * DAY)
    wall = Clock(start=time.time())
    stopped = task_event(8, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    with_marks = _recorder_with(HighWaterMarks(100, 10**9), now=wall)
    assert with_marks.record(stopped)["outcome"] == "created"
    expires_at = int(stored_item(dynamodb_local, TASKS, ARN)["cw_expires_at"])
    wall.now = float(expires_at)  # the earliest TTL may delete it
    dynamodb_local.delete_item(TableName=table_name(TASKS), Key={"taskArn": {"S": ARN}})
    for late in (task_event(6, lastStatus="RUNNING"), stopped):
        assert with_marks.record(late)["outcome"] in ("stale", "duplicate")
        assert _recorder_with(None, now=wall).record(late)["outcome"] == "expired"
    assert stored_item(dynamodb_local, TASKS, ARN) is None
