"""`make redrive`: the dead-letter queue's events replayed through the stage's functions, on a moto
queue holding good and permanently bad events in the queue's three shapes. The functions run in
this process (moto cannot run Lambda code here): the handlers of a freshly loaded app.py, called
as Lambda calls them for the tool's Invoke request, against DynamoDB Local."""
import base64
import io
import json
import os
import uuid
from typing import Any, Dict, List

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from chalicelib import runtime, tables
from chalicelib.ingest import dead_letters
from chalicelib.runtime import Runtime
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.apps import load_app
from tests.conftest import TEST_SETTINGS
from tests.helpers import (
    DAY,
    EVENT_TIME,
    container_instance_event,
    iso,
    lambda_context,
    store_unnumbered_version,
    stored_item,
    task_event,
)
from tools import redrive
from tools.local_dynamodb import create_tables
from tools.redrive import CANNOT_BE_STORED, FAILED, NOT_ECS, Redrive
from tools.stage import ROOT, stage_plan

PLAN = stage_plan("dev")
FUNCTIONS = redrive.event_functions(PLAN)
TASK_FUNCTION, INSTANCE_FUNCTION = (FUNCTIONS[("aws.ecs", spec.detail_type)] for spec in (TASKS, CONTAINER_INSTANCES))


def invoke_response(payload: Any, function_error: str = "") -> Dict[str, Any]:
    """Lambda's answer to a synchronous Invoke, as boto3 returns it."""
    body = json.dumps(payload).encode()
    response = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body))}
    return {**response, "FunctionError": function_error} if function_error else response


class InProcessLambda:
    """Lambda's Invoke API as the tool calls it, run here: the deployed function's handler (of a
    fresh app.py) gets the event and the context Lambda's Python runtime makes of the request's
    ClientContext; an exception becomes a FunctionError, as Lambda reports it."""

    def __init__(self, honour_client_context: bool = True) -> None:
        self.app = load_app(events_route=False)
        self.handlers = {name: name[len(f"{PLAN.app_name}-{PLAN.stage}-"):] for name in FUNCTIONS.values()}
        self.honour_client_context = honour_client_context  # False: a function deployed before the marker
        self.throttled: set = set()  # event ids the Lambda API refuses
        self.calls: List[str] = []  # the event ids, in order

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes, ClientContext: str = "") -> Dict[str, Any]:
        assert InvocationType == "RequestResponse"
        event = json.loads(Payload)
        self.calls.append(event["id"])
        if event["id"] in self.throttled:
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."}}, "Invoke")
        if any(word in Payload for word in (b"NaN", b"Infinity")):  # not JSON as Lambda reads it
            raise ClientError({"Error": {"Code": "InvalidRequestContentException",
                                         "Message": "Could not parse request body into json"}}, "Invoke")
        client_context = json.loads(base64.b64decode(ClientContext)) if ClientContext else None
        context = lambda_context(FunctionName, client_context if self.honour_client_context else None)
        try:
            return invoke_response(self.app.handler_map[self.handlers[FunctionName]](event, context))
        except Exception as error:
            return invoke_response({"errorType": type(error).__name__, "errorMessage": str(error)}, "Unhandled")


class Queue:
    """A moto queue, named in the stage's setting so that the in-process functions dead-letter to it."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url

    def put(self, body: Any, **attributes: str) -> str:
        return self.sqs.send_message(
            QueueUrl=self.url, MessageBody=body if isinstance(body, str) else json.dumps(body),
            MessageAttributes={name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()},
        )["MessageId"]

    def bodies(self) -> Dict[str, str]:
        """Every message's id and body, all made visible again after."""
        found: Dict[str, Any] = {}
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=30)
            new = [message for message in batch.get("Messages", []) if message["MessageId"] not in found]
            if not new:
                break
            found.update((message["MessageId"], message) for message in new)
        for message in found.values():
            self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=0)
        return {id: message["Body"] for id, message in found.items()}


