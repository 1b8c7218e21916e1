"""Every setting of a stage, read from the environment once, checked, and passed in from there.

This is the one module of chalicelib that reads the environment. A stage sets
its variables in .chalice/config.json, and Chalice loads them before it
imports app.py; chalicelib/runtime.py reads them once per process, the tools
build a Config from a stage's variables, and the tests build theirs. A bad
value raises ConfigError, naming its variable.

The endpoints, region and credentials are boto3's own variables
(AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_ECS, AWS_REGION, ...): boto3
reads them itself, so there is nothing ecs-state-specific to set for local runs.
"""
from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional, Tuple

from chalicelib.errors import ConfigError
from chalicelib.model.lifecycle import ItemRules
from chalicelib.tables import ALL, CONTAINER_INSTANCES, TASKS, TableSpec

# The read index (chalicelib/tables.py): "disabled" keeps the docs example's bare
# tables; the list routes then answer 501, and the reconciler finds ghosts by a
# slow scan instead (chalicelib/reconcile/passes.py).
READ_INDEX_ENV = "ECS_STATE_READ_INDEX"
ENABLED, DISABLED = "enabled", "disabled"
# How long a finished item stays (a stopped task, a deregistered instance, a ghost),
# never less than the delivery horizon; and how young an event must be to create
# its item, never more than it (chalicelib/model/lifecycle.py, docs/reconcile.md).
RETENTION_DAYS_ENV = "ECS_STATE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 16  # the delivery horizon: a redrive creates what the dead-letter queue still holds
# The floor: EventBridge redelivers for up to 24 h and Lambda retries for up to 6 h,
# and an event older than the creation window can no longer create its item. Under
# 30 h, an event still in automatic redelivery (say, after a day-long DynamoDB
# outage) could be refused as expired; two days leave margin over those 30 h.
MIN_RETENTION_DAYS = 2
# The reconciler (chalicelib/reconcile/passes.py).
RECONCILE_MINUTES_ENV = "ECS_STATE_RECONCILE_MINUTES"
# ECS keeps a stopped task for about an hour: every 15 minutes, a lost STOPPED
# event is healed from the API four times over before ECS forgets the task, and a
# pass that changes nothing costs about 5,000 read units per 10,000 tasks.
DEFAULT_RECONCILE_MINUTES = 15
MIN_RECONCILE_MINUTES = 5  # a pass may take up to its 300 s timeout: passes must not pile up
RECONCILE_CLUSTERS_ENV = "ECS_STATE_RECONCILE_CLUSTERS"  # comma-separated names or ARNs; empty: all
ECS_CALLS_PER_SECOND_ENV = "ECS_STATE_ECS_CALLS_PER_SECOND"
# ECS refills the token bucket DescribeTasks and DescribeContainerInstances share
# at about 20 per second, for the whole account: half of it leaves room for the
# account's own deployments and tools.
DEFAULT_ECS_CALLS_PER_SECOND = 10.0
MAX_ECS_CALLS_PER_SECOND = 20.0
# Where an event that can never be stored goes, at once, with its error
# (chalicelib/ingest/recorder.py): the dead-letter queue's name or URL. Unset
# (local runs): such an event raises, as any.
DEAD_LETTER_QUEUE_ENV = "ECS_STATE_DEAD_LETTER_QUEUE"
# Keys a warm container remembers the highest stored version of
# (chalicelib/store/high_water.py): about 300 bytes each, so the default holds
# 10,000 tasks in ~3 MB. 0 turns the marks off.
HIGH_WATER_ENTRIES_ENV = "ECS_STATE_HIGH_WATER_ENTRIES"
DEFAULT_HIGH_WATER_ENTRIES = 10_000
# How long a mark answers for its key. Duplicates and out-of-order versions arrive
# within seconds to minutes of each other (EventBridge's and Lambda's retries, a
# task's states a few seconds apart), so ten minutes keep nearly all of the marks'
# saving (docs/benchmark.md), and bound how long a warm container can answer from
# marks taken before a table was restored (chalicelib/store/high_water.py).
HIGH_WATER_SECONDS_ENV = "ECS_STATE_HIGH_WATER_SECONDS"
DEFAULT_HIGH_WATER_SECONDS = 600
# POST /events exists only where the stage sets this variable to "enabled" (the
# local stage): Chalice loads a stage's variables before importing app.py.
EVENTS_ROUTE_ENV = "ECS_STATE_EVENTS_ROUTE"
# Powertools' own variables, with ecs-state's defaults (chalicelib/observability.py).
SERVICE_ENV, DEFAULT_SERVICE = "POWERTOOLS_SERVICE_NAME", "ecs-state"
NAMESPACE_ENV, DEFAULT_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE", "ECSState"


