"""`make redrive STAGE=<stage>`: replay the dead-letter queue's events through the stage's functions.

Each message's event is sent to its event function synchronously; the message
is deleted only once the function answers that the event is recorded (created,
updated, duplicate or stale: replaying is safe, an older or equal version never
overwrites what is stored). An event answered "expired" (older than the
creation window, nothing stored) is left, with what to do about it. The Invoke request carries the
redrive marker in its ClientContext (chalicelib/ingest/dead_letters.py), so an event
that still cannot be stored fails its invocation instead of being sent to the
queue again, and its message stays where it is.

The run ends: a message is tried once per run (its id is remembered), messages
left are hidden for --visibility-timeout meanwhile, and the run stops when a
receive brings nothing new. Then the messages left become visible again at
once, and it prints the count of each outcome and of the messages left in the
queue (events that still cannot be stored, events too old to create their
item, failures that may pass on a later run, messages that are not ECS events), with their errors; it exits non-zero
if any are left. Your credentials need sqs:GetQueueUrl, ReceiveMessage,
DeleteMessage and ChangeMessageVisibility on the queue, and
lambda:InvokeFunction on the two event functions.
"""
import argparse
import base64
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, TextIO, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import RETENTION_DAYS_ENV
from chalicelib.errors import PermanentError, aws_error_code
from chalicelib.ingest import dead_letters, recorder
from chalicelib.model.lifecycle import DELIVERY_HORIZON_SECONDS
from chalicelib.store import EXPIRED, OUTCOMES
from tools.stage import DeployError, StagePlan, aws_caller, cli, stage_plan

# What the function answers for an event it has recorded: its message may go.
# (Not "expired": an event older than the creation window stored nothing, and must not be lost.)
RECORDED = frozenset(OUTCOMES) - {EXPIRED}
# SQS's limits: a receive returns at most 10 messages; a visibility timeout is at most 12 hours.
BATCH = 10
MAX_VISIBILITY_SECONDS = 43_200
# Long enough for a run of thousands of messages (each invocation takes a PutItem's time;
# at most the function's 30 s timeout); a run that outlasts it says so, and can be run again.
DEFAULT_VISIBILITY_SECONDS = 900
# Long polling: the receive asks every SQS server, so an empty answer means no visible message.
WAIT_SECONDS = 1
CLIENT_CONTEXT = base64.b64encode(
    json.dumps({"custom": {dead_letters.REDRIVE_MARKER: "true"}}).encode()
).decode()
DELIVERY_HORIZON_DAYS = DELIVERY_HORIZON_SECONDS // 86_400
# Why a message is left in the queue.
CANNOT_BE_STORED = "still cannot be stored"
FAILED = "failed, may pass on a later run"
NOT_ECS = "not an ECS event of this stage"
TOO_OLD = "older than the creation window, nothing stored"


def _error_names(classes: Tuple[type, ...]) -> Set[str]:
    return {name for cls in classes for name in (cls.__name__, *_error_names(tuple(cls.__subclasses__())))}


# The errorType of an invocation failed by an event that can never be stored (ItemTooLarge included),
# and Lambda's refusals of an event as a payload (not JSON Lambda accepts, too large): no replay mends them.
PERMANENT_ERROR_TYPES = frozenset(_error_names((PermanentError,)))
REFUSED_PAYLOAD_ERRORS = frozenset({"InvalidRequestContentException", "RequestTooLargeException"})


