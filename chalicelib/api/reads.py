"""The read API behind app.py's read routes: one page of a cluster's items, or one item.

A listing queries the read index (keys only) and reads the items back in
bulk; one item is one GetItem: never a scan, so a request costs the same
however many items the table holds. Every parameter, id and token is checked
before any request, and anything a caller sends is answered 200, 400 or 404
(or 501 where the stage has no read index): never 500.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import deque
from typing import Any, Deque, Dict, List, Mapping, Optional, Set, Tuple
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError
from chalice import BadRequestError, NotFoundError, Response

from chalicelib.config import DISABLED, READ_INDEX_ENV, Config
from chalicelib.errors import Unavailable, aws_error_code, aws_error_message
from chalicelib.model import arns
from chalicelib.model.attributes import AttributeValue, decode
from chalicelib.model.clock import Clock
from chalicelib.observability import Telemetry
from chalicelib.store import StateStore
from chalicelib.tables import FINISHED, OPEN, TableSpec

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# A listing by status reads past items of other statuses; this bounds the reads
# one request makes (its page may then hold fewer items, with a `next` token).
MAX_KEYS_READ_PER_REQUEST = 1000
LIST_PARAMETERS = ("cluster", "status", "limit", "next")
GET_PARAMETERS = ("cluster",)

_STATUS = re.compile(r"[A-Za-z_]{1,64}", re.ASCII)  # matched in any case: ECS's are upper case
_LIMIT = re.compile(r"[0-9]{1,3}", re.ASCII)  # not str.isdigit: it takes "²" and "١", which int() refuses or reads
# A listing starts no DynamoDB request after this long: one that starts then may take up to
# 3 attempts of 2 s connecting and 3 s reading (chalicelib/store/client.py), and API Gateway
# waits 29 s in all.
LISTING_BUDGET_SECONDS = 10.0
# Lambda answers at most 6 MB; a page of 100 items of up to 400 KB each could be far more.
MAX_PAGE_BYTES = 5 * 1024 * 1024
# What a caller should wait before trying again, when DynamoDB throttles, times out or fails.
RETRY_AFTER_SECONDS = 2
# DynamoDB's answers that say "not now", not "not this": throttling and its own failures.
_BUSY_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "LimitExceededException",
})
MAX_TOKEN_CHARACTERS = 12_000  # a page key of three attributes, base64: well under this


class ReadApi:
    """The read routes' answers, from the stage's tables (``store``), settings and telemetry.
    ``clock`` (monotonic) times a listing against LISTING_BUDGET_SECONDS."""

    def __init__(self, store: StateStore, config: Config, telemetry: Telemetry, clock: Clock = time.monotonic) -> None:
        self.store = store
        self.config = config
        self.telemetry = telemetry
        self.clock = clock

    # -- GET /tasks, GET /container-instances --------------------------------

    def list_items(self, table: TableSpec, query_params: Optional[Mapping[str, str]]) -> Any:
        """One page of a cluster's items, optionally of one status: ``{"items": [...], "next": token or null}``.

        ``next`` is null when nothing follows. A page holds at most ``limit`` items,
        fewer when a listing by status had to read past many items of other statuses.
        """
        params = _parameters(query_params, LIST_PARAMETERS)
        if "cluster" not in params:
            raise _bad("cluster", "is required (a cluster ARN): listing without one would need a table scan")
        cluster = _cluster_arn(params["cluster"])
        status = params.get("status")
        if status is not None:
            if not _STATUS.fullmatch(status):
                raise _bad("status", f"must be an ECS status such as RUNNING or ACTIVE, got {status[:80]!r}")
            status = status.upper()
        limit = _limit(params.get("limit"))
        phase = table.phase(status) if status is not None else None
        start = _start_key(params["next"], table, cluster, phase) if "next" in params else None
        if not self.config.read_index:
            return _error(501, "NotImplementedError", (
                f"listing needs the read index, which this stage turns off ({READ_INDEX_ENV}="
                f"{DISABLED}); get one item by its id instead"
            ))
        try:
            return _page(*self._listing(table, cluster, status, phase, start, limit))
        except (ClientError, BotoCoreError) as error:
            return self._dynamodb_refusal(error, table)
        except Unavailable as busy:
            return self._unavailable(str(busy))

    def _listing(self, table: TableSpec, cluster: str, status: Optional[str], phase: Optional[str],
                 start: Optional[Dict[str, AttributeValue]], limit: int
                 ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The page's items (as JSON values) and its ``next`` token: the index's keys in order, each read back.

        Every key the index returned is read before a key after it, and the token is
        the last key read: a key whose item the read does not return (TTL deleted
        it, or an eventually consistent read missed it) is passed over, and neither
        ends the listing nor hides the keys after it. A page also ends, with a token,
        before it outgrows what Lambda may answer (MAX_PAGE_BYTES) or outlasts
        API Gateway's wait (LISTING_BUDGET_SECONDS); with nothing read by then, it
        answers 503.
        """
        # Every item of the finished phase has the one finished status (STOPPED, INACTIVE):
        # only a listing of an unfinished status reads past items of other statuses.
        keep_all = status is None or table.finished_statuses == {status}
        deadline = self.clock() + LISTING_BUDGET_SECONDS
        pending: Deque[Mapping[str, AttributeValue]] = deque()  # keys the index returned, not read yet
        pages = self.store.index_pages(table, cluster, phase, start, limit + 1 if keep_all else MAX_LIMIT)
        more_in_index = True
        items: List[Dict[str, Any]] = []
        size = 0  # of the items' JSON
        last_read: Optional[Mapping[str, AttributeValue]] = None  # the index key the page has gone through
        seen: Set[str] = set()  # an item moving phase mid-listing is listed once; BatchGetItem refuses repeated keys
        read = 0

        def stop() -> Tuple[List[Dict[str, Any]], Optional[str]]:
            if last_read is None:
                raise Unavailable(f"DynamoDB answered too slowly to list anything within {LISTING_BUDGET_SECONDS:g} s: "
                                  "retry")
            return items, _token(table, last_read)

        while True:
            wanted = limit - len(items) if keep_all else MAX_LIMIT
            # Keeping all, one key more than the page tells whether anything follows.
            while more_in_index and len(pending) < (wanted + 1 if keep_all else wanted):
                if self.clock() > deadline:
                    return stop()
                page = next(pages)
                pending.extend(page.keys)
                more_in_index = page.last_key is not None
            if not pending:
                return items, None
            batch: List[Mapping[str, AttributeValue]] = []
            while pending and len(batch) < wanted:
                key = pending.popleft()
                if key[table.key]["S"] in seen:
                    last_read = key
                else:
                    seen.add(key[table.key]["S"])
                    batch.append(key)
            if not batch:
                continue
            if self.clock() > deadline:
                pending.extendleft(reversed(batch))
                return stop()
            details = self._read(table, [key[table.key]["S"] for key in batch])
            read += len(batch)
            for position, key in enumerate(batch):
                item = details.get(key[table.key]["S"])  # None: deleted since, or not read yet
                if item is not None and (keep_all or item.get(table.status_field, {}).get("S") == status):
                    value = to_json(item)
                    size += len(json.dumps(value, separators=(",", ":")))
                    if items and size > MAX_PAGE_BYTES and last_read is not None:
                        return items, _token(table, last_read)  # (it follows from the key before it)
                    items.append(value)
                    if len(items) == limit:
                        more = position < len(batch) - 1 or bool(pending) or more_in_index
                        return items, _token(table, key) if more else None
                last_read = key
            if read >= MAX_KEYS_READ_PER_REQUEST and (pending or more_in_index):
                return items, _token(table, batch[-1])

    def _read(self, table: TableSpec, keys: List[str]) -> Mapping[str, Mapping[str, AttributeValue]]:
        """The items of ``keys``, by key; eventually consistent, like the index they were listed from."""
        found, unprocessed = self.store.read_items(table, keys)
        if unprocessed:  # a page must not skip items silently
            raise Unavailable(f"DynamoDB left {len(unprocessed)} of the page's items unread "
                              "(it is shedding load): retry")
        return found

    # -- GET /tasks/{id}, GET /container-instances/{id} ----------------------

    def get_item(self, table: TableSpec, raw_id: str, query_params: Optional[Mapping[str, str]]) -> Any:
        """The stored item of one task or container instance (a strongly consistent read), or 404.

        An item past its cw_expires_at that TTL has not deleted yet (that takes up to
        a few days) is still true history: it is answered like any other.
        """
        params = _parameters(query_params, GET_PARAMETERS)
        keys = candidate_keys(table, raw_id, params.get("cluster"))
        try:
            for key in keys:
                item = self.store.get_item(table, key)
                if item is not None:
                    return to_json(item)
        except (ClientError, BotoCoreError) as error:
            return self._dynamodb_refusal(error, table)
        noun = table.arn_resource.replace("-", " ")
        if len(keys) == 1:
            raise NotFoundError(f"{table.key} {keys[0]} is not recorded")
        raise NotFoundError(
            f"{noun} {unquote(raw_id)} is not recorded in cluster {params['cluster']} (looked for "
            f"{' and '.join(keys)}); if its ARN has another form, get it by its whole URL-encoded ARN, "
            "as its events carry it"
        )

    # -- what DynamoDB did not answer ------------------------------------------

    def _unavailable(self, text: str) -> Response:
        """503 with Retry-After: DynamoDB is throttling, slow or failing, not the request."""
        self.telemetry.warn("read not answered", {"status": 503, "reason": text})
        return Response(status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                        body={"Code": "ServiceUnavailableError", "Message": text})

    def _dynamodb_refusal(self, error: Exception, table: TableSpec) -> Response:
        """What DynamoDB did not answer: throttled, timed out or failed (503, Retry-After: the caller
        may try again), the table or index missing or still being built (the table's state, not the
        caller's: 503), or anything else about the request (the caller's: 400). Anything else,
        access refused included, is a fault of the deployment: it raises (500), logged."""
        if isinstance(error, BotoCoreError):  # a timeout, a connection refused or dropped
            return self._unavailable(f"DynamoDB did not answer in time ({type(error).__name__}): retry")
        code = aws_error_code(error)
        text = aws_error_message(error)
        status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _BUSY_CODES or status >= 500:
            return self._unavailable(f"DynamoDB is busy ({code}): retry")
        name = table.cluster_index.name
        if code == "ValidationException" and ("specified index" in text or "backfilling" in text.lower()):
            return self._unavailable(
                f"table {self.store.table_name(table)} has no usable index {name} yet: `make deploy` adds it "
                f"(see docs/deploy.md); DynamoDB said: {text}"
            )
        if code == "ResourceNotFoundException":
            return self._unavailable(
                f"table {self.store.table_name(table)} does not exist (yet): `make deploy` creates it")
        if code == "ValidationException":
            return _error(400, "BadRequestError", f"DynamoDB refused the request: {text}")
        raise error