class Config(NamedTuple):  # a NamedTuple: immutable, and cheap to build at import (chalicelib/tables.py)
    task_table: str
    container_instance_table: str
    read_index: bool
    retention_seconds: int
    reconcile_minutes: int
    reconcile_clusters: Tuple[str, ...]  # names or ARNs; empty: every cluster
    ecs_calls_per_second: float
    dead_letter_queue: Optional[str]  # its name or URL; None: an event that can never be stored raises
    high_water_entries: int  # 0: no marks
    high_water_seconds: int
    events_route: bool  # POST /events (the local stage only)
    service: str  # Powertools' service name, in every log line and metric
    metrics_namespace: str

    def table_name(self, table: TableSpec) -> str:
        """The stage's name of ``table``."""
        return self.task_table if table.kind == TASKS.kind else self.container_instance_table

    def with_tables(self, names: Mapping[TableSpec, str]) -> "Config":
        """These settings with these tables' names (the others kept): table_name's inverse."""
        by_kind = {table.kind: name for table, name in names.items()}
        return self._replace(task_table=by_kind.get(TASKS.kind, self.task_table),
                             container_instance_table=by_kind.get(CONTAINER_INSTANCES.kind,
                                                                  self.container_instance_table))

    @property
    def rules(self) -> ItemRules:
        """What the settings change in a stored item."""
        return ItemRules(read_index=self.read_index, retention_seconds=self.retention_seconds)

    @property
    def high_water_marks(self) -> bool:
        return self.high_water_entries > 0 and self.high_water_seconds > 0


def from_environment(environ: Optional[Mapping[str, str]] = None) -> Config:
    """The settings in ``environ`` (default: this process's environment); ConfigError names a bad one."""
    env = os.environ if environ is None else environ
    task, container_instance = (env.get(table.name_env) or table.default_name for table in ALL)  # (TASKS first)
    return Config(
        task_table=task,
        container_instance_table=container_instance,
        read_index=_read_index(env),
        retention_seconds=_retention_days(env) * 86_400,
        reconcile_minutes=_reconcile_minutes(env),
        reconcile_clusters=tuple(
            name for name in (part.strip() for part in env.get(RECONCILE_CLUSTERS_ENV, "").split(",")) if name
        ),
        ecs_calls_per_second=_ecs_calls_per_second(env),
        dead_letter_queue=env.get(DEAD_LETTER_QUEUE_ENV) or None,
        high_water_entries=_whole_number(env, HIGH_WATER_ENTRIES_ENV, DEFAULT_HIGH_WATER_ENTRIES),
        high_water_seconds=_whole_number(env, HIGH_WATER_SECONDS_ENV, DEFAULT_HIGH_WATER_SECONDS),
        events_route=env.get(EVENTS_ROUTE_ENV) == ENABLED,
        service=env.get(SERVICE_ENV) or DEFAULT_SERVICE,
        metrics_namespace=env.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE,
    )


class AppShape(NamedTuple):
    """The settings that shape the app itself, read when app.py is imported (Chalice loads the
    stage's variables first): `chalice deploy` and `chalice package` fail on a bad one by name.
    The rest are read on the first invocation (chalicelib/runtime.py): Chalice's test client
    sets a stage's variables only while it invokes."""

    reconcile_minutes: int  # the schedule
    events_route: bool  # whether POST /events exists


def app_shape(environ: Optional[Mapping[str, str]] = None) -> AppShape:
    env = os.environ if environ is None else environ
    return AppShape(reconcile_minutes=_reconcile_minutes(env), events_route=env.get(EVENTS_ROUTE_ENV) == ENABLED)


def read_index(environ: Mapping[str, str]) -> bool:
    """ECS_STATE_READ_INDEX alone (a deployed function's, a local run's); ConfigError if bad."""
    return _read_index(environ)


def _read_index(env: Mapping[str, str]) -> bool:
    text = env.get(READ_INDEX_ENV) or ENABLED
    if text not in (ENABLED, DISABLED):
        raise ConfigError(f"{READ_INDEX_ENV} must be {ENABLED!r} or {DISABLED!r}, got {text!r}")
    return text == ENABLED


def _retention_days(env: Mapping[str, str]) -> int:
    days = _whole_number(env, RETENTION_DAYS_ENV, DEFAULT_RETENTION_DAYS)
    if days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"{RETENTION_DAYS_ENV} must be at least {MIN_RETENTION_DAYS} days, got {days}: EventBridge and Lambda "
            "redeliver an event for up to 30 hours, and an event older than the retention cannot create its item"
        )
    return days


def _reconcile_minutes(env: Mapping[str, str]) -> int:
    minutes = _whole_number(env, RECONCILE_MINUTES_ENV, DEFAULT_RECONCILE_MINUTES)
    if not MIN_RECONCILE_MINUTES <= minutes <= 24 * 60:
        raise ConfigError(f"{RECONCILE_MINUTES_ENV} must be from {MIN_RECONCILE_MINUTES} to 1440, got {minutes}")
    return minutes


def _ecs_calls_per_second(env: Mapping[str, str]) -> float:
    text = env.get(ECS_CALLS_PER_SECOND_ENV, "")
    try:
        rate = float(text) if text else DEFAULT_ECS_CALLS_PER_SECOND
    except ValueError:
        rate = float("nan")
    if not 0 < rate <= MAX_ECS_CALLS_PER_SECOND:  # (NaN fails this too)
        raise ConfigError(
            f"{ECS_CALLS_PER_SECOND_ENV} must be a number above 0, at most {MAX_ECS_CALLS_PER_SECOND:g}, got {text!r}"
        )
    return rate


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    try:
        number = int(text) if text else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {text!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, got {number}")
    return number
