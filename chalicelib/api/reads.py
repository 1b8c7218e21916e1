"""The read API behind app.py's read routes (and `make query`): a cluster's items, filtered; one item;
the clusters.

A listing queries the read index, which DynamoDB filters by group, phase, finished
time and stop code (chalicelib/model/listing.py), and reads the items back in
bulk; one item is one GetItem; the clusters are a query per cluster: never a
scan, so a request costs the same however many items the table holds. Every
parameter, id and token is checked before any request, and anything a caller
sends is answered 200, 400 or 404 (501 where the stage has no read index, 503
when DynamoDB does not answer): never 500.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set, Tuple
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from chalice import BadRequestError, NotFoundError, Response

from chalicelib.config import DISABLED, READ_INDEX_ENV, Config
from chalicelib.errors import InvalidEvent, Unavailable, aws_error_code, aws_error_message
from chalicelib.model import arns, listing
from chalicelib.model.arns import MAX_SORT_KEY_BYTES
from chalicelib.model.attributes import AttributeValue, decode, utf8_length
from chalicelib.model.clock import Clock, parse_moment, parse_time
from chalicelib.observability import Telemetry
from chalicelib.store import StateStore
from chalicelib.store.state_store import IndexPage
from chalicelib.tables import (
    CONTAINER_INSTANCES,
    FINISHED,
    GROUP,
    LISTED,
    OPEN,
    PHASE_INDEX,
    READ_INDEX,
    TASKS,
    TableSpec,
)

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# A listing by an unfinished status reads past items of other statuses; this bounds the reads
# one request makes (its page may then hold fewer items, with a `next` token).
MAX_KEYS_READ_PER_REQUEST = 1000
# A listing DynamoDB filters (by group or stop code) reads this many index entries per query
# (about 300 bytes each: ~15 read units), and at most MAX_INDEX_PAGES queries per request.
FILTERED_PAGE_ENTRIES = 400
MAX_INDEX_PAGES = 10
TASK_LIST_PARAMETERS = (
    "cluster", "service", "group", "status", "since", "until", "stopCode", "fields", "limit", "next")
INSTANCE_LIST_PARAMETERS = ("cluster", "status", "since", "until", "fields", "limit", "next")
GET_PARAMETERS = ("cluster", "fields")
CLUSTER_PARAMETERS = ("limit", "next")
MAX_FIELDS = 40
LAST_MOMENT = 253_402_300_799.0  # 9999-12-31T23:59:59Z

_STATUS = re.compile(r"[A-Za-z_]{1,64}", re.ASCII)  # matched in any case: ECS's are upper case
_STOP_CODE = re.compile(r"[A-Za-z_]{1,64}", re.ASCII)  # matched as given: EssentialContainerExited
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,255}", re.ASCII)  # a top-level attribute: ECS's camelCase, cw_*
_GROUP = re.compile(r"[^\x00-\x1f]{1,255}")  # ECS's: service:web, family:cron
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

Item = Mapping[str, AttributeValue]
_INDEX_KEYS = frozenset(READ_INDEX.key_attributes)


class Listing(NamedTuple):
    """A listing's parameters, checked: what GET /tasks and GET /container-instances ask for."""

    cluster: str  # its ARN
    status: Optional[str]  # upper case
    phase: Optional[str]  # OPEN or FINISHED, from the status or the finished-only filters; None: both
    group: Optional[str]
    since: Optional[float]  # finished from (epoch seconds, included)
    until: Optional[float]  # finished until (included)
    stop_code: Optional[str]
    fields: Optional[Tuple[str, ...]]  # the attributes to answer (and the key); None: all
    limit: int


