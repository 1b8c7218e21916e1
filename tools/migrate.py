"""`make migrate STAGE=<stage>`: bring existing tables to ecs-state's definition, and nothing else.

For tables `make deploy` does not manage: a packaged stack's (between its two
updates), Terraform's, or any named with --task-table / --container-instance-table.
Per table, one change at a time, waiting for each:

1. add the read index (chalicelib.tables.READ_INDEX, cw_listing-cw_listing_key-index)
   if the stage has it on, with the table's own provisioned throughput when the
   table is provisioned;
2. backfill: give every item stored before ecs-state kept them (by the docs
   example, an older ecs-state, or the one before READ_INDEX, which wrote
   cw_phase for PHASE_INDEX but not the new index's keys) its lifecycle fields
   (lifecycle.lifecycle_fields: cw_phase, the read index's cw_listing and
   cw_listing_key, a stopped task's cw_stop_code, and once finished
   cw_expires_at), with a write conditioned on the item's version being the one
   read, so an event racing in wins. The index's attributes (cw_phase, cw_listing,
   cw_listing_key, cw_stop_code) follow the item's state: one that says otherwise
   is corrected, conditioned on the value read; an expiry is never overwritten.
   No expiry it gives is sooner than one retention period after the run
   (lifecycle.expires_at(now)), unless asked (--expire-history): the history of
   the docs example's tables would otherwise be deleted within days. An
   expiry sooner than the item's own date (lifecycle.expires_at from when it
   finished, or a ghost from its cw_missing_since: an older ecs-state dated
   it from the retention alone) is raised to it, conditioned on the version
   and the expiry read; none is lowered. An item
   DynamoDB refuses (ValidationException: an index key it cannot take, an item
   the fields take over 400 KB) is left as it is and listed by key, and so is an
   item the read index cannot list (no usable clusterArn); the backfill and the
   later steps go on;
3. delete the indexes of earlier versions (TableSpec.legacy_indexes: the one
   keyed by status, then PHASE_INDEX, clusterArn-cw_phase-index), only now that
   every item is in the read index: readers use PHASE_INDEX while a table has it
   (StateStore.phase_index_pages), so listings answer throughout. Not with
   --keep-legacy-index, for a packaged stack whose second update drops them;
   and the read index too if the stage turns it off;
4. turn on TTL on cw_expires_at.

A second run reads the tables (a scan projecting only the attributes that date
an item and key its index entries, filtered to the items that may need
something) and writes nothing, unless a writer stripped items since.

`make deploy` runs the same steps (tools/deploy.py: ensure_tables), creates
missing tables, and adds point-in-time recovery and encryption; it leaves step 3
to its repair step, after `chalice deploy`, so that the replaced code's readers
have their index until the new code replaces them, and the items the replaced
code wrote meanwhile are in the read index before its readers switch to it
(drop_legacy_indexes). A table ecs-state did not create (no DEPLOYMENT_TAG) is
changed only after the user confirmed the list of changes on a terminal (which
says how many items will get an expiry, and when: a scan of the table before
asking), or with --yes (the report then says it); on such a table already
upgraded, the backfill is a repair, done without asking (and without that scan).
"""
import argparse
import sys
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, TextIO, Tuple

from botocore.exceptions import ClientError

from chalicelib import config as settings
from chalicelib import tables
from chalicelib.errors import InvalidEvent, aws_error_code, aws_error_message
from chalicelib.model import attributes, lifecycle
from chalicelib.model.changes import SOURCE_FIELD
from chalicelib.model.clock import parse_time
from chalicelib.model.lifecycle import ItemRules
from chalicelib.model.listing import SEPARATOR, phase_of
from chalicelib.tables import (
    CLUSTER,
    EXPIRES_AT,
    FINISHED,
    GROUP,
    LISTING,
    LISTING_KEY,
    MISSING_SINCE,
    PHASE,
    STOP_CODE,
    TIME_TO_LIVE,
    VERSION,
    TableSpec,
)
from tools.stage import DEPLOYMENT_TAG, DeployError, cli, report, stage_plan

TABLE_ENCRYPTION = {"Enabled": True, "SSEType": "KMS"}  # the AWS managed key aws/dynamodb
WAIT_SECONDS = 5
WAIT_ATTEMPTS = 720  # an hour: a large table's new index takes that long to fill
PROGRESS_EVERY_ITEMS = 5_000
REFUSED_KEYS_LISTED = 20  # per error: the report names that many of the items DynamoDB refused
# The read index's attributes and cw_phase (PHASE_INDEX's key): what the item's state says they are,
# so a backfill corrects one that says otherwise (an expiry it only adds, or raises).
INDEX_FIELDS = (PHASE, LISTING, LISTING_KEY, STOP_CODE)
# Who wrote an item without its lifecycle fields, as the metadata it carries tells: since cw_source
# came with cw_phase and cw_expires_at, an ecs-state writes cw_source (cw_phase lacks while its read
# index is off; the ecs-state before READ_INDEX writes cw_phase but not cw_listing_key); an older one
# wrote cw_time (and cw_id), the docs example's Lambda neither.
PHASE_INDEX_ECS_STATE, PHASE_OFF_ECS_STATE, OLDER_ECS_STATE, NO_ECS_STATE = "phase-index", "phase-off", "older", "none"
WRITER_SIGNS = {
    PHASE_INDEX_ECS_STATE: f"with {SOURCE_FIELD} and {PHASE} but no {LISTING_KEY}, as the ecs-state before the read "
                           f"index {tables.READ_INDEX.name} writes them",
    PHASE_OFF_ECS_STATE: f"with {SOURCE_FIELD} but no {PHASE}, as an ecs-state with its read index off writes them",
    OLDER_ECS_STATE: f"with cw_time but no {SOURCE_FIELD}, as an ecs-state older than cw_phase writes them",
    NO_ECS_STATE: f"with neither {SOURCE_FIELD} nor cw_time, as no ecs-state writes them: the docs example's Lambda "
                  "writes cw_version and the detail only",
}
# Given a function listing the changes to tables ecs-state did not create, True: go ahead. A
# function, as listing them scans the tables to count the expiries: only a question asked pays that.
Confirm = Callable[[Callable[[], List[str]]], bool]


