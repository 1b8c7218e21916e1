"""Record one EventBridge ECS event: validate, write once, log and count the outcome.

The on_cw_event handlers call Recorder.record (through chalicelib/runtime.py);
everything that must behave the same wherever an event enters goes through here.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import InvalidEvent, PermanentError
from chalicelib.ingest.dead_letters import DeadLetters, redriving
from chalicelib.ingest.events import parse_event, table_of
from chalicelib.model.clock import Clock
from chalicelib.model.lifecycle import ItemRules
from chalicelib.observability import Telemetry
from chalicelib.store import StateStore

INVALID = "invalid"  # metric for events refused before any write
FAILED = "failed"  # metric for events DynamoDB did not take
DEAD_LETTERED = "dead_lettered"  # outcome of an event that can never be stored, sent to the queue at once


class Recorder:
    """``rules``: what the stage's settings change in an item; ``dead_letters``: the stage's queue
    (None: an event that can never be stored raises, as in local runs); ``now``: the wall clock."""

    def __init__(self, store: StateStore, rules: ItemRules, dead_letters: Optional[DeadLetters],
                 telemetry: Telemetry, now: Clock = time.time) -> None:
        self.store = store
        self.rules = rules
        self.dead_letters = dead_letters
        self.telemetry = telemetry
        self.now = now

    def record(self, event: Any, context: Any = None) -> Dict[str, Any]:
        """Store the event's state unless a newer or equal version is stored.

        Returns a JSON-serialisable summary: outcome, kind, key, version, and the
        stored version (the one replaced, or the one that kept this event out).
        An event that can never be stored (a PermanentError: bad input, a foreign
        stored item) goes to the stage's dead-letter queue at once
        (chalicelib/ingest/dead_letters.py) and is answered "dead_lettered";
        without a queue (local runs), or when a redrive replays it from the queue
        (dead_letters.redriving), it raises, as every other failure does:
        DynamoDB's errors propagate after botocore's retries, so the invocation
        fails and Lambda retries it.
        """
        request_id = getattr(context, "aws_request_id", None)
        try:
            change = parse_event(event, self.rules, self.now)
        except InvalidEvent as error:
            self.telemetry.log_failure("event rejected", {"field": error.field, "problem": error.problem}, request_id)
            table = table_of(event)
            kind = table.kind if table else "unknown"
            self.telemetry.count(INVALID, kind)
            return self._dead_letter(event, error, context, kind)
        try:
            result = self.store.put_if_newer(change)
        except Exception as error:
            self.telemetry.log_failure(
                "event not stored",
                {"kind": change.table.kind, "key": change.key, "version": change.version},
                request_id,
            )
            self.telemetry.count(FAILED, change.table.kind)
            if isinstance(error, PermanentError):
                return self._dead_letter(event, error, context, change.table.kind)
            raise
        summary = {
            "outcome": result.outcome,
            "kind": change.table.kind,
            "key": change.key,
            "version": change.version,
            "stored_version": result.stored_version,
        }
        # The log line also names the event, which the item does not store (ingest/events.py).
        self.telemetry.log_result({**summary, "event_id": event.get("id")}, request_id)
        self.telemetry.count(result.outcome, change.table.kind)
        return summary

    def _dead_letter(self, event: Any, error: Exception, context: Any, kind: str) -> Dict[str, Any]:
        """Send a permanently failed event to the dead-letter queue; without one, or in a redrive, raise ``error``."""
        if self.dead_letters is None or redriving(context):
            raise error  # a redrive leaves its message in the queue: a copy would be replayed again
        try:
            message_id = self.dead_letters.send(event, error, context)
        except (ClientError, BotoCoreError) as queue_error:
            raise error from queue_error  # then Lambda's retries and OnFailure destination keep it
        summary = {"outcome": DEAD_LETTERED, "kind": kind, "error": type(error).__name__, "message": str(error),
                   "message_id": message_id}
        self.telemetry.log_result(summary, getattr(context, "aws_request_id", None),
                                  "event sent to the dead-letter queue")
        return summary