@dataclass
class Report:
    """What a run did; ``left`` maps each reason to (message id, error type, error) of each message left."""

    dry_run: bool = False
    recorded: Counter = field(default_factory=Counter)
    left: Dict[str, List[Tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    would_replay: Counter = field(default_factory=Counter)  # --dry-run: function -> messages
    sent_again: int = 0  # answered dead_lettered: the deployed function predates the redrive marker
    came_back: Set[str] = field(default_factory=set)  # received again in the same run: it outlasted the timeout
    not_released: int = 0

    @property
    def left_count(self) -> int:
        return sum(len(messages) for messages in self.left.values())

    def lines(self) -> List[str]:
        lines = []
        if self.dry_run:
            lines.append("dry run, nothing invoked or deleted; would replay "
                         + ", ".join(f"{count} to {name}" for name, count in sorted(self.would_replay.items())))
        else:
            lines.append(f"recorded and deleted {sum(self.recorded.values())}"
                         + "".join(f"{', ' if i else ': '}{outcome} {count}"
                                   for i, (outcome, count) in enumerate(sorted(self.recorded.items()))))
        lines.append(f"left in the queue {self.left_count}")
        for reason in (CANNOT_BE_STORED, TOO_OLD, FAILED, NOT_ECS):
            if self.left.get(reason):
                lines.append(f"  {reason} {len(self.left[reason])}: {_summary(self.left[reason])}")
        if self.sent_again:
            lines.append(f"warning: {self.sent_again} event(s) were sent to the queue again by a function that does "
                         "not know the redrive marker (deploy the current ecs-state); each original was deleted, "
                         "its copy is left")
        if self.came_back:
            lines.append(f"warning: {len(self.came_back)} message(s) came back into view during the run (it outlasted "
                         "--visibility-timeout): some messages may not have been tried; run again")
        if self.not_released:
            lines.append(f"{self.not_released} message(s) left could not be made visible at once: they will be "
                         "after --visibility-timeout")
        return lines


def _summary(messages: List[Tuple[str, str, str]]) -> str:
    """The count of each error type, with the first one's error."""
    by_type: Dict[str, List[str]] = defaultdict(list)
    for _, error_type, error in messages:
        by_type[error_type].append(error)
    return "; ".join(f"{name} {len(errors)} (e.g. {_short(errors[0])})" for name, errors in sorted(by_type.items()))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_functions(plan: StagePlan) -> Dict[Tuple[str, str], str]:
    """(source, detail-type) of each event function's rule -> the function's deployed name."""
    from chalice.app import CloudWatchEventConfig

    from app import app

    functions = {}
    for source in app.event_sources:
        if isinstance(source, CloudWatchEventConfig):
            name = f"{plan.deployment}-{source.name}"
            assert name in plan.event_function_names, name
            pattern = source.event_pattern
            for event_source in pattern["source"]:
                for detail_type in pattern["detail-type"]:
                    functions[(event_source, detail_type)] = name
    return functions


def unwrap(body: str) -> Optional[Dict[str, Any]]:
    """The message's event, in each of the queue's shapes: Lambda's OnFailure record and ecs-state's
    own (the event in requestPayload), EventBridge's (the event itself); None if it holds no JSON object."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    event = document.get("requestPayload") if isinstance(document, dict) and "requestPayload" in document else document
    return event if isinstance(event, dict) else None


class Redrive:
    """One run over one queue (see the module's docstring)."""

    def __init__(self, sqs: Any, lambda_client: Any, queue_url: str, functions: Mapping[Tuple[str, str], str],
                 visibility_timeout: int = DEFAULT_VISIBILITY_SECONDS, max_messages: Optional[int] = None,
                 dry_run: bool = False, out: Optional[TextIO] = None) -> None:
        self.sqs, self.lambda_client, self.queue_url, self.functions = sqs, lambda_client, queue_url, functions
        self.visibility_timeout, self.max_messages, self.dry_run, self.out = (
            visibility_timeout, max_messages, dry_run, out or sys.stdout)
        self.report = Report(dry_run=dry_run)
        self.seen: Set[str] = set()  # every message id tried (and the copies a function sent again)
        self.held: Dict[str, str] = {}  # message id -> latest receipt handle, of each message received and kept

    def run(self) -> Report:
        tried = 0
        seen_only = 0  # receives in a row that brought only messages already tried
        while self.max_messages is None or tried < self.max_messages:
            wanted = BATCH if self.max_messages is None else min(BATCH, self.max_messages - tried)
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=wanted, VisibilityTimeout=self.visibility_timeout,
                WaitTimeSeconds=WAIT_SECONDS, MessageAttributeNames=["All"],
            ).get("Messages", [])
            new = [message for message in batch if message["MessageId"] not in self.seen]
            for message in batch:
                if message["MessageId"] in self.seen:
                    if message["MessageId"] in self.held:
                        self.report.came_back.add(message["MessageId"])
                    self.held[message["MessageId"]] = message["ReceiptHandle"]  # hidden again by this receive
            if not new:
                # Each such receive hides up to `wanted` messages already tried: once all are hidden,
                # the next receive brings new ones or nothing.
                seen_only += 1
                if not batch or seen_only > math.ceil(len(self.held) / wanted):
                    break
                continue
            seen_only = 0
            for message in new:
                self.seen.add(message["MessageId"])
                tried += 1
                self._replay(message)
        self._release()
        return self.report

    def _replay(self, message: Mapping[str, Any]) -> None:
        event = unwrap(message["Body"])
        if event is None:
            return self._leave(message, NOT_ECS, "no event", "the body holds no JSON object")
        function = self.functions.get((event.get("source"), event.get("detail-type")))
        if function is None:
            return self._leave(message, NOT_ECS, "another event",
                               f"source {event.get('source')!r}, detail-type {event.get('detail-type')!r}")
        if self.dry_run:
            self.report.would_replay[function] += 1
            return self._keep(message)
        try:
            response = self.lambda_client.invoke(
                FunctionName=function, InvocationType="RequestResponse", ClientContext=CLIENT_CONTEXT,
                Payload=json.dumps(event).encode(),
            )
            answer = json.loads(response["Payload"].read() or b"null")
        except (ClientError, BotoCoreError, ValueError) as error:  # throttled, not allowed, timed out, ...
            error_type = _error_type(error)
            reason = CANNOT_BE_STORED if error_type in REFUSED_PAYLOAD_ERRORS else FAILED
            return self._leave(message, reason, error_type, str(error))
        if response.get("FunctionError"):
            answer = answer if isinstance(answer, dict) else {}
            error_type = str(answer.get("errorType", response["FunctionError"]))
            reason = CANNOT_BE_STORED if error_type in PERMANENT_ERROR_TYPES else FAILED
            return self._leave(message, reason, error_type, str(answer.get("errorMessage", "")))
        outcome = answer.get("outcome") if isinstance(answer, dict) else None
        if outcome in RECORDED:
            not_deleted = self._delete(message)
            if not_deleted:  # recorded: a later run finds it a duplicate
                return self._leave(message, FAILED, _error_type(not_deleted), f"recorded {outcome}, not deleted: "
                                   f"{not_deleted}")
            self.report.recorded[outcome] += 1
            return None
        if outcome == EXPIRED:
            return self._leave(message, TOO_OLD, EXPIRED, (
                f"{answer.get('key')} version {answer.get('version')}, sent {event.get('time')}: an event creates its "
                f"item only while younger than {RETENTION_DAYS_ENV} and {DELIVERY_HORIZON_DAYS} days, "
                f"whichever is less; at {DELIVERY_HORIZON_DAYS} days or more, a redrive stores it (docs/reconcile.md)"))
        if outcome == recorder.DEAD_LETTERED:
            # A function that ignores the marker sent a copy, which keeps the event: it is not replayed,
            # and the original goes, so that the queue holds the event once.
            self.seen.add(answer.get("message_id"))
            self.report.sent_again += 1
            not_deleted = self._delete(message)
            return self._leave(message, CANNOT_BE_STORED, str(answer.get("error")), str(answer.get("message")),
                               f" (sent again as message {answer.get('message_id')}"
                               + (f"; this one not deleted: {not_deleted})" if not_deleted else ")"),
                               keep=bool(not_deleted))
        return self._leave(message, FAILED, "unexpected answer", f"from {function}: {_short(json.dumps(answer))}")

    def _delete(self, message: Mapping[str, Any]) -> Optional[Exception]:
        """Delete the message; the error if it could not be."""
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        except (ClientError, BotoCoreError) as error:
            return error
        return None

    def _leave(self, message: Mapping[str, Any], reason: str, error_type: str, error: str, note: str = "",
               keep: bool = True) -> None:
        self.report.left[reason].append((message["MessageId"], error_type, error))
        print(f"left {message['MessageId']}: {reason}: {error_type}: {_short(error)}{note}", file=self.out, flush=True)
        if keep:
            self._keep(message)

    def _keep(self, message: Mapping[str, Any]) -> None:
        self.held[message["MessageId"]] = message["ReceiptHandle"]

    def _release(self) -> None:
        """The messages kept become visible again now, not after the visibility timeout."""
        for receipt_handle in self.held.values():
            try:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt_handle,
                                                   VisibilityTimeout=0)
            except (ClientError, BotoCoreError):
                self.report.not_released += 1


def _error_type(error: Exception) -> str:
    """A service error's code (TooManyRequestsException), else the exception's class (ReadTimeoutError)."""
    return aws_error_code(error) or type(error).__name__


def lambda_client(session: Any) -> Any:
    """Invoke waits for the function (at most its 30 s timeout): botocore's 60 s read timeout covers it,
    and a retried invocation only replays the event again."""
    from botocore.config import Config

    return session.client("lambda", config=Config(retries={"mode": "standard", "total_max_attempts": 3}))


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="read the messages and say where each would go; invoke and delete nothing")
    parser.add_argument("--max-messages", type=int, metavar="N", help="try at most N messages (default: all)")
    parser.add_argument("--visibility-timeout", type=int, metavar="SECONDS", default=DEFAULT_VISIBILITY_SECONDS,
                        help="how long the messages tried stay hidden during the run "
                        f"(default {DEFAULT_VISIBILITY_SECONDS}, at most {MAX_VISIBILITY_SECONDS})")
    args = parser.parse_args(argv)
    if args.max_messages is not None and args.max_messages < 1:
        parser.error("--max-messages must be at least 1")
    if not 60 <= args.visibility_timeout <= MAX_VISIBILITY_SECONDS:
        parser.error(f"--visibility-timeout must be from 60 to {MAX_VISIBILITY_SECONDS}")

    plan = stage_plan(args.stage)
    functions = event_functions(plan)
    session, identity = aws_caller()
    sqs = session.client("sqs")
    try:
        queue_url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    except ClientError as error:
        raise DeployError(f"the queue {plan.queue_name}: {error}") from None
    print(f"redrive, stage {plan.stage}: account {identity['Account']} as {identity['Arn']}, "
          f"region {session.region_name}, queue {plan.queue_name}, functions "
          f"{', '.join(sorted(set(functions.values())))}", flush=True)
    report = Redrive(sqs, lambda_client(session), queue_url, functions, visibility_timeout=args.visibility_timeout,
                     max_messages=args.max_messages, dry_run=args.dry_run).run()
    for line in report.lines():
        print(line)
    return 1 if report.left_count and not args.dry_run else 0


if __name__ == "__main__":
    cli(main)
