"""Shared fixtures: DynamoDB Local and moto on loopback, fresh tables per test."""
import contextlib
import os
import uuid
from typing import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from chalicelib import observability, runtime, tables
from chalicelib.config import from_environment
from chalicelib.runtime import Runtime
from tools.local_dynamodb import (
    LOCAL_RETENTION_DAYS,
    DynamoDBLocal,
    EmbeddedMoto,
    Unavailable,
    create_tables,
    local_environment,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
_unavailable = []  # why DynamoDB Local could not start, for the summary

hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if IN_CI else "dev")

# Tests never emit EMF to stdout or INFO logs unless they ask for them.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
# The settings every test starts from: the defaults (whatever the shell running the
# tests sets), with the local stage's retention, so nothing a test stores expires
# unless the test sets the retention it tests; each test gets tables of its own.
# Event times are relative to now (tests/helpers.py's EVENT_TIME, tools/replay.py's
# recent_events), so no test depends on the date it runs.
TEST_SETTINGS = from_environment({})._replace(retention_seconds=LOCAL_RETENTION_DAYS * 86_400)
# The service's one Powertools Logger writes to the sys.stdout of when it is made: made here, that
# is the session's; made first inside a test with capsys, it would keep writing to that test's
# capture, closed after it (and logs_and_metrics, in a later test, fails flushing it).
observability.logger_of(TEST_SETTINGS.service)


@contextlib.contextmanager
def dynamodb_local_server() -> Iterator[str]:
    """A DynamoDB Local of its own, its endpoint; skipped where it cannot run, failed in CI."""
    server = DynamoDBLocal()
    try:
        server.start()
    except Unavailable as error:
        if IN_CI:
            pytest.fail(f"DynamoDB Local is required in CI: {error}", pytrace=False)
        _unavailable.append(str(error))
        pytest.skip(f"DynamoDB Local unavailable: {error}")
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dynamodb_local_endpoint():
    with dynamodb_local_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def moto_endpoint():
    with EmbeddedMoto() as server:
        yield server.endpoint


@pytest.fixture
def use_endpoint(monkeypatch):
    """Install a Runtime on ``endpoint`` (boto3 reads it from the environment), with the test
    settings and fresh tables; return its DynamoDB client, the one the app uses."""

    def use(endpoint):
        for name, value in local_environment(endpoint).items():
            monkeypatch.setenv(name, value)
        suffix = uuid.uuid4().hex[:8]
        names = {f"{spec.kind}_table": f"{spec.default_name}-{suffix}" for spec in tables.ALL}
        process = runtime.use(Runtime(TEST_SETTINGS._replace(**names)))
        create_tables(process.dynamodb(), {spec: process.config.table_name(spec) for spec in tables.ALL},
                      process.config.read_index)
        return process.dynamodb()

    yield use
    runtime.reset()


@pytest.fixture
def configure():
    """Change the settings (Config's fields) or clocks (now, monotonic) of the installed Runtime:
    ``configure(retention_seconds=2 * DAY)``. The clients stay: request counters still count."""

    def configure(**changes):
        return runtime.use(runtime.current().replace(**changes))

    return configure


@pytest.fixture
def dynamodb_local(dynamodb_local_endpoint, use_endpoint):
    """A DynamoDB client on DynamoDB Local, the app pointed at fresh tables there."""
    return use_endpoint(dynamodb_local_endpoint)


@pytest.fixture(params=["moto", "dynamodb_local"])
def dynamodb(request, use_endpoint):
    """The same storage test on moto and on DynamoDB Local."""
    if request.param == "moto":
        return use_endpoint(request.getfixturevalue("moto_endpoint"))
    return use_endpoint(request.getfixturevalue("dynamodb_local_endpoint"))


def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "dynamodb_local" in fixtures or "dynamodb_local_endpoint" in fixtures or (
            "dynamodb" in fixtures and "[dynamodb_local" in item.name
        ):
            item.add_marker(pytest.mark.dynamodb_local)


def pytest_terminal_summary(terminalreporter):
    if _unavailable:
        terminalreporter.write_sep("!", "DynamoDB Local tests were SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"{_unavailable[0]}; with CI=true this fails the run.", red=True)