class TableOptions(NamedTuple):
    create: bool  # create a missing table (make deploy), or refuse (make migrate: named tables must exist)
    protect: bool  # point-in-time recovery and KMS encryption (make deploy)
    always_backfill: bool  # scan even when nothing says items lack their fields (make migrate)
    keep_legacy_index: bool = False  # a packaged stack's update 2 drops them: CloudFormation owns its indexes
    # make deploy: its repair step drops them, after chalice deploy (drop_legacy_indexes): the replaced code
    # reads them until then, and writes items the read index lacks until it stops.
    legacy_index_after_repair: bool = False
    expire_history: bool = False  # the backfill dates expiries from when items finished, even if that is past


DEPLOY = TableOptions(create=True, protect=True, always_backfill=False, legacy_index_after_repair=True)
MIGRATE = TableOptions(create=False, protect=False, always_backfill=True)


class ItemFix(NamedTuple):
    """What the backfill writes to one item."""

    missing: Dict[str, Any]  # the lifecycle fields it lacks, with their values
    own: Optional[int]  # if they include an expiry: the item's own date, which the floor may have moved
    raised: Optional[int]  # the expiry its own shorter one is raised to, if it has one
    corrected: Dict[str, Any] = {}  # INDEX_FIELDS it has with another value than its state gives, with that value
    removed: Tuple[str, ...] = ()  # INDEX_FIELDS it has that its state does not give
    unlisted: bool = False  # the read index is on, but cannot list the item (no usable clusterArn)

    def __bool__(self) -> bool:
        return bool(self.missing or self.corrected or self.removed) or self.raised is not None


class Upgrade(NamedTuple):
    """How a run dates what it adds: the stage's rules, when it runs, and whether history may expire."""

    rules: ItemRules
    now: float  # epoch seconds: the upgrade's time
    expire_history: bool = False  # --expire-history: a finished item expires on its own date, even a past one

    @property
    def floor(self) -> int:
        """The earliest expiry the upgrade gives: one retention period (at least the horizon) from now."""
        return lifecycle.expires_at(self.now, self.rules.retention_seconds)

    def fix(self, spec: TableSpec, item: Mapping[str, Any]) -> ItemFix:
        """What a scanned (encoded) item needs: the lifecycle fields it lacks, the index attributes its
        state contradicts, and a higher expiry if the one it has is sooner than its own date (an older
        ecs-state dated it from the retention alone, or the retention was shorter)."""
        detail = {attribute: attributes.decode(value) for attribute, value in item.items()}
        fields = lifecycle.lifecycle_fields(spec, detail, _observed_at(detail, self.now), self.rules)
        missing = {field: value for field, value in fields.items() if field not in item}
        corrected: Dict[str, Any] = {}
        removed: Tuple[str, ...] = ()
        if self.rules.read_index:
            corrected = {field: fields[field] for field in INDEX_FIELDS if field in item and field in fields
                         and not _same_index_value(spec, detail, field, fields[field])}
            removed = tuple(field for field in INDEX_FIELDS if field in item and field not in fields)
        own = missing.get(EXPIRES_AT)
        if own is not None and not self.expire_history:
            missing[EXPIRES_AT] = max(own, self.floor)
        due = self._own_expiry(spec, detail)
        stored = detail.get(EXPIRES_AT) if "N" in item.get(EXPIRES_AT, {}) else None
        # A date already past needs no write: every event of the item is too old to create it again.
        raise_to = due if stored is not None and due is not None and stored < due and due > self.now else None
        return ItemFix(missing, own, raise_to, corrected, removed, self.rules.read_index and LISTING not in fields)

    def _own_expiry(self, spec: TableSpec, detail: Mapping[str, Any]) -> Optional[int]:
        """The expiry ecs-state gives the item now: a finished one's from when it finished (as
        lifecycle.lifecycle_fields dates it), a ghost's from its cw_missing_since; None for another."""
        if spec.phase(detail.get(spec.status_field)) == FINISHED:
            # Dated from the epoch when it has neither stoppedAt nor cw_time: below any expiry it
            # has, so it is not raised (dated from now, each run would raise it again).
            return lifecycle.lifecycle_fields(spec, detail, _observed_at(detail, 0), self.rules)[EXPIRES_AT]
        try:
            since = parse_time(detail[MISSING_SINCE], MISSING_SINCE) if MISSING_SINCE in detail else None
        except InvalidEvent:
            return None
        return None if since is None else lifecycle.expires_at(since, self.rules.retention_seconds)


class Step(NamedTuple):
    text: str  # what it will change, as the user confirms it
    apply: Callable[[], List[str]]  # makes the change; returns what it changed
    forecast: Optional[Callable[[], List[str]]] = None  # more about it, for the confirmation (may scan)
    asks: bool = True  # on a table ecs-state did not create, only once the user confirmed it


class TableWork(NamedTuple):
    name: str
    ours: bool  # created by ecs-state (tagged): no confirmation needed
    steps: List[Step]