@pytest.fixture
def queue(moto_endpoint, monkeypatch, configure):
    """The queue, named in the installed Runtime's settings (set up after the fixture that installs it)."""
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.create_queue(QueueName=f"redrive-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)  # (the Runtime makes its SQS client on first use)
    configure(dead_letter_queue=url)
    yield Queue(sqs, url)
    runtime.reset()  # (a test without a Runtime of its own got one built from the environment)


MAX_RECEIVES = 200  # far more than any of these queues takes to go through


class BoundedReceives:
    """The queue's SQS client, failing the run once it has asked for messages MAX_RECEIVES times:
    a redrive that would never end fails the test (with no timed wait, which a moved clock hangs)."""

    def __init__(self, sqs: Any, out: io.StringIO) -> None:
        self._sqs, self._out, self.receives = sqs, out, 0

    def receive_message(self, **request: Any) -> Any:
        self.receives += 1
        assert self.receives <= MAX_RECEIVES, f"the redrive did not end; its output: {self._out.getvalue()}"
        assert request["WaitTimeSeconds"] >= 1  # long polling: an empty answer means an empty queue
        # moto answers a short poll from the whole queue; its long poll is a timed wait on a
        # threading.Condition, which hangs when the tests run with the clock moved (make test).
        return self._sqs.receive_message(**{**request, "WaitTimeSeconds": 0})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def run_to_end(queue: Queue, functions: Any, **options: Any) -> redrive.Report:
    """A redrive over the queue, which must end."""
    out = io.StringIO()
    return Redrive(BoundedReceives(queue.sqs, out), functions, queue.url, FUNCTIONS, out=out, **options).run()


def lambda_record(event: Dict[str, Any], condition: str = "RetriesExhausted", error_type: str = "ClientError",
                  error_message: str = "ProvisionedThroughputExceededException") -> Dict[str, Any]:
    """Lambda's OnFailure record; ecs-state's own has condition PermanentError (chalicelib/ingest/dead_letters.py)."""
    return {
        "version": "1.0", "timestamp": iso(EVENT_TIME),
        "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": "arn", "condition": condition,
                           "approximateInvokeCount": 3},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": error_type, "errorMessage": error_message},
    }


def ecs_state_record(event: Dict[str, Any], error_type: str, error_message: str) -> Dict[str, Any]:
    return lambda_record(event, dead_letters.CONDITION, error_type, error_message)


def rule_message(queue: Queue, event: Dict[str, Any]) -> str:
    """What EventBridge's rule-level dead-letter queue receives: the event, the error in attributes."""
    return queue.put(event, ERROR_CODE="SDK_CLIENT_ERROR", ERROR_MESSAGE="Lambda throttled the invocation")


def task(version: int, name: str, **detail: Any) -> Dict[str, Any]:
    event = task_event(version, task_id=name.encode().hex().ljust(32, "0"), **detail)
    event["id"] = f"{name}-{version}-{uuid.uuid4().hex[:6]}"
    return event


def stored_version(client: Any, event: Dict[str, Any]) -> Any:
    item = stored_item(client, TASKS, event["detail"]["taskArn"])
    return None if item is None else item["version"]


def bad_events(dynamodb_local: Any, queue: Queue) -> Dict[str, str]:
    """Events that can never be stored, as they reach the queue: message id -> error type."""
    unversioned = task(1, "unversioned")
    unversioned["detail"]["version"] = "1"
    reserved = task(2, "reserved", cw_note="x")  # a detail field may not start with cw_
    conflict = task(4, "conflict")
    store_unnumbered_version(dynamodb_local, conflict)
    return {
        rule_message(queue, unversioned): "InvalidEvent",
        queue.put(ecs_state_record(reserved, "InvalidEvent", "detail.cw_note: ...")): "InvalidEvent",
        queue.put(ecs_state_record(conflict, "StoredItemConflict", "the stored version is not a number")):
            "StoredItemConflict",
    }


