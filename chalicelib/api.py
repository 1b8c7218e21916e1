"""The HTTP API behind app.py's routes: reading the recorded state, and posting test events.

Every read is one GetItem or one Query on a table or its cluster index, never
a scan, so a request costs the same however many items the table holds.
Bad parameters are refused with a 400 whose message starts with the
parameter's name, before any request to DynamoDB.
"""
import base64
import binascii
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError
from chalice import BadRequestError, ChaliceViewError, NotFoundError, Response

from chalicelib import settings
from chalicelib.attributes import AttributeValue, decode
from chalicelib.errors import InvalidEvent, StoredItemConflict
from chalicelib.events import parse_event
from chalicelib.tables import TableSpec

MAX_EVENTS_PER_REQUEST = 100

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
LIST_PARAMETERS = ("cluster", "status", "limit", "next")
GET_PARAMETERS = ("cluster",)

_PARTITION_REGION_ACCOUNT = r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}"
_CLUSTER_ARN = re.compile(rf"({_PARTITION_REGION_ACCOUNT}):cluster/([A-Za-z0-9_-]{{1,255}})")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESOURCE_PATH = r"[A-Za-z0-9_-]{1,255}(/[A-Za-z0-9_-]{1,255})?"  # [<cluster>/]<id>
_STATUS = re.compile(r"[A-Za-z_]{1,64}")


# -- GET /tasks, GET /container-instances ------------------------------------