def ensure_tables(
    client: Any, names: Mapping[TableSpec, str], rules: ItemRules, deployment: str, options: TableOptions,
    confirm: Confirm, pause: Callable[[float], None] = time.sleep, now: Optional[float] = None,
) -> List[str]:
    """Inspect every table first (refusing what ecs-state cannot use before changing anything),
    ask once for the tables ecs-state did not create, then make the changes; return them.
    ``now`` is the upgrade's time (default: the clock's), from which expiries are floored."""
    upgrade = Upgrade(rules, time.time() if now is None else now, options.expire_history)
    work = [inspect_table(client, spec, name, upgrade, deployment, options, pause) for spec, name in names.items()]
    foreign = [(table.name, step) for table in work if not table.ours for step in table.steps if step.asks]

    def listing() -> List[str]:
        return [line for name, step in foreign
                for line in [f"{name}: {step.text}", *(step.forecast() if step.forecast else [])]]

    if foreign and not confirm(listing):
        raise DeployError(
            "not changing tables ecs-state did not create without confirmation: "
            + "; ".join(f"{name}: {step.text}" for name, step in foreign)
            + ". Confirm on a terminal (it says how many items will expire, and when), "
            "or add --yes (make deploy/migrate ... YES=1)"
        )
    changes: List[str] = []
    for table in work:
        for step in table.steps:
            changes += step.apply()
    return changes


