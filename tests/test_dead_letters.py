"""An event that can never be stored reaches the dead-letter queue once, with its error;
a transient failure still raises, so Lambda retries it."""
import json

import pytest
from botocore.exceptions import ClientError
from chalice.local import LambdaContext

from app import app
from chalicelib import runtime
from chalicelib.errors import InvalidEvent, StoredItemConflict
from chalicelib.ingest import dead_letters
from chalicelib.observability import Telemetry
from chalicelib.tables import TASKS
from tests.helpers import count_requests, lambda_context, store_unnumbered_version, stored_item, task_event

QUEUE = "ecs-state-test-dead-letters"


def unversioned(number):
    """An event whose version is a string: refused by validation."""
    event = task_event(number, task_id=f"{number:032x}")
    event["detail"]["version"] = str(number)
    return event


def invoke(event, context=None):
    context = context or LambdaContext("ecs-state-test-task_state_change", 256)
    return app.handler_map["task_state_change"](event, context)


@pytest.fixture
def queue(dynamodb_local, moto_endpoint, configure, monkeypatch):
    """A dead-letter queue on moto, named in the stage's setting; returns a reader of its messages."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)  # (the Runtime makes its SQS client on first use)
    sqs = runtime.current().sqs()
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    configure(dead_letter_queue=QUEUE)

    def messages():
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
            if not batch:
                return found
            found += [json.loads(message["Body"]) for message in batch]

    messages.url = url
    return messages


@pytest.fixture
def counted(monkeypatch):
    counts = []
    monkeypatch.setattr(Telemetry, "count", lambda telemetry, outcome, kind: counts.append((outcome, kind)))
    return counts


def conflicting(dynamodb_local):
    """An event whose task is stored with a version that is not a number."""
    event = task_event(3)
    store_unnumbered_version(dynamodb_local, event)
    return event


def test_an_invalid_event_goes_to_the_queue_once_with_its_error_and_the_invocation_succeeds(
    dynamodb_local, queue, counted
):
    event = task_event(3, cpu=float("nan"))
    requests = count_requests(dynamodb_local)
    context = LambdaContext("ecs-state-test-task_state_change", 256)
    summary = invoke(event, context)
    assert summary["outcome"] == "dead_lettered" and summary["error"] == "InvalidEvent"
    (message,) = queue()
    assert message["requestPayload"] == json.loads(json.dumps(event))  # NaN travels as JSON's NaN
    assert message["responsePayload"] == {"errorType": "InvalidEvent", "errorMessage": "detail.cpu: NaN and Infinity cannot be stored"}
    assert message["requestContext"]["condition"] == dead_letters.CONDITION
    assert message["requestContext"]["requestId"] == context.aws_request_id
    assert counted == [("invalid", "task")]  # one count, not one per Lambda attempt
    assert requests == {} and stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"]) is None


def test_a_stored_item_ecs_state_cannot_compare_with_is_dead_lettered(dynamodb_local, queue):
    event = conflicting(dynamodb_local)
    assert invoke(event)["outcome"] == "dead_lettered"
    (message,) = queue()
    assert message["responsePayload"]["errorType"] == StoredItemConflict.__name__
    assert stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"])["version"] == "seven"


@pytest.mark.parametrize("bad_event, error", [
    (lambda client: unversioned(1), InvalidEvent), (conflicting, StoredItemConflict),
])
def test_replayed_by_a_redrive_an_event_that_cannot_be_stored_raises_and_sends_nothing(
    dynamodb_local, queue, bad_event, error
):
    # A copy sent to the queue would be received and replayed by the same redrive, and copied again.
    context = lambda_context("ecs-state-test-task_state_change", {"custom": {dead_letters.REDRIVE_MARKER: "true"}})
    with pytest.raises(error):
        invoke(bad_event(dynamodb_local), context)
    assert queue() == []


@pytest.mark.parametrize("client_context", [None, {}, {"custom": None}, {"custom": {"someone-else": "true"}}])
def test_without_the_redrive_marker_the_event_is_still_dead_lettered(dynamodb_local, queue, client_context):
    context = lambda_context("ecs-state-test-task_state_change", client_context)
    assert invoke(unversioned(1), context)["outcome"] == "dead_lettered"
    assert len(queue()) == 1


def test_a_transient_failure_still_raises_for_lambdas_retries_and_sends_nothing(dynamodb_local, queue, configure):
    configure(task_table="no-such-table")
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        invoke(task_event(1))
    assert queue() == []


def test_the_queue_may_be_named_by_url_and_then_is_not_looked_up(dynamodb_local, queue, configure):
    configure(dead_letter_queue=queue.url)
    requests = []
    runtime.current().sqs().meta.events.register("before-call.sqs", lambda model, **kw: requests.append(model.name))
    invoke(unversioned(1))
    invoke(unversioned(2))
    assert requests == ["SendMessage", "SendMessage"]
    assert len(queue()) == 2


def test_a_queue_name_is_resolved_once(dynamodb_local, queue):
    requests = []
    runtime.current().sqs().meta.events.register("before-call.sqs", lambda model, **kw: requests.append(model.name))
    invoke(unversioned(1))
    invoke(unversioned(2))
    assert requests == ["GetQueueUrl", "SendMessage", "SendMessage"]


def test_when_the_queue_cannot_take_it_the_original_error_raises(dynamodb_local, queue, configure):
    configure(dead_letter_queue="no-such-queue")
    with pytest.raises(InvalidEvent, match="detail.version") as raised:
        invoke(unversioned(1))
    assert isinstance(raised.value.__cause__, ClientError)


def test_without_a_queue_a_permanent_error_raises_as_before(dynamodb_local, configure):
    configure(dead_letter_queue=None)
    with pytest.raises(InvalidEvent, match="detail.version"):
        invoke(unversioned(1))
