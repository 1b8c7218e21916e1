"""POST /events (the local stage only): test events through the on_cw_event handlers, as EventBridge delivers them."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple, Union

from botocore.exceptions import BotoCoreError, ClientError
from chalice import BadRequestError, Response

from chalicelib.errors import InvalidEvent, PermanentError, StoredItemConflict
from chalicelib.ingest.events import parse_event
from chalicelib.model.clock import Clock
from chalicelib.model.lifecycle import ItemRules

MAX_EVENTS_PER_REQUEST = 100
# curl --data sends form-encoded; the body is parsed as JSON whatever it is labelled.
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]


def post_events(app: Any, raw_body: Union[str, bytes, None], rules: ItemRules, now: Clock) -> Any:
    """Record one event or an array of them through the on_cw_event handlers, as EventBridge would.

    Every event is validated before the first is written: one bad event gets
    a 400 naming it, and nothing is written. Answers with each event's result
    (an object for one event, an array for an array). If DynamoDB fails an
    event, the events before it stay recorded; the answer lists them, and
    posting the whole body again is safe (they come back as duplicates).
    """
    events, single = _events_from_body(raw_body)
    for position, event in enumerate(events):
        try:
            parse_event(event, rules, now)
        except InvalidEvent as error:
            raise BadRequestError(f"{_event_field(position, single)}{error.field}: {error.problem}") from None
    handlers = event_handlers(app)
    results: List[Dict[str, Any]] = []
    for position, event in enumerate(events):
        name = handlers[event["detail-type"]]
        try:
            results.append(app.handler_map[name](event, app.lambda_context))
        except (PermanentError, ClientError, BotoCoreError) as error:
            return _stopped(error, _event_field(position, single), results)
    return results[0] if single else results


def event_handlers(app: Any) -> Dict[str, str]:
    """detail-type -> the name of the handler whose EventBridge rule matches it, as deployed."""
    return {
        detail_type: source.name
        for source in app.event_sources
        for detail_type in getattr(source, "event_pattern", {}).get("detail-type", [])  # (schedules have none)
    }


def _events_from_body(raw_body: Union[str, bytes, None]) -> Tuple[List[Any], bool]:
    try:
        body = json.loads(raw_body or b"")
    except (ValueError, RecursionError) as error:
        raise BadRequestError(f"body: is not JSON ({error})") from None
    if isinstance(body, dict):
        return [body], True
    if not isinstance(body, list):
        raise BadRequestError("body: must be an event (a JSON object) or an array of events, "
                              f"got {type(body).__name__}")
    if not body:
        raise BadRequestError("body: the array holds no events")
    if len(body) > MAX_EVENTS_PER_REQUEST:
        raise BadRequestError(f"body: holds {len(body)} events; post at most {MAX_EVENTS_PER_REQUEST} at a time")
    return body, False


def _event_field(position: int, single: bool) -> str:
    return "" if single else f"events[{position}]."


def _stopped(error: Exception, where: str, results: List[Dict[str, Any]]) -> Response:
    event = f"{where.rstrip('.')}: " if where else ""  # "events[2]: " in an array
    if isinstance(error, InvalidEvent):  # DynamoDB refused the item (its size, by DynamoDB's count)
        status, code, message = 400, "BadRequestError", f"{where}{error.field}: {error.problem}"
    elif isinstance(error, StoredItemConflict):
        status, code, message = 409, "ConflictError", f"{event}{error}"
    else:
        status, code, message = 502, "DynamoDBError", f"{event}DynamoDB failed: {error}"
    return Response(status_code=status, body={"Code": code, "Message": message, "recorded": results})