def inspect_table(
    client: Any, spec: TableSpec, name: str, upgrade: Upgrade, deployment: str, options: TableOptions,
    pause: Callable[[float], None] = time.sleep,
) -> TableWork:
    """What the table needs, in order; raises DeployError for a table ecs-state cannot use."""
    rules = upgrade.rules
    try:
        table = client.describe_table(TableName=name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        if not options.create:
            raise DeployError(f"table {name} does not exist") from None
        return TableWork(name, True, [Step(f"create table {name}", lambda: _create(client, spec, name, rules, deployment, options, pause))])
    _check_schema(spec, table, rules)
    ttl = _time_to_live(client, name)
    indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
    has_read_index = spec.read_index.name in indexes
    add_read_index_needed = rules.read_index and not has_read_index
    upgraded = _upgraded(spec, table, ttl, rules)
    legacy = [index for index in spec.legacy_indexes if index in indexes]
    # Only after the backfill: readers use PHASE_INDEX while the table has it.
    stale_indexes = [] if options.keep_legacy_index or options.legacy_index_after_repair else list(legacy)
    if has_read_index and not rules.read_index:
        stale_indexes.append(spec.read_index.name)

    def settled() -> None:  # before each change: DynamoDB takes one at a time
        _wait_until_settled(client, name, pause)

    def add_read_index() -> List[str]:
        settled()
        _add_read_index(client, spec, table)
        settled()
        return [f"created index {spec.read_index.name} on {name}"]

    def add_lifecycle_fields() -> List[str]:
        settled()
        count = backfill(client, spec, name, upgrade)
        # On a table already upgraded, nothing this run replaces explains an item lacking its fields.
        explained: Optional[FrozenSet[str]] = frozenset() if upgraded else None
        return backfill_lines(name, count, rules) + backfill_notes(client, name, count, upgrade, explained,
                                                                    check_backups=not options.protect)

    def forecast() -> List[str]:
        count = backfill(client, spec, name, upgrade, write=False)
        return ([f"{name}: {count.updated} of {count.read} items lack {lifecycle_names(rules)}"]
                + backfill_notes(client, name, count, upgrade, explained=None, check_backups=not options.protect,
                                 done=False))

    def delete_index(index: str) -> List[str]:
        settled()
        client.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": index}}])
        settled()
        return [f"deleted index {index} from {name}"]

    steps: List[Step] = []
    if add_read_index_needed:
        steps.append(Step(f"add index {spec.read_index.name}{_throughput_note(table)}", add_read_index))
    if options.always_backfill or add_read_index_needed or legacy or ttl != "ENABLED":
        # On a table already upgraded, a repair (as make deploy's after chalice deploy): nothing to ask,
        # so no scan to forecast it.
        steps.append(Step(f"add {lifecycle_names(rules)} to the items stored without them (a scan of the table)",
                          add_lifecycle_fields, forecast, asks=not upgraded))
    for index in stale_indexes:
        steps.append(Step(f"delete index {index}", lambda index=index: delete_index(index)))
    if options.legacy_index_after_repair and not options.keep_legacy_index:
        for index in legacy:  # confirmed with the rest; drop_legacy_indexes deletes it
            steps.append(Step(f"delete index {index} in the repair step, once the code it replaces has stopped "
                              "(that code reads it until then)",
                              lambda index=index: [f"kept index {index} on {name} for the repair step to delete, "
                                                   "once the code it replaces has stopped"]))
    if ttl != "ENABLED":
        steps.append(Step(f"turn on TTL on {EXPIRES_AT}", lambda: _enable_time_to_live(client, name)))
    if options.protect:
        steps += _protection_steps(client, name, table, settled, pause)
    return TableWork(name, _tagged(client, table["TableArn"]), steps)


def upgraded(client: Any, spec: TableSpec, name: str, rules: ItemRules) -> bool:
    """Whether the table is already ecs-state's (read index as the stage says, TTL on, no old index),
    so that an item lacking its lifecycle fields was written so since (False if it does not exist)."""
    try:
        table = client.describe_table(TableName=name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        return False
    return _upgraded(spec, table, _time_to_live(client, name), rules)


def _upgraded(spec: TableSpec, table: Dict[str, Any], ttl: str, rules: ItemRules) -> bool:
    indexes = _index_names(table)
    return (ttl == "ENABLED" and not indexes & set(spec.legacy_indexes)
            and (spec.read_index.name in indexes) == rules.read_index)


def _index_names(table: Mapping[str, Any]) -> FrozenSet[str]:
    return frozenset(index["IndexName"] for index in table.get("GlobalSecondaryIndexes", []))


def legacy_indexes(client: Any, spec: TableSpec, name: str) -> List[str]:
    """The indexes of earlier ecs-state versions the table still has (none if it does not exist):
    while it has PHASE_INDEX, the deployed code may be the version before READ_INDEX."""
    try:
        indexes = _index_names(client.describe_table(TableName=name)["Table"])
    except client.exceptions.ResourceNotFoundException:
        return []
    return [index for index in spec.legacy_indexes if index in indexes]


def drop_legacy_indexes(client: Any, names: Mapping[TableSpec, str], rules: ItemRules, confirm: Confirm,
                        pause: Callable[[float], None] = time.sleep) -> List[str]:
    """make deploy's repair step, once its backfill gave every item its read index entry: delete the
    indexes of earlier versions (TableSpec.legacy_indexes), one at a time, waiting for each. Readers
    use PHASE_INDEX until then, and the code the deploy replaced read it. On a table ecs-state did
    not create, only once ``confirm`` says so (make deploy's set-up step asked already); else each
    index is kept, and said so, as it is on a table still without the read index the stage needs."""
    planned = []
    changes = []
    for spec, name in names.items():
        old = legacy_indexes(client, spec, name)
        if not old:
            continue
        table = client.describe_table(TableName=name)["Table"]
        if rules.read_index and spec.read_index.name not in _index_names(table):
            changes += [f"kept index {index} on {name}: the table has no {spec.read_index.name} yet, which the "
                        "listings need instead (run the set-up step: make deploy)" for index in old]
            continue
        planned += [(name, index, _tagged(client, table["TableArn"])) for index in old]
    foreign = [f"{name}: delete index {index}" for name, index, ours in planned if not ours]
    confirmed = not foreign or confirm(lambda: foreign)
    for name, index, ours in planned:
        if not (ours or confirmed):
            changes.append(f"kept index {index} on {name}: ecs-state did not create the table, and the deletion was "
                           "not confirmed (confirm on a terminal, or add --yes)")
            continue
        _wait_until_settled(client, name, pause)
        client.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": index}}])
        _wait_until_settled(client, name, pause)
        changes.append(f"deleted index {index} from {name}")
    return changes


def _check_schema(spec: TableSpec, table: Dict[str, Any], rules: ItemRules) -> None:
    """The key, and the type of every attribute ecs-state keys an index by, must be ecs-state's."""
    name = table["TableName"]
    wanted = spec.create_table_request(name, read_index=rules.read_index)
    if table["KeySchema"] != wanted["KeySchema"]:
        raise DeployError(f"table {name} has key {table['KeySchema']}, ecs-state needs {wanted['KeySchema']}")
    defined = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    for attribute in wanted["AttributeDefinitions"]:
        found = defined.get(attribute["AttributeName"], attribute["AttributeType"])
        if found != attribute["AttributeType"]:
            raise DeployError(
                f"table {name} defines {attribute['AttributeName']} as type {found}, "
                f"ecs-state needs {attribute['AttributeType']}"
            )
    for index in table.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == spec.read_index.name and index["KeySchema"] != spec.read_index.definition()["KeySchema"]:
            raise DeployError(f"table {name} has an index {index['IndexName']} keyed {index['KeySchema']}, not ecs-state's")


def _time_to_live(client: Any, name: str) -> str:
    """ENABLED (on cw_expires_at, or being turned on) or DISABLED; refuses TTL on another attribute."""
    description = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    status = description.get("TimeToLiveStatus", "DISABLED")
    if status in ("ENABLED", "ENABLING"):
        if description.get("AttributeName") != EXPIRES_AT:
            raise DeployError(
                f"table {name} has TTL on {description.get('AttributeName')}; ecs-state needs it on {EXPIRES_AT} "
                "(a table has one TTL attribute): turn it off or use another table"
            )
        return "ENABLED"
    if status == "DISABLING":
        raise DeployError(f"table {name} is turning TTL off (that takes up to an hour): run again once it is off")
    return "DISABLED"


def _tagged(client: Any, arn: str) -> bool:
    tags = client.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
    return any(tag["Key"] == DEPLOYMENT_TAG for tag in tags)


def _throughput_note(table: Dict[str, Any]) -> str:
    if _billing_mode(table) == "PAY_PER_REQUEST":
        return ""
    throughput = table["ProvisionedThroughput"]
    return (f" (provisioned like the table: {throughput['ReadCapacityUnits']} read and "
            f"{throughput['WriteCapacityUnits']} write capacity units)")


def _billing_mode(table: Dict[str, Any]) -> str:
    return table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")  # absent: created provisioned


def lifecycle_names(rules: ItemRules) -> str:
    """The lifecycle fields an item of the stage may lack (lifecycle.lifecycle_fields)."""
    return f"{PHASE}, {LISTING}, {LISTING_KEY}, {STOP_CODE} and {EXPIRES_AT}" if rules.read_index else EXPIRES_AT


def backfill_lines(name: str, count: "BackfillCount", rules: ItemRules) -> List[str]:
    """What a backfill pass gave: the items given what they lacked, and those whose index attributes
    were corrected."""
    lines = [f"added {lifecycle_names(rules)} to {count.updated} of {count.read} items of {name}"] if count.updated else []
    if count.corrected:
        lines.append(f"corrected {', '.join(INDEX_FIELDS)} of {count.corrected} items of {name} to what their state "
                     "says (a writer changed them without these)")
    return lines


# -- the changes ------------------------------------------------------------------------------


def _create(client: Any, spec: TableSpec, name: str, rules: ItemRules, deployment: str, options: TableOptions,
            pause: Callable[[float], None]) -> List[str]:
    request = spec.create_table_request(name, read_index=rules.read_index)
    request["Tags"] = [{"Key": DEPLOYMENT_TAG, "Value": deployment}]
    if options.protect:
        request["SSESpecification"] = TABLE_ENCRYPTION
    client.create_table(**request)
    _wait_until_settled(client, name, pause)
    changes = [f"created table {name}"] + _enable_time_to_live(client, name)
    if options.protect:
        changes += _enable_point_in_time_recovery(client, name, pause)
    return changes


def _add_read_index(client: Any, spec: TableSpec, table: Dict[str, Any]) -> None:
    index = spec.read_index.definition()
    if _billing_mode(table) != "PAY_PER_REQUEST":
        throughput = table["ProvisionedThroughput"]
        index["ProvisionedThroughput"] = {key: throughput[key] for key in ("ReadCapacityUnits", "WriteCapacityUnits")}
    client.update_table(
        TableName=table["TableName"],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key in spec.read_index.key_attributes],
        GlobalSecondaryIndexUpdates=[{"Create": index}],
    )


def _enable_time_to_live(client: Any, name: str) -> List[str]:
    client.update_time_to_live(TableName=name, TimeToLiveSpecification=TIME_TO_LIVE)
    return [f"turned on TTL on {EXPIRES_AT} of {name}"]


def _protection_steps(client: Any, name: str, table: Dict[str, Any], settled: Callable[[], None],
                      pause: Callable[[float], None]) -> List[Step]:
    def encrypt() -> List[str]:
        settled()
        client.update_table(TableName=name, SSESpecification=TABLE_ENCRYPTION)
        return [f"encrypted table {name} with KMS"]

    steps = []
    sse = table.get("SSEDescription", {})
    if sse.get("Status") not in ("ENABLED", "UPDATING") or sse.get("SSEType") != "KMS":
        steps.append(Step("encrypt with the AWS managed KMS key", encrypt))
    if not _point_in_time_recovery_enabled(client, name):
        steps.append(Step("turn on point-in-time recovery", lambda: _enable_point_in_time_recovery(client, name, pause)))
    return steps


def _point_in_time_recovery_enabled(client: Any, name: str) -> bool:
    backups = client.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    return backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED"


def _enable_point_in_time_recovery(client: Any, name: str, pause: Callable[[float], None], attempts: int = 30) -> List[str]:
    """A new table refuses PITR for a short while ("continuous backups are being enabled")."""
    for attempt in range(attempts):
        try:
            client.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
            return [f"enabled point-in-time recovery on {name}"]
        except client.exceptions.ContinuousBackupsUnavailableException:
            if attempt == attempts - 1:
                raise
            pause(2)
    return []


def _wait_until_settled(client: Any, name: str, pause: Callable[[float], None]) -> None:
    """Until the table and each of its indexes are ACTIVE: DynamoDB takes one index change at a time."""
    for _ in range(WAIT_ATTEMPTS):
        table = client.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE" and all(
            index.get("IndexStatus") == "ACTIVE" for index in table.get("GlobalSecondaryIndexes", [])
        ):
            return
        pause(WAIT_SECONDS)
    raise DeployError(f"table {name} or one of its indexes is still changing after {WAIT_ATTEMPTS * WAIT_SECONDS} s")


