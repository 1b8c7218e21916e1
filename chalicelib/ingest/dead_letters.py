"""An event that can never be stored goes to the dead-letter queue at once, with its error.

Lambda retries a failed asynchronous invocation twice whatever failed it, and
its retry setting is per function, not per error: raising an InvalidEvent,
ItemTooLarge or StoredItemConflict cost three failed runs, three error logs
and three metric counts, minutes apart, for an event that could never be
stored. Only the handler knows an error is permanent, so it sends the event
itself, once, and returns; transient errors (throttling, timeouts, DynamoDB
down) still raise, so Lambda retries them and its OnFailure destination keeps
them. The message is the record Lambda's OnFailure destination writes
(requestPayload: the event; responsePayload: the error), so one redrive
procedure serves both (docs/deploy.md).

A redrive (tools/redrive.py) replays the queue's events through the functions,
synchronously, with REDRIVE_MARKER in the Invoke request's ClientContext. For
such an invocation the handler raises instead of sending the event again: the
caller sees the error and leaves the original message, where a copy would be
received, replayed and copied again by the same redrive, without end.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

CONDITION = "PermanentError"  # Lambda's own records say RetriesExhausted or EventAgeExceeded
# A key of the ClientContext's "custom" map, which Lambda passes to synchronous invocations
# only (context.client_context.custom): EventBridge's asynchronous deliveries never carry it.
REDRIVE_MARKER = "ecs-state-redrive"
CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, MAX_ATTEMPTS = 2, 3, 3  # as DynamoDB's (chalicelib/store/client.py)


class DeadLetters:
    """The stage's dead-letter queue, by its name (chalice deploy) or its URL (the packaged stack)."""

    def __init__(self, queue: str, client: Callable[[], "SQSClient"]) -> None:
        self.queue = queue
        self._client = client  # the process's SQS client, made on first use: a dead letter is rare
        self._url: Optional[str] = queue if queue.startswith(("https://", "http://")) else None
        self._lock = threading.Lock()

    def send(self, event: Any, error: Exception, context: Any) -> str:
        """Send ``event`` with ``error`` to the queue; return the message id.

        Raises botocore's errors if the queue cannot take it (the caller then lets
        the invocation fail, so Lambda's retries and OnFailure destination apply).
        """
        client = self._client()
        response = client.send_message(QueueUrl=self._queue_url(client),
                                       MessageBody=json.dumps(record(event, error, context)))
        return response["MessageId"]

    def _queue_url(self, client: "SQSClient") -> str:
        """A name is resolved to its URL once."""
        if self._url is None:
            with self._lock:
                if self._url is None:
                    self._url = client.get_queue_url(QueueName=self.queue)["QueueUrl"]
        return self._url


def new_sqs_client() -> "SQSClient":
    """The SQS client, for the rare event sent to the dead-letter queue."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("sqs", config=Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    ))


def redriving(context: Any) -> bool:
    """Whether this invocation is a redrive's replay (tools/redrive.py) of a message of the queue."""
    custom = getattr(getattr(context, "client_context", None), "custom", None)
    return isinstance(custom, dict) and bool(custom.get(REDRIVE_MARKER))


def record(event: Any, error: Exception, context: Any) -> Dict[str, Any]:
    """The message: the shape of a Lambda OnFailure destination record."""
    request_id: Optional[str] = getattr(context, "aws_request_id", None)
    return {
        "version": "1.0",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": request_id,
            "functionArn": getattr(context, "invoked_function_arn", None),
            "condition": CONDITION,
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Handled"},
        "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)},
    }