def test_good_events_are_recorded_and_deleted_bad_ones_left_with_their_errors_and_nothing_is_added(
    dynamodb_local, queue
):
    created, stored, updated = task(1, "created"), task(5, "stored"), task(2, "updated")
    duplicate, stale, instance = task(5, "stored"), task(3, "stored"), container_instance_event(1)
    expired = task(1, "expired")
    expired["time"] = iso(EVENT_TIME - 17 * DAY)  # older than any creation window, for a key not stored
    recorder_app = InProcessLambda()
    for event in (stored, task(1, "updated")):  # already stored before the redrive
        assert recorder_app.app.handler_map["task_state_change"](event, lambda_context(TASK_FUNCTION))["outcome"] == "created"
    good = [
        queue.put(lambda_record(created)),
        rule_message(queue, updated),
        queue.put(ecs_state_record(instance, "StoredItemConflict", "since repaired by hand")),
        queue.put(lambda_record(duplicate)),
        rule_message(queue, stale),
        queue.put(lambda_record(expired, "EventAgeExceeded")),
    ]
    bad = bad_events(dynamodb_local, queue)
    not_ecs = {queue.put("not JSON at all"): "no event", queue.put(lambda_record("a string")): "no event",
               queue.put({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}): "another event"}
    before = queue.bodies()

    functions = InProcessLambda()
    report = run_to_end(queue, functions)

    assert dict(report.recorded) == {"created": 2, "updated": 1, "duplicate": 1, "stale": 1}
    assert {id: error_type for id, error_type, _ in report.left[CANNOT_BE_STORED]} == bad
    assert {id: error_type for id, error_type, _ in report.left[NOT_ECS]} == not_ecs and not report.left[FAILED]
    [(too_old, error_type, error)] = report.left[redrive.TOO_OLD]  # nothing stored: its message stays
    assert too_old == good[-1] and error_type == "expired" and "ECS_STATE_RETENTION_DAYS and 16 days" in error
    assert report.left_count == 7 and not report.sent_again and not report.came_back
    after = queue.bodies()  # visible again at once: the left messages, unchanged; nothing added
    assert after == {id: body for id, body in before.items() if id not in good[:-1]}
    assert sorted(functions.calls) == sorted(json.loads(before[id]).get("requestPayload", json.loads(before[id]))["id"]
                                             for id in [*good, *bad])  # each once; the not-ECS ones never
    assert stored_version(dynamodb_local, created) == 1 and stored_version(dynamodb_local, updated) == 2
    assert stored_version(dynamodb_local, stored) == 5 and stored_version(dynamodb_local, expired) is None
    assert stored_item(dynamodb_local, CONTAINER_INSTANCES, instance["detail"]["containerInstanceArn"])["version"] == 1
    lines = report.lines()
    assert lines[0] == "recorded and deleted 5: created 2, duplicate 1, stale 1, updated 1"
    assert lines[1] == "left in the queue 7"
    assert lines[2].startswith("  still cannot be stored 3: InvalidEvent 2 (e.g. detail.")
    assert "; StoredItemConflict 1 (e.g. taskArn arn:aws:ecs:" in lines[2]
    assert lines[3].startswith("  older than the creation window, nothing stored 1: expired 1 (e.g. arn:aws:ecs:")
    assert lines[4] == ("  not an ECS event of this stage 3: another event 1 (e.g. source 'aws.events', "
                        "detail-type 'Scheduled Event'); no event 2 (e.g. the body holds no JSON object)")


def test_when_every_event_fails_again_the_run_ends_and_a_second_run_tries_each_once_more(dynamodb_local, queue):
    bad = bad_events(dynamodb_local, queue)
    before = queue.bodies()
    for run in (1, 2):
        functions = InProcessLambda()
        report = run_to_end(queue, functions)
        assert len(functions.calls) == len(bad) and report.left_count == len(bad), run
        assert queue.bodies() == before