# -- the backfill -----------------------------------------------------------------------------


@dataclass
class BackfillCount:
    """What a backfill pass read and gave (or, previewing, would give)."""

    read: int = 0  # items the scan read: the whole table
    updated: int = 0  # items given what they lacked
    read_units: float = 0.0  # the scan's read capacity (DynamoDB's answer; 0 where it gives none)
    requests: int = 0  # Scan requests (pages)
    expiring: int = 0  # items given a cw_expires_at
    earliest: Optional[int] = None  # the earliest and latest of those expiries
    latest: Optional[int] = None
    past_own_date: int = 0  # of those, items whose own date (from when they finished) is past
    raised: int = 0  # items whose shorter expiry was raised to their own date
    corrected: int = 0  # items whose index attributes said otherwise than their state
    stripped: Dict[str, int] = dataclass_field(default_factory=dict)  # items given what they lacked, by who wrote them
    refused: Dict[str, List[str]] = dataclass_field(default_factory=dict)  # DynamoDB's error: the items it refused ("taskArn …")
    unlisted: List[str] = dataclass_field(default_factory=list)  # the items the read index cannot list ("taskArn …")

    def add(self, item: Mapping[str, Any], fix: ItemFix, now: float) -> None:
        """One item given what ``fix`` says."""
        self.raised += fix.raised is not None
        self.corrected += bool(fix.corrected or fix.removed)
        if not fix.missing:
            return
        self.updated += 1
        writer = writer_of(item)
        self.stripped[writer] = self.stripped.get(writer, 0) + 1
        if fix.own is not None:
            given = fix.missing[EXPIRES_AT]
            self.expiring += 1
            self.earliest = given if self.earliest is None else min(self.earliest, given)
            self.latest = given if self.latest is None else max(self.latest, given)
            self.past_own_date += fix.own <= now


