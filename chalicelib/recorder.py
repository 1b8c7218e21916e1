"""Record one EventBridge ECS event: validate, write once, log and count the outcome.

The on_cw_event handlers call ``record``; everything that must behave the
same wherever an event enters goes through here.
"""
from typing import Any, Dict, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import dead_letters, observability, settings
from chalicelib.errors import InvalidEvent, StoredItemConflict
from chalicelib.events import parse_event, table_of
from chalicelib.store import StateStore

INVALID = "invalid"  # metric for events refused before any write
FAILED = "failed"  # metric for events DynamoDB did not take
DEAD_LETTERED = "dead_lettered"  # outcome of an event that can never be stored, sent to the queue at once
# Errors no retry can mend (ItemTooLarge is an InvalidEvent).
PERMANENT_ERRORS = (InvalidEvent, StoredItemConflict)


def record(event: Any, context: Any = None, store: Optional[StateStore] = None) -> Dict[str, Any]:
    """Store the event's state unless a newer or equal version is stored.

    Returns a JSON-serialisable summary: outcome, kind, key, version, and the
    stored version (the one replaced, or the one that kept this event out).
    An event that can never be stored (bad input, a foreign stored item) goes
    to the stage's dead-letter queue at once (chalicelib/dead_letters.py) and
    is answered "dead_lettered"; without a queue (local runs), or when a
    redrive replays it from the queue (dead_letters.redriving), it raises, as
    every other failure does: DynamoDB's errors propagate after botocore's
    retries, so the invocation fails and Lambda retries it.
    """
    request_id = getattr(context, "aws_request_id", None)
    rules = settings.item_rules()  # a bad stage setting raises here, naming its variable
    try:
        change = parse_event(event, rules)
    except InvalidEvent as error:
        observability.log_failure("event rejected", {"field": error.field, "problem": error.problem}, request_id)
        table = table_of(event)
        observability.count(INVALID, table.kind if table else "unknown")
        return _dead_letter(event, error, context, table.kind if table else "unknown")
    target = store if store is not None else StateStore(
        settings.dynamodb_client(), marks=settings.high_water_marks(), retention_seconds=rules.retention_seconds
    )
    try:
        result = target.put_if_newer(change)
    except Exception as error:
        observability.log_failure(
            "event not stored", {"kind": change.table.kind, "key": change.key, "version": change.version}, request_id
        )
        observability.count(FAILED, change.table.kind)
        if isinstance(error, PERMANENT_ERRORS):
            return _dead_letter(event, error, context, change.table.kind)
        raise
    summary = {
        "outcome": result.outcome,
        "kind": change.table.kind,
        "key": change.key,
        "version": change.version,
        "stored_version": result.stored_version,
    }
    # The log line also names the event, which the item does not store (events.METADATA_FIELDS).
    observability.log_result({**summary, "event_id": event.get("id")}, request_id)
    observability.count(result.outcome, change.table.kind)
    return summary


def _dead_letter(event: Any, error: Exception, context: Any, kind: str) -> Dict[str, Any]:
    """Send a permanently failed event to the dead-letter queue; without one, or in a redrive, raise ``error``."""
    if not settings.dead_letter_queue() or dead_letters.redriving(context):
        raise error  # a redrive leaves its message in the queue: a copy would be replayed again
    try:
        message_id = dead_letters.send(event, error, context)
    except (ClientError, BotoCoreError) as queue_error:
        raise error from queue_error  # then Lambda's retries and OnFailure destination keep it
    summary = {"outcome": DEAD_LETTERED, "kind": kind, "error": type(error).__name__, "message": str(error),
               "message_id": message_id}
    observability.log_result(summary, getattr(context, "aws_request_id", None), "event sent to the dead-letter queue")
    return summary
