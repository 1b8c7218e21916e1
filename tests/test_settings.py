"""Table names and every setting from the environment; a Runtime's clients: region, endpoint, one each."""
import json
import threading
from pathlib import Path

import pytest

from chalicelib import config as settings
from chalicelib import runtime, tables
from chalicelib.config import from_environment
from chalicelib.runtime import Runtime
from chalicelib.store import client as store_client

LAMBDA_TIMEOUT = json.loads((Path(__file__).resolve().parent.parent / ".chalice" / "config.json").read_text())[
    "lambda_timeout"
]


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.delenv("AWS_REGION", raising=False)  # would win over AWS_DEFAULT_REGION
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    runtime.reset()
    yield
    runtime.reset()


def new_runtime():
    """A Runtime with the default settings: it makes its clients on first use, from the environment."""
    return Runtime(from_environment({}))


def test_table_names_default_to_the_docs_examples_and_follow_the_environment():
    defaults = from_environment({})
    assert defaults.table_name(tables.TASKS) == "ECSTaskState"
    assert defaults.table_name(tables.CONTAINER_INSTANCES) == "ECSCtrInstanceState"
    assert from_environment({"TASK_TABLE_NAME": "mine"}).table_name(tables.TASKS) == "mine"


def test_region_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert new_runtime().dynamodb().meta.region_name == "eu-west-3"


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
def test_endpoint_comes_from_boto3s_standard_variables(monkeypatch, variable):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    assert new_runtime().dynamodb().meta.endpoint_url == "http://127.0.0.1:9"


def test_one_client_per_process_even_when_first_used_from_many_threads(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    barrier = threading.Barrier(8)
    clients = []

    def first_use():
        barrier.wait()
        clients.append(runtime.current().dynamodb())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    assert runtime.current().dynamodb() is clients[0]


def test_retries_are_standard_and_timeouts_fit_well_within_the_lambda_timeout(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = new_runtime().dynamodb().meta.config
    assert config.retries["mode"] == "standard"
    attempts = config.retries["total_max_attempts"]
    worst_case = attempts * (config.connect_timeout + config.read_timeout)
    assert worst_case <= LAMBDA_TIMEOUT / 2


# -- the reconciler's ECS client and settings ----------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_ECS", "AWS_ENDPOINT_URL"])
def test_the_ecs_endpoint_comes_from_boto3s_standard_variables(monkeypatch, variable):
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    process = new_runtime()
    client = process.ecs()
    assert (client.meta.endpoint_url, client.meta.region_name) == ("http://127.0.0.1:9", "eu-west-3")
    assert process.ecs() is client  # one per process, created on first use


def test_the_ecs_clients_retries_back_off_and_fit_in_the_passes_stop_margin(monkeypatch):
    from chalicelib.reconcile.passes import STOP_MARGIN_SECONDS

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = new_runtime().ecs().meta.config
    assert config.retries["mode"] == "adaptive"  # slows down after a throttle
    attempts = config.retries["total_max_attempts"]
    backoff = sum(2 ** (retry - 1) for retry in range(1, attempts))  # botocore's: at most 1, 2, 4 ... s
    worst_case = attempts * (config.connect_timeout + config.read_timeout) + backoff
    assert worst_case < STOP_MARGIN_SECONDS


def test_the_ecs_client_keeps_timestamps_as_the_numbers_ecs_sent(monkeypatch):
    from tests.fake_ecs import FakeECS

    with FakeECS() as fake:
        fake.add_cluster("web")
        arn = fake.add_task("web")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", fake.endpoint)
        (task,) = new_runtime().ecs().describe_tasks(cluster="web", tasks=[arn])["tasks"]
    assert isinstance(task["createdAt"], float) and task["createdAt"] == fake.task(arn)["createdAt"]


@pytest.mark.parametrize(
    "variable, value",
    [(settings.RECONCILE_MINUTES_ENV, "4"), (settings.RECONCILE_MINUTES_ENV, "1441"), (settings.RECONCILE_MINUTES_ENV, "x"),
     (settings.ECS_CALLS_PER_SECOND_ENV, "0"), (settings.ECS_CALLS_PER_SECOND_ENV, "21"),
     (settings.ECS_CALLS_PER_SECOND_ENV, "nan"), (settings.ECS_CALLS_PER_SECOND_ENV, "fast"),
     (settings.RETENTION_DAYS_ENV, "1"), (settings.READ_INDEX_ENV, "yes")],
)
def test_a_bad_reconcile_setting_is_refused_by_name(variable, value):
    with pytest.raises(ValueError, match=variable):
        from_environment({variable: value})


def test_the_clusters_setting_takes_names_and_arns_separated_by_commas():
    clusters = " web , arn:aws:ecs:us-east-1:111122223333:cluster/batch,,"
    assert from_environment({settings.RECONCILE_CLUSTERS_ENV: clusters}).reconcile_clusters == (
        "web", "arn:aws:ecs:us-east-1:111122223333:cluster/batch",
    )
    assert from_environment({}).reconcile_clusters == ()


def test_the_defaults():
    config = from_environment({})
    assert (config.reconcile_minutes, config.ecs_calls_per_second, config.retention_seconds,
            config.read_index) == (15, 10.0, 16 * 86_400, True)


@pytest.mark.real_clock  # a timed join: under faketime it waits as long as the clock was moved
def test_a_client_is_published_only_once_its_hooks_are_registered(monkeypatch):
    # Another thread could take the client between its creation and its hook's registration.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    process = new_runtime()
    registered = threading.Event()
    seen = []  # (the client another thread got, whether its hook was registered by then)
    other = threading.Thread(target=lambda: seen.append((process.dynamodb(), registered.is_set())))
    register = store_client.trim_returned_items

    def slow_register(client):
        other.start()
        other.join(timeout=0.5)  # what another thread would find published meanwhile: it waits
        register(client)
        registered.set()

    monkeypatch.setattr(store_client, "trim_returned_items", slow_register)
    client = process.dynamodb()
    other.join()
    assert seen == [(client, True)]