def test_messages_back_in_view_during_the_run_are_not_replayed_again(dynamodb_local, queue):
    # A visibility timeout of 0 brings each message left straight back, as a run longer than the timeout
    # does: its id is remembered, so the run still ends, having tried each once, and says so.
    bad = bad_events(dynamodb_local, queue)
    functions = InProcessLambda()
    report = run_to_end(queue, functions, visibility_timeout=0)
    assert len(functions.calls) == len(bad) and report.left_count == len(bad)
    assert report.came_back == set(bad)
    assert "came back into view during the run" in report.lines()[-1]


def test_a_function_that_ignores_the_marker_sends_copies_and_the_run_still_ends_with_each_event_once(
    dynamodb_local, queue
):
    # The deployed functions predate the redrive marker: each bad event goes to the queue again.
    bad = bad_events(dynamodb_local, queue)
    events_before = sorted(json.dumps(json.loads(body).get("requestPayload", json.loads(body)))
                           for body in queue.bodies().values())
    functions = InProcessLambda(honour_client_context=False)
    report = run_to_end(queue, functions)
    assert len(functions.calls) == len(bad) and report.sent_again == len(bad)
    after = queue.bodies()
    assert not set(after) & set(bad)  # each original deleted: its copy keeps the event
    assert sorted(json.dumps(json.loads(body)["requestPayload"]) for body in after.values()) == events_before
    assert any(line.startswith(f"warning: {len(bad)} event(s) were sent to the queue again") for line in report.lines())


def test_a_throttled_or_failing_function_leaves_its_message_and_the_run_goes_on(dynamodb_local, queue, configure):
    throttled, failing, good = task(1, "throttled"), task(1, "failing"), container_instance_event(2)
    ids = {queue.put(lambda_record(throttled)): "TooManyRequestsException",
           queue.put(lambda_record(failing)): "ResourceNotFoundException"}
    queue.put(lambda_record(good))
    nan = queue.put(ecs_state_record(container_instance_event(3, cpu=float("nan")), "InvalidEvent", "NaN"))
    functions = InProcessLambda()
    functions.throttled.add(throttled["id"])
    configure(task_table="no-such-table")  # DynamoDB answers ResourceNotFoundException
    report = run_to_end(queue, functions)
    assert dict(report.recorded) == {"created": 1}
    assert {id: error_type for id, error_type, _ in report.left[FAILED]} == ids and report.left_count == 3
    assert [error_type for id, error_type, _ in report.left[CANNOT_BE_STORED]] == ["InvalidRequestContentException"]
    assert set(queue.bodies()) == {*ids, nan}


def test_a_dry_run_invokes_and_deletes_nothing(dynamodb_local, queue):
    bad = bad_events(dynamodb_local, queue)
    queue.put(lambda_record(container_instance_event(1)))
    queue.put("not JSON at all")
    before = queue.bodies()
    functions = InProcessLambda()
    report = run_to_end(queue, functions, dry_run=True)
    assert functions.calls == [] and queue.bodies() == before
    assert dict(report.would_replay) == {TASK_FUNCTION: len(bad), INSTANCE_FUNCTION: 1}
    assert report.lines()[0] == (f"dry run, nothing invoked or deleted; would replay 1 to {INSTANCE_FUNCTION}, "
                                 f"{len(bad)} to {TASK_FUNCTION}")


def test_max_messages_bounds_the_run(dynamodb_local, queue):
    for number in range(5):
        queue.put(lambda_record(task(1, f"task{number}")))
    functions = InProcessLambda()
    report = run_to_end(queue, functions, max_messages=3)
    assert len(functions.calls) == 3 and sum(report.recorded.values()) == 3 and len(queue.bodies()) == 2


