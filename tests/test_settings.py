"""Table names, region and endpoint from the environment; one lazily created client."""
import json
import threading
from pathlib import Path

import pytest

from chalicelib import settings, tables

LAMBDA_TIMEOUT = json.loads((Path(__file__).resolve().parent.parent / ".chalice" / "config.json").read_text())[
    "lambda_timeout"
]


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    settings.reset_client()
    yield
    settings.reset_client()


def test_table_names_default_to_the_docs_examples_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv("TASK_TABLE_NAME", raising=False)
    monkeypatch.delenv("CONTAINER_INSTANCE_TABLE_NAME", raising=False)
    assert settings.table_name(tables.TASKS) == "ECSTaskState"
    assert settings.table_name(tables.CONTAINER_INSTANCES) == "ECSCtrInstanceState"
    monkeypatch.setenv("TASK_TABLE_NAME", "mine")
    assert settings.table_name(tables.TASKS) == "mine"


def test_region_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert settings.dynamodb_client().meta.region_name == "eu-west-3"


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"])
def test_endpoint_comes_from_boto3s_standard_variables(monkeypatch, variable):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    assert settings.dynamodb_client().meta.endpoint_url == "http://127.0.0.1:9"


def test_one_client_per_process_even_when_first_used_from_many_threads(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    barrier = threading.Barrier(8)
    clients = []

    def first_use():
        barrier.wait()
        clients.append(settings.dynamodb_client())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    assert settings.dynamodb_client() is clients[0]


def test_retries_are_standard_and_timeouts_fit_well_within_the_lambda_timeout(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = settings.dynamodb_client().meta.config
    assert config.retries["mode"] == "standard"
    attempts = config.retries["total_max_attempts"]
    worst_case = attempts * (config.connect_timeout + config.read_timeout)
    assert worst_case <= LAMBDA_TIMEOUT / 2
