"""`make run`'s replay: it delivers every event, and notices a wrong final state."""
import json
import os
import random
import uuid

import pytest

from chalicelib import settings, tables
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
    settings.reset_client()


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