def backfill(client: Any, spec: TableSpec, name: str, upgrade: Upgrade, write: bool = True) -> BackfillCount:
    """Add the lifecycle fields to every item lacking them, and raise every expiry sooner than the
    item's own date (``write=False``: only count them).

    One Scan of the whole table, which DynamoDB bills by the size of every item it reads; the filter
    and the projection keep the answer to the few attributes that date the items that may need
    something, and key their index entries: those without cw_phase or cw_listing, every finished
    item or ghost (a filter cannot compare an expiry with the date it was computed from), and
    those whose index attributes say finished or carry a stop code (an unfinished item's entry, keyed
    by its cluster and group, which never change, is right if it is there). On a table already
    upgraded, that is its finished items and ghosts, as before the read index."""
    rules = upgrade.rules
    fields = [spec.key, VERSION, "cw_time", SOURCE_FIELD, PHASE, EXPIRES_AT, MISSING_SINCE, spec.status_field]
    if spec.finished_at_field:
        fields.append(spec.finished_at_field)
    if rules.read_index:  # what lifecycle_fields keys the read index's entry by, and the entry
        fields += [CLUSTER, GROUP, LISTING, LISTING_KEY, STOP_CODE]
        if spec.stop_code_field:
            fields.append(spec.stop_code_field)
    placeholder = {field: f"#a{n}" for n, field in enumerate(fields)}
    values = {f":s{n}": {"S": status} for n, status in enumerate(sorted(spec.finished_statuses))}
    lacking = (f"{placeholder[spec.status_field]} IN ({', '.join(values)}) "
               f"OR attribute_exists({placeholder[EXPIRES_AT]})")  # finished, or with an expiry (a ghost)
    if rules.read_index:
        values.update({":finished": {"S": FINISHED}, ":finished_key": {"S": f"{SEPARATOR}{FINISHED}{SEPARATOR}"}})
        lacking = (f"attribute_not_exists({placeholder[PHASE]}) OR attribute_not_exists({placeholder[LISTING]}) "
                   f"OR ({lacking}) OR {placeholder[PHASE]} = :finished "
                   f"OR contains({placeholder[LISTING_KEY]}, :finished_key) OR attribute_exists({placeholder[STOP_CODE]})")
    request: Dict[str, Any] = {
        "TableName": name, "ProjectionExpression": ", ".join(placeholder.values()),
        "ExpressionAttributeNames": {value: key for key, value in placeholder.items()},
        "FilterExpression": lacking, "ExpressionAttributeValues": values, "ReturnConsumedCapacity": "TOTAL",
    }
    count = BackfillCount()
    while True:
        page = client.scan(**request)
        count.requests += 1
        count.read_units += page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)
        for item in page.get("Items", []):
            fix = upgrade.fix(spec, item)
            if fix.unlisted:
                count.unlisted.append(f"{spec.key} {item[spec.key]['S']}")
            try:
                written = bool(fix) and (not write or _write_fix(client, spec, name, item, fix))
            except ItemRefused as refusal:
                count.refused.setdefault(refusal.error, []).append(f"{spec.key} {item[spec.key]['S']}")
                continue
            if written:
                count.add(item, fix, upgrade.now)
        before, count.read = count.read, count.read + page.get("ScannedCount", 0)
        if write and count.read // PROGRESS_EVERY_ITEMS > before // PROGRESS_EVERY_ITEMS:
            print(f"    {name}: {count.read} items read, {count.updated} updated", flush=True)
        if "LastEvaluatedKey" not in page:
            return count
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def backfill_item(client: Any, spec: TableSpec, name: str, item: Mapping[str, Any], upgrade: Upgrade) -> bool:
    """Give ``item`` what it needs, unless it changed since it was read; return whether it was updated."""
    fix = upgrade.fix(spec, item)
    return bool(fix) and _write_fix(client, spec, name, item, fix)