def test_the_invoke_request_is_synchronous_and_carries_the_marker_the_handler_reads(moto_endpoint, queue):
    event = task(1, "stubbed")
    bad_id = rule_message(queue, event)
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    expected = {"FunctionName": "ecs-state-dev-task_state_change", "InvocationType": "RequestResponse",
                "ClientContext": redrive.CLIENT_CONTEXT, "Payload": json.dumps(event).encode()}
    with Stubber(client) as stub:
        stub.add_response("invoke", invoke_response({"errorType": "InvalidEvent", "errorMessage": "detail.x: bad"},
                                                    "Unhandled"), expected)
        first = run_to_end(queue, client)
        stub.add_response("invoke", invoke_response({"outcome": "created", "version": 1}), expected)
        second = run_to_end(queue, client)
        stub.assert_no_pending_responses()
    assert first.left[CANNOT_BE_STORED] == [(bad_id, "InvalidEvent", "detail.x: bad")]
    assert dict(second.recorded) == {"created": 1} and queue.bodies() == {}
    # The context Lambda's Python runtime makes of this ClientContext is one the recorder knows for a redrive.
    decoded = json.loads(base64.b64decode(redrive.CLIENT_CONTEXT))
    assert dead_letters.redriving(lambda_context(TASK_FUNCTION, decoded))
    assert len(redrive.CLIENT_CONTEXT) <= 3583  # Lambda's limit


# -- make redrive -------------------------------------------------------------------------------


@pytest.fixture
def account(monkeypatch):
    """moto for STS, SQS and DynamoDB (the functions in process, with a Runtime of the test settings)."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE"]:
        del os.environ[name]
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    with mock_aws():
        url = boto3.client("sqs").create_queue(QueueName=PLAN.queue_name)["QueueUrl"]
        process = runtime.use(Runtime(TEST_SETTINGS._replace(dead_letter_queue=url)))
        create_tables(process.dynamodb(), {spec: process.config.table_name(spec) for spec in tables.ALL})
        yield Queue(boto3.client("sqs"), url)
    runtime.reset()


def test_make_redrive_says_where_it_runs_calls_only_what_the_docs_grant_and_exits_non_zero_when_any_are_left(
    account, monkeypatch, capsys
):
    account.put(lambda_record(task(1, "good")))
    unversioned = task(1, "unversioned")
    unversioned["detail"]["version"] = "1"
    left = account.put(ecs_state_record(unversioned, "InvalidEvent", "detail.version: ..."))
    calls = []
    functions = InProcessLambda()
    monkeypatch.setattr(redrive, "lambda_client", lambda session: functions)
    monkeypatch.setattr(redrive, "WAIT_SECONDS", 0)  # moto's long poll is a timed wait: see BoundedReceives
    real_client = boto3.session.Session.client

    def recording_client(session, service, *args, **kwargs):
        client = real_client(session, service, *args, **kwargs)
        client.meta.events.register("before-call", lambda model, **_: calls.append(f"{service}:{model.name}"))
        return client

    monkeypatch.setattr(boto3.session.Session, "client", recording_client)
    assert redrive.main(["--stage", "dev"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "redrive, stage dev: account 123456789012 as arn:aws:sts::123456789012:user/moto, region us-east-1, "
        f"queue {PLAN.queue_name}, functions {INSTANCE_FUNCTION}, {TASK_FUNCTION}")
    assert f"left {left}: still cannot be stored: InvalidEvent: detail.version: must be an integer" in out
    assert "recorded and deleted 1: created 1\nleft in the queue 1\n" in out
    assert set(account.bodies()) == {left}
    # What the tool calls (besides Invoke, on the functions) is what docs/deploy.md tells its caller to be allowed.
    sqs_calls = {call for call in calls if call.startswith("sqs:")}
    assert sqs_calls == {"sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    section = (ROOT / "docs" / "deploy.md").read_text().split("### Redriving the dead-letter queue")[1].split("\n## ")[0]
    for action in sorted(sqs_calls | {"lambda:InvokeFunction"}):
        assert action in section, action
    assert redrive.main(["--stage", "dev", "--dry-run"]) == 0


@pytest.mark.parametrize("argv, problem", [
    (["--stage", "dev", "--max-messages", "0"], "--max-messages must be at least 1"),
    (["--stage", "dev", "--visibility-timeout", "5"], "--visibility-timeout must be from 60 to 43200"),
    ([], "the following arguments are required: --stage"),
])
def test_arguments_are_checked(argv, problem, capsys):
    with pytest.raises(SystemExit):
        redrive.main(argv)
    assert problem in capsys.readouterr().err