def _page(items: List[Dict[str, Any]], next_token: Optional[str]) -> Dict[str, Any]:
    return {"items": items, "next": next_token}


def _token(table: TableSpec, key: Mapping[str, AttributeValue]) -> str:
    """The opaque ``next`` token: the last index entry read (table and index keys), as base64url JSON."""
    text = json.dumps({name: key[name]["S"] for name in _page_key_names(table)}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def _start_key(token: str, table: TableSpec, cluster: str, phase: Optional[str]) -> Dict[str, AttributeValue]:
    """The ExclusiveStartKey a token stands for, if it came from this same listing."""
    problem = "is not a token from this listing: pass back the `next` of the previous page unchanged"
    if len(token) > MAX_TOKEN_CHARACTERS:
        raise _bad("next", problem)
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise _bad("next", problem) from None
    index = table.cluster_index
    if (
        not isinstance(key, dict)
        or set(key) != set(_page_key_names(table))
        or not all(isinstance(value, str) and value for value in key.values())
        or key[index.hash_key] != cluster
        or key[index.range_key] not in (OPEN, FINISHED)
        or (phase is not None and key[index.range_key] != phase)
        or arns.key_problem(key[table.key]) is not None
    ):
        raise _bad("next", problem)
    return {name: {"S": value} for name, value in key.items()}


def _page_key_names(table: TableSpec) -> Tuple[str, ...]:
    return (table.key, *table.cluster_index.key_attributes)


def _limit(text: Optional[str]) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {text[:80]!r}")
    return int(text)


def _error(status: int, code: str, text: str) -> Response:
    return Response(status_code=status, body={"Code": code, "Message": text})


def candidate_keys(table: TableSpec, raw_id: str, cluster: Optional[str]) -> List[str]:
    """The ARNs an id may name: the (URL-encoded) ARN itself; or, for an ID in ``cluster``,
    the ARN with the cluster, then the old format without it (older tasks' ARNs).

    Like ECS's own Describe* calls, an ID needs its cluster: the ARN holds the
    region, the account and the cluster name, and the key is the whole ARN.
    """
    ident = unquote(raw_id)  # API Gateway may pass %2F through; ARNs and IDs hold no '%'
    resource = table.arn_resource
    noun = resource.replace("-", " ")
    if ident.startswith("arn:"):
        if cluster is not None:
            raise _bad("cluster", f"only goes with a {noun} ID: the ARN already names its cluster")
        problem = arns.key_problem(ident)
        parsed = arns.parse(ident)
        if problem is not None or (parsed is not None and parsed.resource != resource):
            raise _bad("id", f"is not a {noun} ARN (arn:aws:ecs:<region>:<account>:{resource}/<cluster>/<id>)"
                       + (f": it {problem}" if problem else f", but a {parsed.resource} ARN" if parsed else ""))
        return [ident]
    if not arns.is_name(ident):
        raise _bad("id", f"must be a {noun} ID or a URL-encoded {noun} ARN, got {ident[:80]!r}")
    if cluster is None:
        raise _bad("cluster", f"is required with a {noun} ID (or give the URL-encoded {noun} ARN as id)")
    parsed_cluster = _parsed_cluster(cluster)
    return [str(arns.EcsArn(parsed_cluster.prefix, resource, parsed_cluster.ident, ident)),
            str(arns.EcsArn(parsed_cluster.prefix, resource, None, ident))]


# -- shared parameter checks -------------------------------------------------


def _parameters(query_params: Optional[Mapping[str, str]], allowed: Tuple[str, ...]) -> Dict[str, str]:
    """The query parameters, refusing unknown and repeated ones (a typo must not widen a listing)."""
    if not query_params:
        return {}
    params = {}
    for name in query_params:
        if name not in allowed:
            raise _bad(name[:80], f"is not a parameter here; expected {', '.join(allowed)}")
        getlist = getattr(query_params, "getlist", None)
        if getlist is not None and len(getlist(name)) > 1:
            raise _bad(name, "is given more than once")
        params[name] = query_params[name]
    return params


def _cluster_arn(text: str) -> str:
    """A cluster to list: its ARN, as the items carry it (the writer's definition of a key)."""
    problem = arns.key_problem(text)
    parsed = arns.parse(text) if problem is None else None
    if problem is not None or not text.startswith("arn:") or (parsed is not None and parsed.resource != "cluster"):
        raise _cluster_refused(text)
    return text


def _parsed_cluster(text: str) -> arns.EcsArn:
    """A cluster's ARN in its parts, to build the ARN of a resource in it."""
    parsed = arns.parse(text)
    if parsed is None or parsed.resource != "cluster":
        raise _cluster_refused(text)
    return parsed


def _cluster_refused(text: str) -> BadRequestError:
    return _bad("cluster", f"must be a cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>), got {text[:80]!r}")


def _bad(name: str, problem: str) -> BadRequestError:
    return BadRequestError(f"{name}: {problem}")


def to_json(item: Mapping[str, AttributeValue]) -> Dict[str, Any]:
    return {name: decode(value) for name, value in item.items()}