def list_items(table: TableSpec, query_params: Optional[Mapping[str, str]]) -> Dict[str, Any]:
    """One page of a cluster's items, optionally of one status: ``{"items": [...], "next": token or null}``.

    Asks for one item more than the page holds, so ``next`` is null exactly
    when nothing follows (unless DynamoDB's 1 MB page cut the query short).
    """
    params = _parameters(query_params, LIST_PARAMETERS)
    if "cluster" not in params:
        raise _bad("cluster", "is required (a cluster ARN): listing without one would need a table scan")
    cluster = _cluster_arn(params["cluster"]).group(0)
    status = params.get("status")
    if status is not None and not _STATUS.fullmatch(status):
        raise _bad("status", f"must be an ECS status such as RUNNING or ACTIVE, got {status!r}")
    limit = _limit(params.get("limit"))
    index = table.cluster_index
    names = {"#cluster": index.hash_key}
    values = {":cluster": {"S": cluster}}
    condition = "#cluster = :cluster"
    if status is not None:
        condition += " AND #status = :status"
        names["#status"] = index.range_key
        values[":status"] = {"S": status}
    request: Dict[str, Any] = {
        "TableName": settings.table_name(table),
        "IndexName": index.name,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "Limit": limit + 1,
    }
    if "next" in params:
        request["ExclusiveStartKey"] = _start_key(params["next"], table, cluster, status)
    try:
        response = settings.dynamodb_client().query(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ValidationException" and "index" in str(error):
            # e.g. the docs example's own tables, which have no index
            raise ChaliceViewError(
                f"table {request['TableName']} has no index {index.name}: "
                "`make deploy` adds it (see docs/local-and-api.md)"
            ) from error
        raise
    items = response.get("Items", [])
    if len(items) > limit:
        items = items[:limit]
        next_token: Optional[str] = _token(table, items[-1])
    elif response.get("LastEvaluatedKey"):
        next_token = _token(table, response["LastEvaluatedKey"])
    else:
        next_token = None
    return {"items": [to_json(item) for item in items], "next": next_token}


def _token(table: TableSpec, item: Mapping[str, AttributeValue]) -> str:
    """The opaque ``next`` token: the page's last key (table and index keys), as base64url JSON."""
    key = {name: item[name]["S"] for name in _page_key_names(table)}
    text = json.dumps(key, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def _start_key(token: str, table: TableSpec, cluster: str, status: Optional[str]) -> Dict[str, AttributeValue]:
    """The ExclusiveStartKey a token stands for, if it came from this same listing."""
    problem = "is not a token from this listing: pass back the `next` of the previous page unchanged"
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise _bad("next", problem) from None
    index = table.cluster_index
    if (
        not isinstance(key, dict)
        or set(key) != set(_page_key_names(table))
        or not all(isinstance(value, str) and value for value in key.values())
        or key[index.hash_key] != cluster
        or (status is not None and key[index.range_key] != status)
    ):
        raise _bad("next", problem)
    return {name: {"S": value} for name, value in key.items()}


def _page_key_names(table: TableSpec) -> Tuple[str, ...]:
    return (table.key, *table.cluster_index.key_attributes)


def _limit(text: Optional[str]) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


# -- GET /tasks/{id}, GET /container-instances/{id} --------------------------


def get_item(table: TableSpec, raw_id: str, query_params: Optional[Mapping[str, str]]) -> Dict[str, Any]:
    """The stored item of one task or container instance (a strongly consistent read), or 404."""
    params = _parameters(query_params, GET_PARAMETERS)
    key = resolve_key(table, raw_id, params.get("cluster"))
    response = settings.dynamodb_client().get_item(
        TableName=settings.table_name(table), Key={table.key: {"S": key}}, ConsistentRead=True
    )
    if "Item" not in response:
        raise NotFoundError(f"{table.key} {key} is not recorded")
    return to_json(response["Item"])


def resolve_key(table: TableSpec, raw_id: str, cluster: Optional[str]) -> str:
    """The ARN an id names: the (URL-encoded) ARN itself, or an ID in ``cluster``.

    Like ECS's own Describe* calls, an ID needs its cluster: the ARN holds the
    region, the account and the cluster name, and the key is the whole ARN.
    """
    ident = unquote(raw_id)  # API Gateway may pass %2F through; ARNs and IDs hold no '%'
    resource = table.arn_resource
    noun = resource.replace("-", " ")
    if ident.startswith("arn:"):
        if cluster is not None:
            raise _bad("cluster", f"only goes with a {noun} ID: the ARN already names its cluster")
        if not re.fullmatch(rf"{_PARTITION_REGION_ACCOUNT}:{resource}/{_RESOURCE_PATH}", ident):
            raise _bad("id", f"is not a {noun} ARN (arn:aws:ecs:<region>:<account>:{resource}/<cluster>/<id>)")
        return ident
    if not _RESOURCE_ID.fullmatch(ident):
        raise _bad("id", f"must be a {noun} ID or a URL-encoded {noun} ARN, got {ident[:80]!r}")
    if cluster is None:
        raise _bad("cluster", f"is required with a {noun} ID (or give the URL-encoded {noun} ARN as id)")
    partition_region_account, cluster_name = _cluster_arn(cluster).groups()
    return f"{partition_region_account}:{resource}/{cluster_name}/{ident}"


# -- shared parameter checks -------------------------------------------------


def _parameters(query_params: Optional[Mapping[str, str]], allowed: Tuple[str, ...]) -> Dict[str, str]:
    """The query parameters, refusing unknown and repeated ones (a typo must not widen a listing)."""
    if not query_params:
        return {}
    params = {}
    for name in query_params:
        if name not in allowed:
            raise _bad(name, f"is not a parameter here; expected {', '.join(allowed)}")
        getlist = getattr(query_params, "getlist", None)
        if getlist is not None and len(getlist(name)) > 1:
            raise _bad(name, "is given more than once")
        params[name] = query_params[name]
    return params


def _cluster_arn(text: str) -> "re.Match[str]":
    match = _CLUSTER_ARN.fullmatch(text)
    if match is None:
        raise _bad("cluster", f"must be a cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>), got {text[:80]!r}")
    return match


def _bad(name: str, problem: str) -> BadRequestError:
    return BadRequestError(f"{name}: {problem}")


def to_json(item: Mapping[str, AttributeValue]) -> Dict[str, Any]:
    return {name: decode(value) for name, value in item.items()}


# -- POST /events (local stage only) -----------------------------------------


def post_events(app: Any, raw_body: Optional[bytes]) -> Any:
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
            parse_event(event)
        except InvalidEvent as error:
            raise BadRequestError(f"{_event_field(position, single)}{error.field}: {error.problem}") from None
    handlers = event_handlers(app)
    results: List[Dict[str, Any]] = []
    for position, event in enumerate(events):
        name = handlers[event["detail-type"]]
        try:
            results.append(app.handler_map[name](event, app.lambda_context))
        except (InvalidEvent, StoredItemConflict, ClientError, BotoCoreError) as error:
            return _stopped(error, _event_field(position, single), results)
    return results[0] if single else results


def event_handlers(app: Any) -> Dict[str, str]:
    """detail-type -> the name of the handler whose EventBridge rule matches it, as deployed."""
    return {
        detail_type: source.name
        for source in app.event_sources
        for detail_type in source.event_pattern.get("detail-type", [])
    }


def _events_from_body(raw_body: Optional[bytes]) -> Tuple[List[Any], bool]:
    try:
        body = json.loads(raw_body or b"")
    except (ValueError, RecursionError) as error:
        raise BadRequestError(f"body: is not JSON ({error})") from None
    if isinstance(body, dict):
        return [body], True
    if not isinstance(body, list):
        raise BadRequestError(f"body: must be an event (a JSON object) or an array of events, got {type(body).__name__}")
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
