"""`make run`'s replay: it delivers every event, and notices a wrong final state."""
import json
import os
import random
import uuid

import pytest

from chalicelib import runtime, tables
from tools import replay


@pytest.fixture(autouse=True)
def isolated_run(monkeypatch):
    """replay.main sets the process's endpoint variables, as the CLI should: undo that here.

    moto keeps its tables per process, so each run also gets its own table names."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    suffix = uuid.uuid4().hex[:8]
    for spec in tables.ALL:
        os.environ[spec.name_env] = f"{spec.default_name}-{suffix}"
    yield
    runtime.reset()


def test_every_event_is_planned_one_to_three_times():
    events = [{"n": n} for n in range(200)]
    deliveries = replay.plan_deliveries(events, duplicate_rate=0.5, rng=random.Random(1))
    counts = [sum(1 for d in deliveries if d["n"] == n) for n in range(200)]
    assert set(counts) == {1, 2, 3}
    assert replay.plan_deliveries(events, 0.0, random.Random(1)) != events  # shuffled...
    assert sorted(d["n"] for d in replay.plan_deliveries(events, 0.0, random.Random(1))) == list(range(200))


def test_a_run_over_the_shipped_events_passes(capsys):
    assert replay.main(["--seed", "7", "--concurrency", "4"]) == 0
    out = capsys.readouterr().out
    assert "OK: every one of 5 items holds its highest delivered version" in out
    assert "DRAINING" in out and "STOPPED/STOPPED" in out


def test_a_run_fails_when_the_stored_state_is_not_the_latest(tmp_path, monkeypatch, capsys):
    events = json.loads(open("events/task-running.json").read())
    (tmp_path / "events.json").write_text(json.dumps(events))
    # Sabotage: the store claims success but never writes.
    from chalicelib.store import StateStore, WriteResult

    monkeypatch.setattr(StateStore, "put_if_newer", lambda self, change: WriteResult("created", None))
    assert replay.main(["--events", str(tmp_path / "events.json"), "--seed", "1"]) == 1
    assert "nothing stored" in capsys.readouterr().err


def test_options_are_checked():
    with pytest.raises(SystemExit):
        replay.main(["--duplicate-rate", "2"])


@pytest.mark.parametrize("argv", [
    ["--endpoint", "aws"],
    ["--endpoint", "aws", "--task-table", "replay-tasks"],
])
def test_a_run_on_aws_needs_tables_of_its_own(argv, capsys):
    with pytest.raises(SystemExit):
        replay.main(argv)
    assert "--endpoint aws writes sample events: name new tables" in capsys.readouterr().err


@pytest.fixture
def aws_account(monkeypatch):
    """--endpoint aws, with moto in this process standing in for the account."""
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    with mock_aws():
        import boto3

        yield boto3.client("dynamodb")


def test_a_run_on_aws_refuses_an_existing_table_and_writes_nothing(aws_account):
    aws_account.create_table(**tables.TASKS.create_table_request("ECSTaskState", read_index=False))

    with pytest.raises(SystemExit, match="error: table ECSTaskState exists: --endpoint aws writes sample events only"):
        replay.main(["--endpoint", "aws", "--task-table", "ECSTaskState", "--container-instance-table", "replay-ci"])

    assert aws_account.scan(TableName="ECSTaskState")["Items"] == []
    assert aws_account.list_tables()["TableNames"] == ["ECSTaskState"]


def test_a_run_on_aws_creates_its_own_tables(aws_account, capsys):
    argv = ["--endpoint", "aws", "--task-table", "replay-tasks", "--container-instance-table", "replay-ci",
            "--concurrency", "1", "--seed", "3"]

    assert replay.main(argv) == 0

    out = capsys.readouterr().out
    assert "OK: every one of 5 items" in out and "The run created tables replay-tasks, replay-ci" in out
    assert sorted(aws_account.list_tables()["TableNames"]) == ["replay-ci", "replay-tasks"]
    with pytest.raises(SystemExit, match="table replay-tasks exists"):  # a second run: they are not its own
        replay.main(argv)
