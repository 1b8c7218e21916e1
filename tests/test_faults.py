"""Faults between the handler and DynamoDB: retried and landed once, or raised with nothing partial.

The handler runs as Lambda calls it; a loopback proxy (tests/fault_proxy.py)
in front of DynamoDB Local injects the faults. Raising fails the invocation,
so Lambda retries it and the on-failure destination keeps the event.
"""
import botocore.retries.standard
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from chalice.local import LambdaContext

from app import app
from chalicelib import runtime
from chalicelib.observability import Telemetry
from chalicelib.runtime import Runtime
from chalicelib.store import client as store_client
from chalicelib.store.client import MAX_ATTEMPTS
from chalicelib.tables import TASKS
from tests.fault_proxy import HANG, LOST_RESPONSE, SERVER_ERROR, THROTTLE, FaultProxy
from tests.helpers import expected_item, stored_item, table_name, task_event
from tools.local_dynamodb import free_port

EVENT = task_event(4)
ARN = EVENT["detail"]["taskArn"]
EXPECTED_ITEM = expected_item(EVENT)
NOT_STORED_LOG = "event not stored"  # what the recorder logs (at ERROR) when DynamoDB failed it


def invoke(event):
    return app.handler_map["task_state_change"](event, LambdaContext("ecs-state-test", 256))


@pytest.fixture
def failure_logs(monkeypatch):
    """The messages the recorder logs as failures, in order (whichever Runtime is installed)."""
    messages = []
    log_failure = Telemetry.log_failure

    def recording(self, message, fields, request_id):
        messages.append(message)
        log_failure(self, message, fields, request_id)

    monkeypatch.setattr(Telemetry, "log_failure", recording)
    return messages


@pytest.fixture
def app_endpoint(dynamodb_local, monkeypatch):
    """Point the app's client (only) at another endpoint, keeping the fresh tables on DynamoDB Local.

    The app's new client (a new Runtime's, with the same Config and clocks) keeps
    botocore's retries (3 attempts) but not its back-off sleeps, and gets short
    timeouts, so each fault test is quick.
    """

    def point_at(endpoint):
        monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
        monkeypatch.setattr(store_client, "CONNECT_TIMEOUT_SECONDS", 0.5)
        monkeypatch.setattr(store_client, "READ_TIMEOUT_SECONDS", 0.5)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        process = runtime.current()
        return runtime.use(Runtime(process.config, process.now, process.monotonic)).dynamodb()

    return point_at


def warm_up_writes(client):
    """Write and delete a throwaway item directly: a freshly started DynamoDB Local can take
    longer than the app's short read timeout (above) over its first writes, which the app's
    client would then retry, answering "duplicate" where no fault was injected."""
    key = {"taskArn": {"S": ARN + "-warm-up"}}
    for _ in range(3):
        client.put_item(TableName=table_name(TASKS), Item={**key, "version": {"N": "1"}})
        client.delete_item(TableName=table_name(TASKS), Key=key)


@pytest.fixture
def proxy(dynamodb_local_endpoint, dynamodb_local, app_endpoint):
    """The app's requests go through the proxy; ``proxy.client`` reads DynamoDB Local directly."""
    warm_up_writes(dynamodb_local)
    server = FaultProxy(dynamodb_local_endpoint).start()
    server.client = dynamodb_local
    app_endpoint(server.endpoint)
    yield server
    server.stop()


@pytest.mark.parametrize("fault", [THROTTLE, SERVER_ERROR])
@pytest.mark.parametrize("failures", [1, 2])
def test_throttling_and_server_errors_are_retried_and_the_event_lands_once(proxy, fault, failures, failure_logs):
    proxy.fail_next(failures, fault)
    assert invoke(EVENT)["outcome"] == "created"
    assert proxy.done() == [fault] * failures + ["forwarded"]
    assert stored_item(proxy.client, TASKS, ARN) == EXPECTED_ITEM
    assert failure_logs == []


def test_a_retried_write_that_had_landed_is_answered_duplicate_not_failed(proxy, failure_logs):
    proxy.fail_next(1, LOST_RESPONSE)  # DynamoDB wrote it; the response was lost
    assert invoke(EVENT)["outcome"] == "duplicate"  # the retry's condition saw it stored
    assert proxy.done() == [LOST_RESPONSE, "forwarded"]
    assert stored_item(proxy.client, TASKS, ARN) == EXPECTED_ITEM
    assert failure_logs == []


@pytest.mark.parametrize(
    "fault, error",
    [(THROTTLE, ClientError), (SERVER_ERROR, ClientError), (HANG, ReadTimeoutError)],
)
def test_when_retries_run_out_the_handler_raises_and_nothing_is_stored(proxy, fault, error, failure_logs):
    proxy.fail_next(MAX_ATTEMPTS, fault)
    with pytest.raises(error):
        invoke(EVENT)
    assert proxy.done() == [fault] * MAX_ATTEMPTS
    assert stored_item(proxy.client, TASKS, ARN) is None
    assert failure_logs == [NOT_STORED_LOG]
    # Lambda's retry of the same event, once DynamoDB answers again, stores it.
    assert invoke(EVENT)["outcome"] == "created"
    assert stored_item(proxy.client, TASKS, ARN) == EXPECTED_ITEM


def test_a_failure_after_the_write_raises_and_leaves_the_whole_item(proxy):
    proxy.fail_next(MAX_ATTEMPTS, LOST_RESPONSE)
    with pytest.raises(ClientError):
        invoke(EVENT)
    assert stored_item(proxy.client, TASKS, ARN) == EXPECTED_ITEM  # whole, never partial
    assert invoke(EVENT)["outcome"] == "duplicate"  # Lambda's retry


def test_connection_refused_is_retried_then_raised_and_nothing_is_stored(dynamodb_local, app_endpoint):
    attempts = []
    client = app_endpoint(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    client.meta.events.register("before-send.dynamodb", lambda **kwargs: attempts.append(1))
    with pytest.raises(EndpointConnectionError):
        invoke(EVENT)
    assert len(attempts) == MAX_ATTEMPTS
    assert stored_item(dynamodb_local, TASKS, ARN) is None


@pytest.mark.parametrize("stored_version, outcome", [(4, "duplicate"), (9, "stale")])
def test_a_conditional_check_failure_is_never_reported_as_a_failure(proxy, stored_version, outcome, failure_logs):
    # Stored by another container, so this process's high-water mark does not know it.
    stored = task_event(stored_version)
    proxy.client.put_item(
        TableName=table_name(TASKS),
        Item={"taskArn": {"S": ARN}, "version": {"N": str(stored_version)}, "id": {"S": stored["id"]}},
    )
    proxy.seen.clear()
    summary = invoke(EVENT)
    assert (summary["outcome"], summary["stored_version"]) == (outcome, stored_version)
    assert proxy.done() == ["forwarded"]  # one request, refused by the condition, not retried
    assert failure_logs == []
