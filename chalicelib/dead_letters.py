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
import json
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

from chalicelib import settings

CONDITION = "PermanentError"  # Lambda's own records say RetriesExhausted or EventAgeExceeded
# A key of the ClientContext's "custom" map, which Lambda passes to synchronous invocations
# only (context.client_context.custom): EventBridge's asynchronous deliveries never carry it.
REDRIVE_MARKER = "ecs-state-redrive"
_queue_urls: Dict[Tuple[int, str], str] = {}  # (client, queue name) -> URL


def send(event: Any, error: Exception, context: Any) -> str:
    """Send ``event`` with ``error`` to the stage's dead-letter queue; return the message id.

    Raises botocore's errors if the queue cannot take it (the caller then lets
    the invocation fail, so Lambda's retries and OnFailure destination apply).
    """
    client = settings.sqs_client()
    response = client.send_message(QueueUrl=_queue_url(client), MessageBody=json.dumps(record(event, error, context)))
    return response["MessageId"]


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


def _queue_url(client: Any) -> str:
    """The setting is the queue's URL (packaged stack) or its name (chalice deploy), resolved once."""
    queue = settings.dead_letter_queue()
    if queue.startswith("https://") or queue.startswith("http://"):
        return queue
    key = (id(client), queue)  # a new client (settings.reset_client) asks again
    if key not in _queue_urls:
        _queue_urls[key] = client.get_queue_url(QueueName=queue)["QueueUrl"]
    return _queue_urls[key]