class ReadApi:
    """The read routes' answers, from the stage's tables (``store``), settings and telemetry.
    ``now`` (wall clock) dates relative times; ``clock`` (monotonic) times a listing against
    LISTING_BUDGET_SECONDS. ``home`` (arn:<partition>:ecs:<region>:<account>, the stage's own)
    turns a cluster name into its ARN; without one, a name is looked up among the recorded clusters."""

    def __init__(self, store: StateStore, config: Config, telemetry: Telemetry, clock: Clock = time.monotonic,
                 now: Clock = time.time) -> None:
        self.store = store
        self.config = config
        self.telemetry = telemetry
        self.clock = clock
        self.now = now

    # -- GET /tasks, GET /container-instances --------------------------------

    def list_items(self, table: TableSpec, query_params: Optional[Mapping[str, str]], home: Optional[str] = None
                   ) -> Any:
        """One page of a cluster's items: ``{"items": [...], "next": token or null}``.

        Unfinished items come first, then finished ones, newest first. ``next`` is
        null when nothing follows. A page holds at most ``limit`` items, fewer when
        a filtered listing had to read past many items that did not match.
        """
        allowed = TASK_LIST_PARAMETERS if table is TASKS else INSTANCE_LIST_PARAMETERS
        params = _parameters(query_params, allowed)
        if "cluster" not in params:
            raise _bad("cluster", "is required (a cluster name or ARN): listing without one would need a table "
                       "scan; GET /clusters lists the recorded ones")
        if not self.config.read_index:
            return self._no_read_index()
        try:
            query = self._listing(table, params, home)
            start = _start_key(params["next"], table, query) if "next" in params else None
            return _page(*self._page_of(table, query, start))
        except (ClientError, BotoCoreError) as error:
            return self._dynamodb_refusal(error, table)
        except Unavailable as busy:
            return self._unavailable(str(busy))

    def _listing(self, table: TableSpec, params: Mapping[str, str], home: Optional[str]) -> Listing:
        status = params.get("status")
        if status is not None:
            if not _STATUS.fullmatch(status):
                raise _bad("status", f"must be an ECS status such as RUNNING or ACTIVE, got {status[:80]!r}")
            status = status.upper()
        group = _group(params)
        since, until = (self._moment(params, name) for name in ("since", "until"))
        if since is not None and until is not None and since > until:
            raise _bad("since", "is later than until")
        stop_code = params.get("stopCode")
        if stop_code is not None and not _STOP_CODE.fullmatch(stop_code):
            raise _bad("stopCode", f"must be an ECS stop code such as EssentialContainerExited, got {stop_code[:80]!r}")
        finished_only = [name for name in ("since", "until", "stopCode") if name in params]
        phase = table.phase(status) if status is not None else (FINISHED if finished_only else None)
        if finished_only and phase != FINISHED:
            finished = " or ".join(sorted(table.finished_statuses))
            raise _bad(finished_only[0], f"selects {finished} {table.arn_resource}s; status={status} has none")
        fields, limit = _fields(params.get("fields")), _limit(params.get("limit"), DEFAULT_LIMIT)
        query = Listing(status=status, phase=phase, group=group, since=since, until=until, stop_code=stop_code,
                        fields=fields, limit=limit, cluster=self._cluster(params["cluster"], home))
        low, high = _key_range(query)
        if utf8_length(high or low) > MAX_SORT_KEY_BYTES:
            raise _bad("cluster", "is too long to be listed: the read index keys no item by a cluster ARN that long")
        return query

    def _moment(self, params: Mapping[str, str], name: str) -> Optional[float]:
        text = params.get(name)
        if text is None:
            return None
        moment = parse_moment(text, self.now())
        if moment is None:
            raise _bad(name, "must be an ISO-8601 time with its zone (2026-11-05T07:58:44Z), a date (UTC), "
                       f"today, or a time ago such as 30m, 1h, 2d; got {text[:80]!r}")
        # Nothing finished before 1970 or after 9999 (the index's times have four-digit years).
        return min(max(moment, 0.0), LAST_MOMENT)

    def _page_of(self, table: TableSpec, query: Listing, start: Optional[Dict[str, AttributeValue]]
                 ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The page's items and its ``next`` token, from the previous read index while the table still
        has it (a stage moving to the new one: its filters are then applied to the items read), else
        from the read index, which DynamoDB filters itself."""
        by_phase = start is None or PHASE_INDEX.hash_key in start
        predicate = _in_memory_filter(table, query, by_phase=True)
        if by_phase:
            size = query.limit + 1 if predicate is None else MAX_LIMIT
            pages = self.store.phase_index_pages(table, query.cluster, query.phase, start, size)
            if pages is not None:
                return self._read_through(table, query, pages, predicate)
            if start is not None:
                raise _bad("next", "comes from the read index this stage has since replaced: list again without it")
        if start is not None and start[table.read_index.range_key]["S"] < _key_range(query)[0]:
            return [], None  # a relative since (1h, today) has moved past where the last page ended
        predicate = _in_memory_filter(table, query, by_phase=False)
        filtered = query.group is not None and query.phase != OPEN or query.stop_code is not None
        size = FILTERED_PAGE_ENTRIES if filtered else query.limit + 1 if predicate is None else MAX_LIMIT
        pages = self.store.listing_pages(
            table, _key_range(query), group=query.group if query.phase != OPEN else None,
            stop_code=query.stop_code, start=start, page_size=size)
        return self._read_through(table, query, pages, predicate)

    def _read_through(self, table: TableSpec, query: Listing, pages: Iterator[IndexPage],
                      predicate: Optional[Callable[[Item], bool]]) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """The page's items (as JSON values) and its ``next`` token: the index's keys in order, each read back.

        Every key the index returned is read before a key after it, and the token is
        the last key read: a key whose item the read does not return (TTL deleted
        it, or an eventually consistent read missed it) is passed over, and neither
        ends the listing nor hides the keys after it. A page also ends, with a token,
        before it outgrows what Lambda may answer (MAX_PAGE_BYTES) or outlasts
        API Gateway's wait (LISTING_BUDGET_SECONDS); with nothing read by then, it
        answers 503.
        """
        keep_all = predicate is None
        limit = query.limit
        attributes = _attributes_read(table, query, predicate)
        deadline = self.clock() + LISTING_BUDGET_SECONDS
        pending: Deque[Item] = deque()  # keys the index returned, not read yet
        more_in_index = True
        index_pages = 0
        items: List[Dict[str, Any]] = []
        size = 0  # of the items' JSON
        position: Optional[Item] = None  # the index key the page has gone through
        seen: Set[str] = set()  # an item moving phase mid-listing is listed once; BatchGetItem refuses repeated keys
        read = 0

        def stop() -> Tuple[List[Dict[str, Any]], Optional[str]]:
            if position is None:
                raise Unavailable(f"DynamoDB answered too slowly to list anything within {LISTING_BUDGET_SECONDS:g} s: "
                                  "retry")
            return items, _token(table, query, position)

        while True:
            wanted = limit - len(items) if keep_all else MAX_LIMIT
            # Keeping all, one key more than the page tells whether anything follows.
            while more_in_index and len(pending) < (wanted + 1 if keep_all else wanted):
                if self.clock() > deadline or index_pages == MAX_INDEX_PAGES:
                    if pending:
                        break
                    return stop()
                page = next(pages)
                index_pages += 1
                pending.extend(page.keys)
                more_in_index = page.last_key is not None
                if not pending and page.last_key is not None:
                    position = page.last_key  # DynamoDB filtered out all it read up to there
            if not pending:
                return items, None
            batch: List[Item] = []
            while pending and len(batch) < wanted:
                key = pending.popleft()
                if key[table.key]["S"] in seen:
                    position = key
                else:
                    seen.add(key[table.key]["S"])
                    batch.append(key)
            if not batch:
                continue
            if self.clock() > deadline:
                pending.extendleft(reversed(batch))
                return stop()
            details = self._read(table, [key[table.key]["S"] for key in batch], attributes)
            read += len(batch)
            for place, key in enumerate(batch):
                item = details.get(key[table.key]["S"])  # None: deleted since, or not read yet
                if item is not None and (predicate is None or predicate(item)):
                    value = _answer(item, query.fields, table)
                    size += len(json.dumps(value, separators=(",", ":")))
                    if items and size > MAX_PAGE_BYTES and position is not None:
                        return items, _token(table, query, position)  # (it follows from the key before it)
                    items.append(value)
                    if len(items) == limit:
                        more = place < len(batch) - 1 or bool(pending) or more_in_index
                        return items, _token(table, query, key) if more else None
                position = key
            if read >= MAX_KEYS_READ_PER_REQUEST and (pending or more_in_index):
                return items, _token(table, query, batch[-1])

    def _read(self, table: TableSpec, keys: List[str], attributes: Optional[Tuple[str, ...]]
              ) -> Mapping[str, Item]:
        """The items of ``keys``, by key; eventually consistent, like the index they were listed from."""
        found, unprocessed = self.store.read_items(table, keys, attributes)
        if unprocessed:  # a page must not skip items silently
            raise Unavailable(f"DynamoDB left {len(unprocessed)} of the page's items unread "
                              "(it is shedding load): retry")
        return found

    # -- GET /tasks/{id}, GET /container-instances/{id} ----------------------

    def get_item(self, table: TableSpec, raw_id: str, query_params: Optional[Mapping[str, str]],
                 home: Optional[str] = None) -> Any:
        """The stored item of one task or container instance (a strongly consistent read), or 404.

        An item past its cw_expires_at that TTL has not deleted yet (that takes up to
        a few days) is still true history: it is answered like any other.
        """
        params = _parameters(query_params, GET_PARAMETERS)
        fields = _fields(params.get("fields"))
        cluster: Optional[str] = None
        try:
            keys = candidate_keys(table, raw_id, params.get("cluster"),
                                  lambda text: self._cluster(text, home))
            cluster = params.get("cluster")
            for key in keys:
                item = self.store.get_item(table, key, fields)
                if item is not None:
                    return _answer(item, fields, table)
        except (ClientError, BotoCoreError) as error:
            return self._dynamodb_refusal(error, table)
        except Unavailable as busy:
            return self._unavailable(str(busy))
        noun = table.arn_resource.replace("-", " ")
        if len(keys) == 1:
            raise NotFoundError(f"{table.key} {keys[0]} is not recorded")
        raise NotFoundError(
            f"{noun} {unquote(raw_id)} is not recorded in cluster {cluster} (looked for "
            f"{' and '.join(keys)}); if its ARN has another form, get it by its whole URL-encoded ARN, "
            "as its events carry it"
        )

    # -- GET /clusters -----------------------------------------------------------

    def list_clusters(self, query_params: Optional[Mapping[str, str]]) -> Any:
        """The clusters with recorded tasks or container instances, in ARN order:
        ``{"clusters": [{"clusterArn", "clusterName"}], "next": token or null}``. Each costs one
        query per table that reads one index entry: the cost grows with the clusters, not the items."""
        params = _parameters(query_params, CLUSTER_PARAMETERS)
        limit = _limit(params.get("limit"), MAX_LIMIT)
        after = _cluster_token(params["next"]) if "next" in params else None
        if not self.config.read_index:
            return self._no_read_index()
        try:
            clusters, more = self._clusters(after, limit)
        except (ClientError, BotoCoreError) as error:
            return self._dynamodb_refusal(error, TASKS)
        except Unavailable as busy:
            return self._unavailable(str(busy))
        named = [{"clusterArn": arn, "clusterName": arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn}
                 for arn in clusters]
        return {"clusters": named, "next": _encode(clusters[-1]) if more and clusters else None}

    def _clusters(self, after: Optional[str], limit: int) -> Tuple[List[str], bool]:
        """Up to ``limit`` clusters after ``after``; and whether any may follow."""
        clusters: List[str] = []
        deadline = self.clock() + LISTING_BUDGET_SECONDS
        for cluster in self._recorded_clusters(after, deadline):
            if len(clusters) == limit:
                return clusters, True
            clusters.append(cluster)
            if self.clock() > deadline and len(clusters) < limit:
                return clusters, True
        return clusters, False

    def _recorded_clusters(self, after: Optional[str], deadline: float) -> Iterator[str]:
        """The clusters with listed items in either table, in ARN order, after ``after``: one query
        per cluster and table. Raises Unavailable if DynamoDB is too slow to find the first by
        ``deadline`` (a ReadApi serves concurrent requests under chalice local: no shared state)."""
        tables = (TASKS, CONTAINER_INSTANCES)
        heads = {table: self.store.next_cluster(table, after) for table in tables}
        if any(heads.values()) and self.clock() > deadline:
            raise Unavailable(f"DynamoDB answered too slowly to list a cluster within {LISTING_BUDGET_SECONDS:g} s: "
                              "retry")
        while any(heads.values()):
            cluster = min(head for head in heads.values() if head is not None)
            yield cluster
            for table in tables:
                if heads[table] == cluster:
                    heads[table] = self.store.next_cluster(table, cluster)

    def _cluster(self, text: str, home: Optional[str]) -> str:
        """A cluster parameter's ARN: an ARN as given; a name in the stage's own account and region, as
        the ECS CLI takes it, or (no home: chalice local) the one recorded cluster of that name."""
        if text.startswith("arn:"):
            return _cluster_arn(text)
        if not arns.is_name(text):
            raise _cluster_refused(text)
        if home is not None:
            return f"{home}:cluster/{text}"
        named: List[str] = []
        deadline = self.clock() + LISTING_BUDGET_SECONDS
        for cluster in self._recorded_clusters(None, deadline):
            if self.clock() > deadline:
                raise Unavailable(f"DynamoDB answered too slowly to find cluster {text}: retry, or give its ARN")
            parsed = arns.parse(cluster)
            if parsed is not None and parsed.resource == "cluster" and parsed.ident == text:
                named.append(cluster)
        if len(named) == 1:
            return named[0]
        if named:
            raise _bad("cluster", f"names {len(named)} recorded clusters ({', '.join(named)}): give its ARN")
        raise NotFoundError(f"no recorded cluster is named {text}: GET /clusters lists those with recorded items")

    # -- what DynamoDB did not answer ------------------------------------------

    def _no_read_index(self) -> Response:
        return _error(501, "NotImplementedError", (
            f"listing needs the read index, which this stage turns off ({READ_INDEX_ENV}="
            f"{DISABLED}); get one item by its id instead"
        ))

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
        if isinstance(error, (NoCredentialsError, NoRegionError)):
            raise error  # the deployment's fault, not DynamoDB's: retrying will not help
        if isinstance(error, BotoCoreError):  # a timeout, a connection refused or dropped
            return self._unavailable(f"DynamoDB did not answer in time ({type(error).__name__}): retry")
        code = aws_error_code(error)
        text = aws_error_message(error)
        status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _BUSY_CODES or status >= 500:
            return self._unavailable(f"DynamoDB is busy ({code}): retry")
        name = table.read_index.name
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


def _key_range(query: Listing) -> listing.KeyRange:
    if query.phase == OPEN:
        return listing.open_range(query.cluster, query.group)
    if query.phase == FINISHED:
        return listing.finished_range(query.cluster, query.since, query.until)
    return listing.cluster_range(query.cluster)


def _in_memory_filter(table: TableSpec, query: Listing, by_phase: bool) -> Optional[Callable[[Item], bool]]:
    """What DynamoDB cannot filter, to apply to the items read: an unfinished status (it changes too
    often to be in the index); and while the previous index answers (``by_phase``), every filter."""
    tests: List[Callable[[Item], bool]] = []
    if query.status is not None and table.finished_statuses != {query.status}:
        tests.append(lambda item: _text(item, table.status_field) == query.status)
    if by_phase:
        if query.group is not None:
            tests.append(lambda item: _text(item, GROUP) == query.group)
        if query.stop_code is not None and table.stop_code_field is not None:
            tests.append(lambda item: _text(item, table.stop_code_field or "") == query.stop_code)
        if query.since is not None or query.until is not None:
            tests.append(lambda item: _finished_between(item, table, query.since, query.until))
    if not tests:
        return None
    return lambda item: all(test(item) for test in tests)


def _text(item: Item, name: str) -> Optional[str]:
    return item.get(name, {}).get("S")


def _finished_between(item: Item, table: TableSpec, since: Optional[float], until: Optional[float]) -> bool:
    field = _finished_time_field(table)
    try:
        moment = parse_time(_text(item, field), field)
    except InvalidEvent:
        return False
    return (since is None or moment >= since) and (until is None or moment <= until)


def _finished_time_field(table: TableSpec) -> str:
    """Where an item says when it finished: stoppedAt, or (an instance) the time of the event that said so."""
    return table.finished_at_field or "cw_time"


def _attributes_read(table: TableSpec, query: Listing, predicate: Optional[Callable[[Item], bool]]
                     ) -> Optional[Tuple[str, ...]]:
    """The attributes to read of each item: those asked for, and those ``predicate`` tests; None: all."""
    if query.fields is None:
        return None
    if predicate is None:
        return query.fields
    tested = (table.status_field, GROUP, _finished_time_field(table), table.stop_code_field)
    return tuple(dict.fromkeys([*query.fields, *(name for name in tested if name)]))


def _answer(item: Item, fields: Optional[Tuple[str, ...]], table: TableSpec) -> Dict[str, Any]:
    """An item as JSON: only ``fields`` of it (and its key) when given; never the read index's own
    keys, unless asked for by name (they repeat the cluster, phase and group, joined by U+001F)."""
    if fields is None:
        return {name: decode(value) for name, value in item.items() if name not in _INDEX_KEYS}
    return {name: decode(value) for name, value in item.items() if name == table.key or name in fields}


def _token(table: TableSpec, query: Listing, key: Mapping[str, AttributeValue]) -> str:
    """The opaque ``next`` token: the last index entry read (its table and index keys, not what the
    index projects), and the filters of the listing it continues."""
    index = table.read_index if table.read_index.hash_key in key else PHASE_INDEX
    names = (table.key, *index.key_attributes)
    return _encode(json.dumps({"key": {name: key[name]["S"] for name in names}, "of": _filters(query)},
                              separators=(",", ":"), sort_keys=True))


def _filters(query: Listing) -> List[Optional[str]]:
    """What a token must continue: the same filters (since and until are checked against its key)."""
    return [query.status, query.group, query.stop_code]


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def _decode(token: str, name: str) -> Any:
    problem = f"is not a token from this listing: pass back the `{name}` of the previous page unchanged"
    if len(token) > MAX_TOKEN_CHARACTERS:
        raise _bad(name, problem)
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise _bad(name, problem) from None


def _start_key(token: str, table: TableSpec, query: Listing) -> Dict[str, AttributeValue]:
    """The ExclusiveStartKey a token stands for, if it came from this same listing (of either index)."""
    problem = _bad("next", "is not a token from this listing: pass back the `next` of the previous page unchanged")
    try:
        token_of = json.loads(_decode(token, "next"))
    except (ValueError, RecursionError):
        raise problem from None
    if not isinstance(token_of, dict) or set(token_of) != {"key", "of"} or token_of["of"] != _filters(query):
        raise problem
    key = token_of["key"]
    if not isinstance(key, dict) or not all(isinstance(value, str) and value for value in key.values()):
        raise problem
    if arns.key_problem(key.get(table.key)) is not None:
        raise problem
    index, previous = table.read_index, PHASE_INDEX
    if set(key) == {table.key, *index.key_attributes}:
        # Not below since: a relative one (1h, today) moves on between pages (_page_of ends the listing).
        low, high = _key_range(query._replace(since=None))
        sort_key = key[index.range_key]
        if key[index.hash_key] != LISTED or not (sort_key == low if high is None else low <= sort_key <= high):
            raise problem
    elif set(key) == {table.key, *previous.key_attributes}:
        phase = key[previous.range_key]
        if key[previous.hash_key] != query.cluster or phase not in (OPEN, FINISHED) or (
                query.phase is not None and phase != query.phase):
            raise problem
    else:
        raise problem
    return {name: {"S": value} for name, value in key.items()}


def _cluster_token(token: str) -> str:
    cluster = _decode(token, "next")
    if arns.key_problem(cluster) is not None or listing.SEPARATOR in cluster:
        raise _bad("next", "is not a token from this listing: pass back the `next` of the previous page unchanged")
    return str(cluster)


def _limit(text: Optional[str], default: int) -> int:
    if text is None:
        return default
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {text[:80]!r}")
    return int(text)


def _group(params: Mapping[str, str]) -> Optional[str]:
    """group=G, or service=NAME (short for group=service:NAME); not both."""
    if "service" in params:
        if "group" in params:
            raise _bad("service", "is short for group=service:NAME: give one of them")
        if not arns.is_name(params["service"]):
            raise _bad("service", f"must be an ECS service name, got {params['service'][:80]!r}")
        return f"service:{params['service']}"
    group = params.get("group")
    if group is not None and not _GROUP.fullmatch(group):
        raise _bad("group", f"must be an ECS task group such as service:web or family:cron, got {group[:80]!r}")
    return group


def _fields(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    """fields=a,b,c: the top-level attributes to answer (the key always comes too)."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    if not names or len(names) > MAX_FIELDS or not all(_FIELD.fullmatch(name) for name in names):
        raise _bad("fields", f"must be up to {MAX_FIELDS} comma-separated attribute names such as "
                   f"taskArn,lastStatus,stoppedReason; got {text[:80]!r}")
    return names


def _error(status: int, code: str, text: str) -> Response:
    return Response(status_code=status, body={"Code": code, "Message": text})


def candidate_keys(table: TableSpec, raw_id: str, cluster: Optional[str],
                   cluster_arn: Callable[[str], str] = lambda text: _cluster_arn(text)) -> List[str]:
    """The ARNs an id may name: the (URL-encoded) ARN itself; or, for an ID in ``cluster`` (its name or
    ARN, made an ARN by ``cluster_arn`` once the id is checked),
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
    parsed_cluster = _parsed_cluster(cluster_arn(cluster))
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
    return _bad("cluster", "must be a cluster name or ARN (arn:aws:ecs:<region>:<account>:cluster/<name>), "
                f"got {text[:80]!r}")


def _bad(name: str, problem: str) -> BadRequestError:
    return BadRequestError(f"{name}: {problem}")


def to_json(item: Mapping[str, AttributeValue]) -> Dict[str, Any]:
    return {name: decode(value) for name, value in item.items()}
