"""Heal the tables from the ECS API: what events never told, and what they lost.

A pass, per cluster:

1. Lists the cluster's tasks (desiredStatus RUNNING and STOPPED, every page)
   and container instances (every status ECS lists), describes them 100 at a
   time, and reads their stored versions in bulk (BatchGetItem, keys and
   versions only). A snapshot goes through the events' own conditional write
   (store.put_if_newer) only where nothing or an older version is stored: a
   snapshot never lowers a version, a newer event always replaces it, and a
   pass over an account where nothing changed writes nothing. A key whose
   version DynamoDB left unread (shedding load) is deferred to a later pass:
   never written blind.
2. Finds ghosts: the cluster's stored items that are not finished (the read
   index's open phase: a query, never a scan) and that ECS no longer lists.
   Each is described once more; one ECS calls MISSING is marked, never
   deleted: cw_missing_since and an expiry, conditioned on the version read
   (an event that raced in first wins; a later one replaces the whole item,
   mark included). A stage without the read index finds them by scanning one
   of SWEEP_SEGMENTS slices of the tables per pass instead (a day's passes
   cover the tables at the default schedule).
3. Takes the mark off an item ECS lists or describes again, even at the
   stored version (ECS can answer MISSING for a moment): one UpdateItem,
   conditioned on that version and the mark, so a newer event is never
   undone. Marked ghosts are described again on every pass for that; the
   marks are read with the stored versions, so a mark costs a write only
   when it goes.

Failures: one item that cannot be stored (too large, another writer's
version, a stored key ECS cannot be asked about) is refused, counted and
listed, and the pass goes on; an unexpected error on one item is counted the
same way and fails the pass once the rest is done; an error in one cluster
fails that cluster, the others are done (and swept); and whatever fails, the
pass logs its summary and metrics before it raises.

Time: a pass stops before the next ECS call or DynamoDB request once less
than STOP_MARGIN_SECONDS of the function's time is left, and says it is not
complete (a slow DynamoDB must not carry it into the function's timeout,
where its summary would be lost). Each pass starts at another cluster (the
pass number, from the schedule's time, modulo the number of clusters), so
within as many passes as there are clusters each cluster is first in line
once, and the first cluster of a pass is always done unless it alone
outlasts the budget.
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import RECONCILE_CLUSTERS_ENV, Config
from chalicelib.errors import InvalidEvent, OutOfTime, ReconcileFailed, StoredItemConflict, aws_error_code
from chalicelib.model.arns import parse as parse_arn
from chalicelib.model.changes import StateChange
from chalicelib.model.clock import Clock, parse_time
from chalicelib.model.lifecycle import ItemRules
from chalicelib.observability import Telemetry
from chalicelib.reconcile.ecs import DESCRIBE_LIMIT, EcsReader, Pace
from chalicelib.reconcile.snapshots import container_instance_detail, parse_snapshot, task_detail
from chalicelib.store import StateStore, StoredVersion
from chalicelib.store.client import TimeBoxed
from chalicelib.tables import CONTAINER_INSTANCES, TASKS, TableSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient

STOP_MARGIN_SECONDS = 60  # longer than one ECS call or DynamoDB request may take with its retries
SWEEP_SEGMENTS = 96  # without the read index: a slice of the tables per pass, all of them in 96 passes
MAX_ERRORS_REPORTED = 20
THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}


def reconcile(event: Mapping[str, Any], context: Any, *, config: Config, dynamodb: Callable[[], "DynamoDBClient"],
              ecs: Callable[[], "ECSClient"], telemetry: Telemetry, now: Clock = time.time,
              monotonic: Clock = time.monotonic, budget_seconds: Optional[float] = None) -> Dict[str, Any]:
    """One pass over the account (the scheduled handler and `make reconcile` call this, through
    chalicelib/runtime.py, which gives it the stage's settings, clients and clocks).

    ``dynamodb`` and ``ecs`` give the clients, asked for once the pass has
    started: one that cannot be made (no region) fails the pass like any error.
    The time budget is the function's remaining time less STOP_MARGIN_SECONDS,
    or ``budget_seconds`` without a Lambda context (none: unbounded), on the
    ``monotonic`` clock. Returns the summary, logged as one line with a metric
    per count; raises ReconcileFailed after logging it if anything failed, even
    before the pass could start.
    """
    started = monotonic()
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        budget_seconds = context.get_remaining_time_in_millis() / 1000 - STOP_MARGIN_SECONDS
    deadline = started + budget_seconds if budget_seconds is not None else float("inf")

    def time_left() -> bool:
        return monotonic() < deadline

    pass_ = Pass(now(), telemetry)
    try:
        scheduled_at = parse_time(event["time"], "time") if isinstance(event.get("time"), str) else pass_.taken_at
        passes = int(scheduled_at // (config.reconcile_minutes * 60))
        pass_.start(
            EcsReader(ecs(), Pace(config.ecs_calls_per_second, clock=monotonic), time_left),
            # no high-water marks: a pass writes each key at most once
            StateStore(TimeBoxed(dynamodb(), time_left), config, now=now),  # type: ignore[arg-type]
            config.rules,
        )
        pass_.run(passes, config.reconcile_clusters)
    except Exception as error:  # it could not start (a setting the stage got wrong, no region): said all the same
        pass_.failed("pass", error)
    summary = pass_.summary(round((monotonic() - started) * 1000))
    telemetry.log_reconcile(summary, getattr(context, "aws_request_id", None))
    if pass_.errors:
        raise ReconcileFailed(summary)
    return summary


class Pass:
    """One reconciliation pass: its counts, and the work per cluster."""

    def __init__(self, taken_at: float, telemetry: Telemetry) -> None:
        self.taken_at = taken_at  # every snapshot of the pass carries it (cw_time)
        self.telemetry = telemetry
        self.counts: Counter[str] = Counter()
        self.ecs_calls: Counter[str] = Counter()  # per operation (the ECS reader's, once started)
        self.errors: List[str] = []  # what failed the pass (ECS, DynamoDB, a cluster, a bug)
        self.refusals: List[str] = []  # single items not stored, for good reason or not; the pass goes on
        self.complete = True
        self.throttled = False  # ECS throttled beyond its retries: no more ECS calls this pass
        self.clusters_in_account = 0
        self.first_cluster: Optional[str] = None

    def start(self, ecs: EcsReader, store: StateStore, rules: ItemRules) -> None:
        self.ecs = ecs
        self.ecs_calls = ecs.calls
        self.store = store
        self.rules = rules
        self.read_index = rules.read_index

    # -- the pass ------------------------------------------------------------------

    def run(self, pass_number: int, wanted: Sequence[str] = ()) -> None:
        try:
            clusters = self._clusters(wanted)
            if not clusters:
                return
            start = pass_number % len(clusters)
            self.first_cluster = clusters[start]
            listed: Dict[str, Dict[TableSpec, Set[str]]] = {}  # the clusters done: what ECS listed in each
            for cluster in clusters[start:] + clusters[:start]:
                with self._in_cluster(cluster):
                    listed[cluster] = self._cluster(cluster)
                    self.counts["clusters"] += 1
                if self.throttled:
                    break  # ECS's bucket is the account's: the other clusters would fail alike
            if not self.read_index and not self.throttled:
                # Against the clusters done, whichever others failed (a stale name in the settings,
                # a cluster ECS denied): one of them must not switch ghost detection off everywhere.
                self._sweep(pass_number % SWEEP_SEGMENTS, listed)
        except OutOfTime:
            self.complete = False
        except Exception as error:  # listing the clusters, or the sweep's scan
            self.failed("account", error)

    def summary(self, duration_ms: int) -> Dict[str, Any]:
        return {
            "clusters": self.counts["clusters"],
            "clusters_in_account": self.clusters_in_account,
            "first_cluster": self.first_cluster,
            "tasks_seen": self.counts["tasks_seen"],
            "container_instances_seen": self.counts["container_instances_seen"],
            "written": {"created": self.counts["created"], "updated": self.counts["updated"]},
            "unchanged": self.counts["unchanged"],
            "missing": self.counts["missing"],
            "cleared": self.counts["cleared"],
            "refused": self.counts["refused"],
            "deferred": self.counts["deferred"],
            "complete": self.complete,
            "duration_ms": duration_ms,
            "ecs_calls": dict(self.ecs_calls),
            "errors": self.errors[:MAX_ERRORS_REPORTED],
            "refusals": self.refusals[:MAX_ERRORS_REPORTED],
        }

    def _clusters(self, wanted: Sequence[str]) -> List[str]:
        """The account's clusters (ARNs, sorted), or those of them the stage names."""
        clusters = sorted(self.ecs.cluster_arns())
        self.clusters_in_account = len(clusters)
        if not wanted:
            return clusters
        by_name = {arn.rsplit("/", 1)[-1]: arn for arn in clusters}
        chosen = []
        for name in wanted:
            arn = name if name in clusters else by_name.get(name)
            if arn is None:
                self.failed(name, f"no such cluster in this account and region ({RECONCILE_CLUSTERS_ENV})")
            elif arn not in chosen:
                chosen.append(arn)
        return sorted(chosen)

    def _cluster(self, cluster: str) -> Dict[TableSpec, Set[str]]:
        """Snapshot the cluster's tasks and instances, then find its ghosts; return what ECS listed."""
        task_arns = list(dict.fromkeys(self.ecs.task_arns(cluster, "RUNNING") + self.ecs.task_arns(cluster, "STOPPED")))
        self._snapshots(TASKS, cluster, task_arns)
        instance_arns = self.ecs.container_instance_arns(cluster)
        self._snapshots(CONTAINER_INSTANCES, cluster, instance_arns)
        listed = {TASKS: set(task_arns), CONTAINER_INSTANCES: set(instance_arns)}
        if self.read_index:
            for table in (TASKS, CONTAINER_INSTANCES):
                stored_open = [key for key in self.store.open_keys(table, cluster) if key not in listed[table]]
                self._confirm_ghosts(table, cluster, self._stored_versions(table, stored_open)[0])
        return listed

    # -- snapshots -----------------------------------------------------------------

    def _snapshots(self, table: TableSpec, cluster: str, arns: Sequence[str],
                   stored: Optional[Mapping[str, StoredVersion]] = None) -> List[str]:
        """Describe ``arns`` and store what changed; return those ECS no longer knows.
        ``stored``: their stored versions, when already read (else read per 100)."""
        gone: List[str] = []
        for start in range(0, len(arns), DESCRIBE_LIMIT):
            described, missing = self._describe(table, cluster, arns[start:start + DESCRIBE_LIMIT])
            gone += missing
            self.counts[f"{table.kind}s_seen"] += len(described)
            changes = (self._snapshot(table, cluster, api_object) for api_object in described)
            self._write(table, [change for change in changes if change], stored)
        return gone

    def _describe(self, table: TableSpec, cluster: str, arns: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
        """(what ECS described, what it no longer knows) of at most 100 ``arns``. ECS refuses a
        whole call for one ARN it cannot take (InvalidParameterException): the call is split in
        halves until that ARN is alone, and it is refused; the others are described."""
        try:
            if table is TASKS:
                return self.ecs.describe_tasks(cluster, arns)
            return self.ecs.describe_container_instances(cluster, arns)
        except ClientError as error:
            if aws_error_code(error) != "InvalidParameterException":
                raise
            if len(arns) == 1:
                self._refused(arns[0], error)
                return [], []
        half = len(arns) // 2
        (described, gone), (more, more_gone) = (self._describe(table, cluster, part)
                                                for part in (arns[:half], arns[half:]))
        return described + more, gone + more_gone

    def _snapshot(self, table: TableSpec, cluster: str, api_object: Mapping[str, Any]) -> Optional[StateChange]:
        change = None  # stays so if refused
        with self._one_item(str(api_object.get(table.key, cluster))):
            # InvalidEvent, e.g. over DynamoDB's 400 KB: an event could not store it either
            detail = task_detail(api_object) if table is TASKS else container_instance_detail(api_object, cluster)
            change = parse_snapshot(table, detail, self.taken_at, self.rules)
        return change

    def _write(self, table: TableSpec, changes: Sequence[StateChange],
               stored: Optional[Mapping[str, StoredVersion]] = None) -> None:
        """Write the snapshots whose key holds nothing or an older version (read in bulk first,
        unless the caller read them already), and take the mark off the ghosts among the others."""
        unread: Set[str] = set()
        if stored is None:
            stored, unread = self._stored_versions(table, [change.key for change in changes])
        for change in changes:
            if change.key in unread:
                continue  # deferred: a write without the stored version would be blind
            with self._one_item(change.key):
                known = stored.get(change.key)
                if known is not None and known.version is not None and known.version >= change.version:
                    # ECS knows it: a mark goes, conditioned on the version read (not this older one)
                    cleared = (known.missing_since is not None
                               and self.store.clear_missing(table, change.key, known.version))
                    self.counts["cleared" if cleared else "unchanged"] += 1
                    continue
                result = self.store.put_if_newer(change)  # another writer's version: StoredItemConflict
                self.counts[result.outcome if result.written else "unchanged"] += 1  # (not written: an event was first)

    def _stored_versions(self, table: TableSpec, keys: Sequence[str]) -> Tuple[Dict[str, StoredVersion], Set[str]]:
        """The stored versions of ``keys``, and those DynamoDB left unread (shedding load), which wait
        for a later pass: counted ``deferred``. A conditional write refused is billed at the stored
        item's size, and takes the write capacity the events need, so none is sent blind."""
        if not keys:
            return {}, set()
        found, unread = self.store.stored_versions(table, keys)
        self.counts["deferred"] += len(unread)
        return found, set(unread)

    # -- ghosts --------------------------------------------------------------------

    def _confirm_ghosts(self, table: TableSpec, cluster: str, candidates: Mapping[str, StoredVersion]) -> None:
        """Describe stored, unfinished items ECS did not list, marked ones too; mark those it calls
        MISSING (once). Those it describes after all get their snapshot, or lose their mark.
        A key ECS cannot be asked about in this cluster (any writer may have stored any key) is
        refused without asking: ECS would refuse the whole call it is in."""
        askable: Dict[str, StoredVersion] = {}
        for key, stored in candidates.items():
            if _describable(key, table, cluster):
                askable[key] = stored
            else:
                self._refused(key, StoredItemConflict(
                    f"{table.key} {key}: not an ECS {table.arn_resource} ARN of {cluster}, its account and region, "
                    "so ECS was not asked about it and it was not marked"))
        for key in self._snapshots(table, cluster, list(askable), askable):
            stored = askable[key]
            if stored.missing_since is not None:
                continue  # marked on an earlier pass, and still a ghost
            if stored.version is None:  # another writer's: the mark is conditioned on the version
                self._refused(key, StoredItemConflict(f"{table.key} {key}: ECS no longer knows it, but the stored "
                                                      "version is not a whole number, so it was not marked"))
                continue
            with self._one_item(key):
                if self.store.mark_missing(table, key, stored.version, self.taken_at):
                    self.counts["missing"] += 1

    def _sweep(self, segment: int, listed: Mapping[str, Mapping[TableSpec, Set[str]]]) -> None:
        """Without the read index: one slice of each table, its unfinished items checked against
        the listings of this pass (items of clusters not reconciled in it wait for a later pass).
        A cluster whose ghosts cannot be confirmed fails alone."""
        for table in (TASKS, CONTAINER_INSTANCES):
            candidates: Dict[str, Dict[str, StoredVersion]] = {}
            for key, cluster, stored in self.store.scan_open_items(table, segment, SWEEP_SEGMENTS):
                if cluster is not None and cluster in listed and key not in listed[cluster][table]:
                    candidates.setdefault(cluster, {})[key] = stored
            for cluster, stored_versions in candidates.items():
                if self.throttled:
                    return
                with self._in_cluster(cluster):
                    self._confirm_ghosts(table, cluster, stored_versions)

    # -- errors --------------------------------------------------------------------

    def failed(self, where: str, error: Any) -> None:
        """``where`` (a cluster, the account, the pass) could not be reconciled: the pass fails."""
        self.complete = False
        self.errors.append(f"{where}: {_text(error)}")
        if isinstance(error, Exception) and not isinstance(error, (ClientError, BotoCoreError)):
            self._log_unexpected(where)

    @contextmanager
    def _in_cluster(self, cluster: str) -> Iterator[None]:
        """Work in one cluster. An error (ECS or DynamoDB after their retries, or a bug) fails that
        cluster, and the pass goes on with the others; running out of time stops the pass."""
        try:
            yield
        except OutOfTime:
            raise
        except Exception as error:
            self.failed(cluster, error)
            self.throttled = self.throttled or aws_error_code(error) in THROTTLED

    @contextmanager
    def _one_item(self, key: str) -> Iterator[None]:
        """One item's work. An item DynamoDB or ecs-state cannot store is refused: counted and
        listed, and the pass goes on. An unexpected error is counted the same way, and fails the
        pass once the rest is done. ECS and DynamoDB errors (after their retries) and running out
        of time are not the item's: they stop its cluster, or the pass."""
        try:
            yield
        except (OutOfTime, BotoCoreError):
            raise
        except (InvalidEvent, StoredItemConflict) as error:  # ItemTooLarge among them
            self._refused(key, error)
        except ClientError as error:
            if aws_error_code(error) != "ValidationException":  # not the item's fault: DynamoDB's
                raise
            self._refused(key, error)  # refused for its data, which the checks before the request missed
        except Exception as error:  # a bug, on this item's data: the rest of the pass still runs
            self._refused(key, error)
            self.errors.append(f"{key}: {_text(error)}")
            self._log_unexpected(key)

    def _refused(self, key: str, error: Exception) -> None:
        self.counts["refused"] += 1
        text = _text(error) if isinstance(error, StoredItemConflict) else f"{key}: {_text(error)}"  # (names the key)
        self.refusals.append(text)

    def _log_unexpected(self, where: str) -> None:
        if len(self.errors) <= MAX_ERRORS_REPORTED:  # with its traceback; the summary says the rest
            self.telemetry.log_failure("reconcile error", {"key": where}, None)


def _describable(key: str, table: TableSpec, cluster: str) -> bool:
    """Whether ECS's Describe call in ``cluster`` takes ``key``: an ECS ARN of the table's resource
    type, of the cluster's partition, region and account, and of that cluster (an old-format ARN
    names none)."""
    arn, home = parse_arn(key), parse_arn(cluster)
    return (arn is not None and home is not None and arn.resource == table.arn_resource
            and arn.prefix == home.prefix and arn.cluster in (None, home.ident))


def _text(error: Any) -> str:
    """An error as the summary names it: ECS's and DynamoDB's say what they are, others get their type."""
    if not isinstance(error, Exception) or isinstance(error, (ClientError, BotoCoreError, InvalidEvent,
                                                              StoredItemConflict)):
        return str(error)
    return f"{type(error).__name__}: {error}"