class ItemRefused(Exception):
    """DynamoDB refused to write what one item lacks (ValidationException): e.g. an item the fields
    would take over 400 KB, or a clusterArn PHASE_INDEX cannot key (empty, not a string, over 2 KB)
    on a table that has it."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _write_fix(client: Any, spec: TableSpec, name: str, item: Mapping[str, Any], fix: ItemFix) -> bool:
    """Whether the write was made (False: the item changed since it was read); ItemRefused if DynamoDB
    refuses the item."""
    names = {"#version": VERSION}
    values: Dict[str, Any] = {}
    conditions = ["#version = :version" if VERSION in item else "attribute_not_exists(#version)"]
    if VERSION in item:
        values[":version"] = item[VERSION]
    assignments, removals = [], []
    for n, (field, value) in enumerate(sorted(fix.missing.items())):
        names[f"#f{n}"], values[f":f{n}"] = field, attributes.encode(value)[0]
        assignments.append(f"#f{n} = :f{n}")
        conditions.append(f"attribute_not_exists(#f{n})")  # never overwrite: a racing write has its own
    # Index attributes the state contradicts: only over the value read (a racing write has its own).
    for n, field in enumerate(sorted({*fix.corrected, *fix.removed})):
        names[f"#c{n}"], values[f":c{n}read"] = field, item[field]
        conditions.append(f"#c{n} = :c{n}read")
        if field in fix.corrected:
            values[f":c{n}"] = attributes.encode(fix.corrected[field])[0]
            assignments.append(f"#c{n} = :c{n}")
        else:
            removals.append(f"#c{n}")
    if fix.raised is not None:  # only over the expiry read: a mark set again, or cleared, since wins
        names["#expires"], values[":read"], values[":raised"] = EXPIRES_AT, item[EXPIRES_AT], {"N": str(fix.raised)}
        assignments.append("#expires = :raised")
        conditions.append("#expires = :read")
    update = " ".join(clause for clause in (assignments and "SET " + ", ".join(assignments),
                                             removals and "REMOVE " + ", ".join(removals)) if clause)
    try:
        client.update_item(
            TableName=name, Key={spec.key: item[spec.key]}, UpdateExpression=update,
            ConditionExpression=" AND ".join(conditions), ExpressionAttributeNames=names, ExpressionAttributeValues=values,
        )
    except ClientError as error:
        code = aws_error_code(error)
        if code == "ConditionalCheckFailedException":
            return False  # an event or the reconciler wrote the item since: its write carries what it needs
        if code == "ValidationException":  # this item only: the others go on
            raise ItemRefused(f"ValidationException: {aws_error_message(error)}") from None
        raise
    return True


def writer_of(item: Mapping[str, Any]) -> str:
    """Which kind of writer stored a (scanned) item: WRITER_SIGNS."""
    if SOURCE_FIELD in item:
        return PHASE_INDEX_ECS_STATE if PHASE in item else PHASE_OFF_ECS_STATE
    return OLDER_ECS_STATE if "cw_time" in item else NO_ECS_STATE


def _same_index_value(spec: TableSpec, detail: Mapping[str, Any], field: str, value: Any) -> bool:
    """Whether the item's ``field`` (decoded in ``detail``) is ``value``, its state's. A finished item
    with no time of its own (no stoppedAt, no cw_time: the docs example's deregistered instance) is
    keyed from when a backfill first found it: any such time of its cluster is its own."""
    stored = detail[field]
    if stored == value:
        return True
    if field != LISTING_KEY or not isinstance(stored, str) or phase_of(value) != FINISHED or _dated(spec, detail):
        return False
    return stored.rsplit(SEPARATOR, 1)[0] == value.rsplit(SEPARATOR, 1)[0]


def _dated(spec: TableSpec, detail: Mapping[str, Any]) -> bool:
    """Whether the item tells when it finished (lifecycle.finished_at): its own finish time, or cw_time."""
    for field in (spec.finished_at_field, "cw_time"):
        if field is not None:
            try:
                parse_time(detail.get(field), field)
                return True
            except InvalidEvent:
                pass
    return False


def _observed_at(detail: Mapping[str, Any], now: float) -> float:
    """When the stored state was seen: its cw_time, else now (it dates only the expiry of a finished
    item without its own finish time)."""
    try:
        return parse_time(detail.get("cw_time"), "cw_time")
    except InvalidEvent:
        return now


def backfill_notes(client: Any, name: str, count: BackfillCount, upgrade: Upgrade,
                   explained: Optional[FrozenSet[str]], check_backups: bool, done: bool = True) -> List[str]:
    """What a backfill pass means beyond its count: the items DynamoDB refused, those the read index
    cannot list, the expiries raised, when the items it dated expire (and what --expire-history
    changes), point-in-time recovery if off, and a writer still stripping items. ``explained``: None
    where items lacking their fields are history (the table's first backfill); else the kinds of
    writer (WRITER_SIGNS) whose items the code this run replaced explains, so that any other kind is
    a writer still at work."""
    notes = [refused_note(name, error, keys, upgrade.rules) for error, keys in count.refused.items()]
    if count.unlisted:
        notes.append(unlisted_note(name, count.unlisted))
    if count.raised:
        notes.append(
            f"{name}: {'raised' if done else 'will raise'} the expiry of {count.raised} items stored before this "
            f"version (or under a shorter retention) to {_keep_days(upgrade.rules)} days and an hour after they "
            "finished (a ghost: after it was found missing): deleted sooner, an item could be created again by "
            "its own late events"
        )
    if count.expiring:
        span = (f"on {_when(count.earliest)}" if _when(count.earliest) == _when(count.latest)
                else f"from {_when(count.earliest)} to {_when(count.latest)}")
        got = "got" if done else "will get"
        if upgrade.expire_history:
            notes.append(
                f"{name}: {count.expiring} finished items {got} {EXPIRES_AT} dated from when they finished "
                f"(--expire-history), {span}; {count.past_own_date} of them are past, and TTL deletes those "
                "within days"
            )
        else:
            notes.append(
                f"{name}: {count.expiring} finished items {got} {EXPIRES_AT} {span}, none sooner than "
                f"{(upgrade.floor - int(upgrade.now)) // 86_400} days after this upgrade (TTL deletes an item "
                f"within days of its date); dated from when they finished (EXPIRE_HISTORY=yes, --expire-history), "
                f"{count.past_own_date} of them would be deleted at once"
            )
        if check_backups and not _point_in_time_recovery_known_on(client, name):
            notes.append(
                f"{name}: point-in-time recovery is off, so nothing TTL deletes can be restored: turn it on "
                f"before that (aws dynamodb update-continuous-backups --table-name {name} "
                "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true)"
            )
    unexplained = {writer: n for writer, n in count.stripped.items() if explained is not None and writer not in explained}
    if unexplained:
        notes.append(
            f"{name}: {sum(unexplained.values())} items lacked {lifecycle_names(upgrade.rules)} that no code this "
            "run replaced explains ("
            + "; ".join(f"{n} {WRITER_SIGNS[writer]}" for writer, n in sorted(unexplained.items()))
            + "): another writer still writes whole items to this table, most likely the docs example's Lambda "
            "(its EventBridge rule still enabled), or another deployment of ecs-state. Until it stops, each item "
            "it writes is missing from listings and from the reconciler's ghost query, and a finished one never "
            "expires. Find its rule: aws events list-rules --query \"Rules[?EventPattern && contains(EventPattern, "
            "'aws.ecs')].[Name, State]\" --output text; a rule whose targets (aws events list-targets-by-rule "
            "--rule <name>) are not this stage's ecs-state functions is that writer: aws events disable-rule "
            "--name <name>. The next run repairs what it wrote meanwhile, and should find none"
        )
    return notes


def refused_note(name: str, error: str, keys: List[str], rules: ItemRules) -> str:
    """The items DynamoDB refused with one error, by key (the first REFUSED_KEYS_LISTED)."""
    more = f"; and {len(keys) - REFUSED_KEYS_LISTED} more" if len(keys) > REFUSED_KEYS_LISTED else ""
    return (f"{name}: DynamoDB refused {len(keys)} item{'s' if len(keys) > 1 else ''} ({error}); left as "
            f"{'they were' if len(keys) > 1 else 'it was'} (without {lifecycle_names(rules)}, an item is missing "
            "from listings or never expires), the others done; correct or delete "
            f"{'them' if len(keys) > 1 else 'it'}, then run again: " + "; ".join(keys[:REFUSED_KEYS_LISTED]) + more)


def unlisted_note(name: str, keys: List[str]) -> str:
    """The items the read index cannot list (lifecycle.lifecycle_fields gives them no entry), by key."""
    more = f"; and {len(keys) - REFUSED_KEYS_LISTED} more" if len(keys) > REFUSED_KEYS_LISTED else ""
    return (f"{name}: {len(keys)} item{'s' if len(keys) > 1 else ''} cannot be listed: the read index cannot key "
            f"{'them' if len(keys) > 1 else 'it'} (a {CLUSTER} missing, empty or not a string, or with its {GROUP} "
            f"too long for {LISTING_KEY}); kept, and found by key (GET /tasks/{{id}}, GET /container-instances/{{id}}), "
            "but in no listing: "
            + "; ".join(keys[:REFUSED_KEYS_LISTED]) + more)


def _keep_days(rules: ItemRules) -> str:
    """How long a finished item is kept (lifecycle.expires_at), in days."""
    return f"{max(rules.retention_seconds, lifecycle.DELIVERY_HORIZON_SECONDS) / 86_400:g}"


def _when(epoch_seconds: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch_seconds or 0))


def _point_in_time_recovery_known_on(client: Any, name: str) -> bool:
    """Whether point-in-time recovery is on; False where it cannot be read (DynamoDB Local has no such API)."""
    try:
        return _point_in_time_recovery_enabled(client, name)
    except ClientError:
        return False


# -- make migrate ------------------------------------------------------------------------------


EXPIRE_HISTORY_HELP = (
    "date the expiry of finished items the backfill finds from when they finished, even if that is past "
    "(TTL deletes those within days); without it, none expires sooner than one retention period from now"
)


def confirm_on_terminal(assume_yes: bool, stdin: Optional[TextIO] = None) -> Confirm:
    """--yes, or a "yes" typed on a terminal (default: this process's); never without one (CI, pipes)."""

    def confirm(changes: Callable[[], List[str]]) -> bool:
        if assume_yes:
            return True
        terminal = stdin or sys.stdin
        if not terminal.isatty():
            return False
        print("ecs-state did not create these tables; reading them to say what it will change...", flush=True)
        listed = changes()
        print("It will:")
        for change in listed:
            print(f"  - {change}")
        print("Go ahead? Type yes: ", end="", flush=True)
        return terminal.readline().strip().lower() in ("y", "yes")

    return confirm


def main(argv: "List[str] | None" = None, now: Optional[float] = None) -> int:
    """``now``: the upgrade's time (default: the clock's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="the stage whose settings apply (read index, retention)")
    for spec in tables.ALL:
        parser.add_argument(f"--{spec.kind.replace('_', '-')}-table", dest=spec.kind, metavar="NAME",
                            help=f"the {spec.kind.replace('_', ' ')} table (default: the stage's {spec.name_env})")
    parser.add_argument("--read-index", choices=(settings.ENABLED, settings.DISABLED),
                        help=f"override the stage's {settings.READ_INDEX_ENV} (a packaged stack's ReadIndex parameter)")
    parser.add_argument("--keep-legacy-index", action="store_true",
                        help="leave the indexes of earlier versions (clusterArn-cw_phase-index, the status-keyed "
                             "one): a packaged stack's second update drops them")
    parser.add_argument("--yes", action="store_true", help="change tables ecs-state did not create without asking")
    parser.add_argument("--expire-history", action="store_true", help=EXPIRE_HISTORY_HELP)
    args = parser.parse_args(argv)
    import boto3
    from botocore.config import Config

    plan = stage_plan(args.stage)
    environment = {**plan.environment, **({settings.READ_INDEX_ENV: args.read_index} if args.read_index else {})}
    names = {spec: getattr(args, spec.kind) or plan.table_names[spec] for spec in tables.ALL}
    client = boto3.session.Session().client("dynamodb", config=Config(retries={"mode": "adaptive", "total_max_attempts": 10}))
    print(f"migrate: tables {', '.join(names.values())} (read index {environment.get(settings.READ_INDEX_ENV, settings.ENABLED)})")
    options = MIGRATE._replace(keep_legacy_index=args.keep_legacy_index, expire_history=args.expire_history)
    report(ensure_tables(client, names, settings.from_environment(environment).rules, plan.deployment, options,
                         confirm_on_terminal(args.yes), now=now))
    return 0


if __name__ == "__main__":
    cli(main)
