"""The table part of `make deploy` and `make migrate` on Amazon's DynamoDB Local: tables as users
have them (the docs example's: provisioned, no index, items in them; an older ecs-state's, with
the index keyed by status), brought to ecs-state's definition without losing an event's write.

DynamoDB Local has no tagging, point-in-time recovery or encryption settings: a thin wrapper keeps
those here (tests/test_deploy.py proves them on moto). The CLI runs on moto, which has tagging.
"""
import time
from typing import Any, Dict, List

import boto3
import pytest
from moto import mock_aws

from chalicelib.model import attributes, lifecycle
from chalicelib.model.clock import parse_time
from chalicelib.model.lifecycle import expires_at
from chalicelib.tables import CONTAINER_INSTANCES, TASKS, TableSpec
from tests.conftest import dynamodb_local_server
from tests.helpers import (
    DAY,
    EVENT_TIME,
    HOUR,
    container_instance_event,
    create_older_ecs_state_table,
    iso,
    legacy_index_definition,
    record,
    stored_item,
    table_name,
    task_event,
)
from tools import migrate
from tools.stage import stage_plan

PLAN = stage_plan("prod")  # the docs example's tables, 16 days' retention
UPGRADE_TIME = EVENT_TIME + HOUR  # when these tests' upgrades run: about when the run started


def at_upgrade_time() -> "migrate.Upgrade":
    """How these tests' upgrades date what they add."""
    return migrate.Upgrade(PLAN.item_rules, UPGRADE_TIME)


def short_pause(seconds: float) -> None:
    """DynamoDB Local builds an index in the background too: wait for it, briefly."""
    time.sleep(0.2)
RETENTION = PLAN.item_rules.retention_seconds


class WithoutTaggingBackupsOrEncryption:
    """A DynamoDB Local client, with tags, point-in-time recovery and SSE kept in this object."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.backups: set = set()
        self.encrypted: set = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list_tags_of_resource(self, ResourceArn: str) -> Dict[str, Any]:
        return {"Tags": []}  # the docs example tags nothing

    def describe_continuous_backups(self, TableName: str) -> Dict[str, Any]:
        status = "ENABLED" if TableName in self.backups else "DISABLED"
        return {"ContinuousBackupsDescription": {"PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": status}}}

    def update_continuous_backups(self, TableName: str, **request: Any) -> None:
        self.backups.add(TableName)

    def describe_table(self, TableName: str) -> Dict[str, Any]:
        response = self._client.describe_table(TableName=TableName)
        if TableName in self.encrypted:
            response["Table"]["SSEDescription"] = {"Status": "ENABLED", "SSEType": "KMS"}
        return response

    def update_table(self, **request: Any) -> Any:
        if "SSESpecification" in request:
            self.encrypted.add(request["TableName"])
            return {}
        return self._client.update_table(**request)


def docs_example_items(count: int = 12) -> List[Dict[str, Any]]:
    """What the docs example stores: cw_version and the detail, no ecs-state field; every third task
    STOPPED, the n-th 10 n days before the events (0, 30, 60 and 90 days: history of months)."""
    items = []
    for n in range(count):
        stopped = n % 3 == 0
        event = task_event(n + 2, task_id=f"{n:032x}", **(
            {"lastStatus": "STOPPED", "desiredStatus": "STOPPED", "stoppedAt": iso(EVENT_TIME - n * 10 * DAY + 0.5)}
            if stopped else {}
        ))
        items.append({"cw_version": event["version"], **event["detail"]})
    event = container_instance_event(4, status="INACTIVE")
    items.append({"cw_version": event["version"], **event["detail"]})
    return items


def encoded(item: Dict[str, Any]) -> Dict[str, Any]:
    return {name: attributes.encode(value)[0] for name, value in item.items()}


@pytest.fixture(scope="module")
def own_dynamodb_local():
    """A DynamoDB Local of these tests' own: after the fault tests' hung and cut requests, the shared
    one can leave a new index CREATING for minutes."""
    with dynamodb_local_server() as endpoint:
        yield endpoint


@pytest.fixture
def dynamodb_local(own_dynamodb_local, use_endpoint):
    client = use_endpoint(own_dynamodb_local)
    yield client
    # DynamoDB Local gives each table with TTL on a thread of a pool of ten for as long as the table
    # exists, and a new index waits for a free one: without this, the module's later indexes never build.
    for name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)


@pytest.fixture
def docs_example_tables(dynamodb_local):
    """The stage's tables made as the docs example makes them: provisioned, key only, its items in them."""
    for spec in (TASKS, CONTAINER_INSTANCES):
        name = table_name(spec)
        dynamodb_local.delete_table(TableName=name)
        dynamodb_local.get_waiter("table_not_exists").wait(TableName=name)
        request = spec.create_table_request(name, read_index=False)
        del request["BillingMode"]
        dynamodb_local.create_table(**request, ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    for item in docs_example_items():
        spec = TASKS if "taskArn" in item else CONTAINER_INSTANCES
        dynamodb_local.put_item(TableName=table_name(spec), Item=encoded(item))
    return dynamodb_local


def names() -> Dict[TableSpec, str]:
    return {spec: table_name(spec) for spec in (TASKS, CONTAINER_INSTANCES)}


def upgrade(client: Any, options: migrate.TableOptions = migrate.DEPLOY) -> List[str]:
    return migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, options,
                                 confirm=lambda changes: True, pause=short_pause, now=UPGRADE_TIME)


def test_the_docs_example_tables_are_upgraded_in_place_and_a_second_run_changes_nothing(docs_example_tables):
    client = WithoutTaggingBackupsOrEncryption(docs_example_tables)

    changes = upgrade(client)

    task_table = table_name(TASKS)
    assert f"created index clusterArn-cw_phase-index on {task_table}" in changes
    assert f"added cw_phase and cw_expires_at to 12 of 12 items of {task_table}" in changes
    for name in names().values():
        table = docs_example_tables.describe_table(TableName=name)["Table"]
        assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
        [index] = table["GlobalSecondaryIndexes"]
        assert (index["IndexName"], index["IndexStatus"]) == ("clusterArn-cw_phase-index", "ACTIVE")
        assert index["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
        ttl = docs_example_tables.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "cw_expires_at")
    for item in docs_example_items():
        spec = TASKS if "taskArn" in item else CONTAINER_INSTANCES
        stored = stored_item(docs_example_tables, spec, item[spec.key])
        finished = item.get(spec.status_field) in spec.finished_statuses
        assert stored["cw_phase"] == ("finished" if finished else "open")
        if finished:  # every one finished before the upgrade: none expires sooner than a retention after it
            assert stored["cw_expires_at"] == expires_at(UPGRADE_TIME, RETENTION)
        else:
            assert "cw_expires_at" not in stored
        raw = docs_example_tables.get_item(TableName=names()[spec], Key={spec.key: {"S": item[spec.key]}})["Item"]
        assert {name: attributes.decode(value) for name, value in raw.items()
                if name not in ("cw_phase", "cw_expires_at")} == item  # nothing else touched
    # The read index answers at once: the open tasks of the cluster.
    cluster = docs_example_items()[0]["clusterArn"]
    open_tasks = docs_example_tables.query(
        TableName=names()[TASKS], IndexName="clusterArn-cw_phase-index",
        KeyConditionExpression="clusterArn = :c AND cw_phase = :p",
        ExpressionAttributeValues={":c": {"S": cluster}, ":p": {"S": "open"}},
    )["Items"]
    assert len(open_tasks) == 8

    assert upgrade(client) == []


def test_an_older_ecs_state_table_between_the_packaged_stacks_two_updates(dynamodb_local):
    """After update 1 (KeepLegacyIndex=yes) a table has both indexes; make migrate backfills and drops the old one."""
    name = table_name(TASKS)
    dynamodb_local.delete_table(TableName=name)
    dynamodb_local.get_waiter("table_not_exists").wait(TableName=name)
    request = TASKS.create_table_request(name)
    request["AttributeDefinitions"].append({"AttributeName": "lastStatus", "AttributeType": "S"})
    request["GlobalSecondaryIndexes"].append(legacy_index_definition(TASKS))
    dynamodb_local.create_table(**request)
    dynamodb_local.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "cw_expires_at"})
    for item in docs_example_items():
        if "taskArn" in item:
            dynamodb_local.put_item(TableName=name, Item=encoded(item))

    changes = migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(dynamodb_local), {TASKS: name}, PLAN.item_rules,
                                    PLAN.deployment, migrate.MIGRATE, lambda changes: True, pause=short_pause,
                                    now=UPGRADE_TIME)

    added, expiry, backups, deleted = changes
    assert added == f"added cw_phase and cw_expires_at to 12 of 12 items of {name}"
    floor = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at_upgrade_time().floor))
    assert expiry.startswith(f"{name}: 4 finished items got cw_expires_at on {floor}, none sooner than 16 days after")
    assert backups.startswith(f"{name}: point-in-time recovery is off")  # make migrate does not turn it on
    assert deleted == f"deleted index clusterArn-lastStatus-index from {name}"
    indexes = dynamodb_local.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == ["clusterArn-cw_phase-index"]


def test_an_event_racing_the_backfill_wins(docs_example_tables):
    """The backfill read the item at version 2; an event stores version 3 before its write."""
    name = table_name(TASKS)
    [read] = [item for item in docs_example_tables.scan(TableName=name)["Items"] if item["version"]["N"] == "3"]
    arn = read["taskArn"]["S"]
    newer = task_event(9, task_id=arn.rsplit("/", 1)[-1], lastStatus="STOPPED", stoppedAt="2026-11-22T09:00:00Z")
    assert record(newer)["outcome"] == "updated"
    before = stored_item(docs_example_tables, TASKS, arn)

    assert migrate.backfill_item(docs_example_tables, TASKS, name, read, at_upgrade_time()) is False

    assert stored_item(docs_example_tables, TASKS, arn) == before


def test_the_backfill_never_overwrites_what_an_item_has(docs_example_tables):
    """Nor lowers an expiry: it only raises one sooner than the item's own date (below)."""
    name = table_name(TASKS)
    later = int(EVENT_TIME) + 400 * DAY
    item = encoded({**docs_example_items()[0], "cw_expires_at": later})  # STOPPED, with an expiry of its own
    docs_example_tables.put_item(TableName=name, Item=item)

    assert migrate.backfill_item(docs_example_tables, TASKS, name, item, at_upgrade_time()) is True

    stored = stored_item(docs_example_tables, TASKS, item["taskArn"]["S"])
    assert (stored["cw_phase"], stored["cw_expires_at"]) == ("finished", later)
    assert migrate.backfill_item(docs_example_tables, TASKS, name, docs_example_tables.get_item(
        TableName=name, Key={"taskArn": item["taskArn"]})["Item"], at_upgrade_time()) is False


def test_an_upgrade_deletes_none_of_the_history_sooner_than_a_retention_period_after_it(docs_example_tables):
    """Dated from stoppedAt, the tasks stopped 30 to 90 days ago got an expiry in the past: TTL would
    have deleted them within days of the upgrade, with no point-in-time recovery to undo it."""
    before = time.time()

    migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(docs_example_tables), names(), PLAN.item_rules,
                          PLAN.deployment, migrate.MIGRATE, lambda changes: True, pause=short_pause)

    items = [item for name in names().values() for item in docs_example_tables.scan(TableName=name)["Items"]]
    assert len(items) == 13  # none gone: DynamoDB Local's TTL deletes an item whose date is past at once
    expiries = [int(item["cw_expires_at"]["N"]) for item in items if "cw_expires_at" in item]
    assert len(expiries) == 5  # four stopped tasks, one deregistered instance
    assert min(expiries) >= expires_at(before, RETENTION) > before + RETENTION


def test_a_repair_pass_mends_exactly_the_items_a_whole_item_writer_stripped(docs_example_tables):
    """The scan's filter (IN, attribute_not_exists) and projection, as DynamoDB Local answers them."""
    name = names()[TASKS]
    migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(docs_example_tables), {TASKS: name}, PLAN.item_rules,
                          PLAN.deployment, migrate.DEPLOY, lambda changes: True, short_pause, UPGRADE_TIME)
    # The docs example's put_item, its rule left on: a backfilled task stops again, a new one starts.
    for event in (task_event(20, task_id=f"{1:032x}", lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)),
                  task_event(1, task_id="f" * 32)):
        docs_example_tables.put_item(TableName=name, Item=encoded({"cw_version": event["version"], **event["detail"]}))

    count = migrate.backfill(docs_example_tables, TASKS, name, at_upgrade_time())

    assert (count.read, count.updated, count.requests, count.expiring, count.past_own_date) == (13, 2, 1, 1, 0)
    assert count.read_units > 0  # DynamoDB Local reports the scan's capacity
    assert count.earliest == count.latest == expires_at(UPGRADE_TIME, RETENTION)
    for item in docs_example_tables.scan(TableName=name)["Items"]:
        assert "cw_phase" in item and ("cw_expires_at" in item) == (item["lastStatus"]["S"] == "STOPPED")
    assert migrate.backfill(docs_example_tables, TASKS, name, at_upgrade_time()).updated == 0


# -- make migrate ---------------------------------------------------------------------------------


@pytest.fixture
def moto_session(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session()


def test_make_migrate_runs_the_table_part_on_named_tables(moto_session, capsys):
    dynamodb = moto_session.client("dynamodb")
    for spec, name in ((TASKS, "stack-tasks"), (CONTAINER_INSTANCES, "stack-container-instances")):
        request = spec.create_table_request(name)
        request["Tags"] = [{"Key": "ecs-state:deployment", "Value": "stack"}]  # the packaged stack's own
        dynamodb.create_table(**request)
    dynamodb.put_item(TableName="stack-tasks", Item=encoded(docs_example_items()[1]))

    assert migrate.main(["--stage", "dev", "--task-table", "stack-tasks",
                         "--container-instance-table", "stack-container-instances"]) == 0

    out = capsys.readouterr().out
    assert "migrate: tables stack-tasks, stack-container-instances (read index enabled)" in out
    assert "  - added cw_phase and cw_expires_at to 1 of 1 items of stack-tasks" in out
    assert "  - turned on TTL on cw_expires_at of stack-container-instances" in out
    assert sorted(dynamodb.list_tables()["TableNames"]) == ["stack-container-instances", "stack-tasks"]  # none created
    assert "point-in-time" not in out and "encrypt" not in out  # the stack (or Terraform) owns those


def test_make_migrate_with_yes_reports_what_will_expire_and_advises_point_in_time_recovery(moto_session, capsys):
    dynamodb = moto_session.client("dynamodb")
    for spec, name in names().items():
        request = spec.create_table_request(name, read_index=False)  # the docs example's: key only, untagged
        dynamodb.create_table(**request)
    for item in docs_example_items():
        dynamodb.put_item(TableName=names()[TASKS if "taskArn" in item else CONTAINER_INSTANCES], Item=encoded(item))

    assert migrate.main(["--stage", "prod", "--yes"], now=UPGRADE_TIME) == 0

    out = capsys.readouterr().out
    floor = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at_upgrade_time().floor))
    task_table = names()[TASKS]
    assert (f"  - {task_table}: 4 finished items got cw_expires_at on {floor}, none sooner than 16 days after this "
            "upgrade (TTL deletes an item within days of its date); dated from when they finished "
            "(EXPIRE_HISTORY=yes, --expire-history), 3 of them would be deleted at once") in out
    assert f"  - {task_table}: point-in-time recovery is off, so nothing TTL deletes can be restored" in out


def test_make_migrate_refuses_a_table_that_does_not_exist(moto_session):
    with pytest.raises(migrate.DeployError, match="table nowhere does not exist"):
        migrate.main(["--stage", "dev", "--task-table", "nowhere"])


def test_between_a_packaged_stacks_two_updates_the_old_index_is_left_to_cloudformation(moto_session, capsys):
    dynamodb = moto_session.client("dynamodb")
    for spec, name in ((TASKS, "stack-tasks"), (CONTAINER_INSTANCES, "stack-container-instances")):
        create_older_ecs_state_table(dynamodb, name, spec)

    assert migrate.main(["--stage", "dev", "--task-table", "stack-tasks", "--container-instance-table",
                         "stack-container-instances", "--keep-legacy-index", "--yes"]) == 0

    out = capsys.readouterr().out
    assert "deleted index" not in out and "  - created index clusterArn-cw_phase-index on stack-tasks" in out
    indexes = dynamodb.describe_table(TableName="stack-tasks")["Table"]["GlobalSecondaryIndexes"]
    assert sorted(index["IndexName"] for index in indexes) == ["clusterArn-cw_phase-index", "clusterArn-lastStatus-index"]


# -- an item DynamoDB refuses (issue 13 review, point 2) --------------------------------------------


ODD_TASK = task_event(2, task_id="9" * 32)["detail"]["taskArn"]


def filled_to_the_limit(item: Dict[str, Any]) -> Dict[str, Any]:
    """An attribute that brings the item to 10 bytes under DynamoDB's 400 KB (chalicelib.attributes
    counts the bytes as DynamoDB Local does): stored, but not once cw_phase is added."""
    size = sum(attributes.attribute_name_length(name) + attributes.encode(value)[1] for name, value in item.items())
    return {"overrides": "x" * (attributes.MAX_ITEM_BYTES - size - len("overrides") - 10)}


@pytest.mark.parametrize("odd", [
    lambda item: {"clusterArn": ""},  # the read index's key: DynamoDB refuses an empty string,
    lambda item: {"clusterArn": 7},  # another type,
    lambda item: {"clusterArn": "c" * 2049},  # more than 2,048 bytes,
    filled_to_the_limit,  # and an item over 400 KB
], ids=["empty-cluster", "numeric-cluster", "long-cluster", "full-item"])
def test_an_item_dynamodb_refuses_is_listed_and_the_upgrade_goes_on(docs_example_tables, odd):
    """The docs example stored it (its table had no index); ecs-state's writes cannot complete it."""
    name = names()[TASKS]
    event = task_event(2, task_id="9" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    item = {"cw_version": "0", **event["detail"]}
    docs_example_tables.put_item(TableName=name, Item=encoded({**item, **odd(item)}))
    client = WithoutTaggingBackupsOrEncryption(docs_example_tables)

    changes = upgrade(client)

    assert f"added cw_phase and cw_expires_at to 12 of 13 items of {name}" in changes
    [refused] = [line for line in changes if "refused" in line]
    assert refused.startswith(f"{name}: DynamoDB refused 1 item (ValidationException: ")
    assert refused.endswith(f": taskArn {ODD_TASK}")
    assert "cw_phase" not in stored_item(docs_example_tables, TASKS, ODD_TASK)  # left as it was
    for spec, table in names().items():  # the later steps ran
        ttl = docs_example_tables.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "ENABLED"
        assert all("cw_phase" in item for item in docs_example_tables.scan(TableName=table)["Items"]
                   if item[spec.key]["S"] != ODD_TASK)
    # Every later backfill reads the item again, says so again, and changes nothing else.
    [again] = upgrade(client, migrate.MIGRATE)
    assert again == refused


def test_an_item_dynamodb_refuses_does_not_keep_the_old_index_or_ttl(dynamodb_local):
    """An older ecs-state's table (the index keyed by status, no TTL) with one item at 400 KB."""
    name = table_name(TASKS)
    dynamodb_local.delete_table(TableName=name)
    dynamodb_local.get_waiter("table_not_exists").wait(TableName=name)
    create_older_ecs_state_table(dynamodb_local, name)
    item = {"cw_version": "0", **task_event(2, task_id="9" * 32)["detail"]}
    dynamodb_local.put_item(TableName=name, Item=encoded({**item, **filled_to_the_limit(item)}))
    dynamodb_local.put_item(TableName=name, Item=encoded({"cw_version": "0", **task_event(3)["detail"]}))

    changes = migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(dynamodb_local), {TASKS: name}, PLAN.item_rules,
                                    PLAN.deployment, migrate.MIGRATE, lambda changes: True, short_pause, UPGRADE_TIME)

    created, added, refused, *later = changes
    assert added == f"added cw_phase and cw_expires_at to 1 of 2 items of {name}"
    assert refused.startswith(f"{name}: DynamoDB refused 1 item (ValidationException: ")
    assert refused.endswith("); left as it was (without cw_phase and cw_expires_at, an item is missing from "
                            f"listings or never expires), the others done; correct or delete it, then run again: "
                            f"taskArn {ODD_TASK}")
    assert later == [f"deleted index clusterArn-lastStatus-index from {name}", f"turned on TTL on cw_expires_at of {name}"]


# -- expiries an older ecs-state dated from the retention alone (issue 13 review, point 1) ----------


OLD_RETENTION = 14 * DAY  # the stage's retention then: an older ecs-state's expiry was finished + 14 d + 1 h


def ecs_state_item(event: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
    """What an ecs-state that wrote the lifecycle fields stored for ``event``, and ``fields``."""
    return encoded({"cw_version": event["version"], "cw_time": event["time"], "cw_source": "event",
                    **event["detail"], **fields})


def stored_by_the_ecs_state_before_the_horizon(client: Any) -> List[Any]:
    """Upgraded tables (read index, TTL) holding what that ecs-state wrote; each case is (spec, item,
    its expiry once upgraded). A task stopped an hour before the events, its expiry 14 days and an
    hour after: once TTL deleted it, a redriven event of it, younger than a raised retention's
    creation window (up to 16 days), would create it again as RUNNING, never to expire."""
    stopped_at = EVENT_TIME - HOUR
    old, keep = OLD_RETENTION + HOUR, expires_at(0, RETENTION)  # from when the item finished
    undated = task_event(5, task_id="5" * 32, lastStatus="STOPPED")  # the docs example's: no stoppedAt, no cw_time
    cases = [
        (TASKS, ecs_state_item(task_event(5, task_id="1" * 32, lastStatus="STOPPED", stoppedAt=iso(stopped_at)),
                               cw_phase="finished", cw_expires_at=int(stopped_at) + old), int(stopped_at) + keep),
        (TASKS, ecs_state_item(task_event(3, task_id="2" * 32), cw_phase="open", cw_missing_since=iso(EVENT_TIME),
                               cw_expires_at=int(EVENT_TIME) + old), int(EVENT_TIME) + keep),  # a ghost
        (TASKS, ecs_state_item(task_event(5, task_id="3" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)),
                               cw_phase="finished", cw_expires_at=int(EVENT_TIME) + keep), int(EVENT_TIME) + keep),
        (TASKS, ecs_state_item(task_event(5, task_id="4" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)),
                               cw_phase="finished", cw_expires_at=int(EVENT_TIME) + 400 * DAY),  # never lowered
         int(EVENT_TIME) + 400 * DAY),
        (TASKS, encoded({"cw_version": "0", **undated["detail"], "cw_phase": "finished",
                         "cw_expires_at": int(EVENT_TIME) + old}), int(EVENT_TIME) + old),  # nothing dates it
        (CONTAINER_INSTANCES, ecs_state_item(container_instance_event(4, status="INACTIVE"), cw_phase="finished",
                                             cw_expires_at=int(EVENT_TIME) + old), int(EVENT_TIME) + keep),  # by cw_time
    ]
    for spec, item, _ in cases:
        client.put_item(TableName=names()[spec], Item=item)
    return cases


def test_an_upgrade_raises_the_expiries_an_older_ecs_state_dated_from_the_retention_alone(dynamodb_local):
    cases = stored_by_the_ecs_state_before_the_horizon(dynamodb_local)

    # Already upgraded, the tables are repaired without a question, nor the scan that forecasts it.
    changes = migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(dynamodb_local), names(), PLAN.item_rules,
                                    PLAN.deployment, migrate.MIGRATE, lambda changes: pytest.fail("asked"),
                                    short_pause, UPGRADE_TIME)

    keep = f"{max(RETENTION, lifecycle.DELIVERY_HORIZON_SECONDS) // DAY} days and an hour"
    assert changes == [
        f"{name}: raised the expiry of {count} items stored before this version (or under a shorter retention) to "
        f"{keep} after they finished (a ghost: after it was found missing): deleted sooner, an item could be "
        "created again by its own late events"
        for name, count in ((names()[TASKS], 2), (names()[CONTAINER_INSTANCES], 1))
    ]
    for spec, item, expiry in cases:
        assert stored_item(dynamodb_local, spec, item[spec.key]["S"])["cw_expires_at"] == expiry
    # What the older ecs-state dated 14 days after, now lasts at least as long as any event of it can
    # create it (lifecycle.DELIVERY_HORIZON_SECONDS), and an hour more.
    stopped = stored_item(dynamodb_local, TASKS, cases[0][1]["taskArn"]["S"])
    assert int(stopped["cw_expires_at"]) - parse_time(stopped["stoppedAt"], "stoppedAt") >= 16 * DAY + HOUR
    assert migrate.ensure_tables(WithoutTaggingBackupsOrEncryption(dynamodb_local), names(), PLAN.item_rules,
                                 PLAN.deployment, migrate.MIGRATE, lambda changes: True, short_pause,
                                 UPGRADE_TIME + DAY) == []
    # Past even once raised (TTL deletes it any time: DynamoDB Local at once), an expiry is left alone.
    long_ago = EVENT_TIME - 30 * DAY
    past = ecs_state_item(task_event(5, task_id="6" * 32, lastStatus="STOPPED", stoppedAt=iso(long_ago)),
                          cw_phase="finished", cw_expires_at=int(long_ago) + OLD_RETENTION + HOUR)
    assert not at_upgrade_time().fix(TASKS, past)


def test_a_write_racing_the_raise_wins(dynamodb_local):
    """The scan read the stopped task and the ghost with their old expiries; before the raise, an event
    stores the task's next version, and the reconciler clears the ghost's mark (ECS knows it again)."""
    stopped, ghost = (item for _, item, _ in stored_by_the_ecs_state_before_the_horizon(dynamodb_local)[:2])
    arn = stopped["taskArn"]["S"]
    newer = task_event(6, task_id=arn.rsplit("/", 1)[-1], lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    assert record(newer)["outcome"] == "updated"
    dynamodb_local.update_item(TableName=names()[TASKS], Key={"taskArn": ghost["taskArn"]},
                               UpdateExpression="REMOVE cw_missing_since, cw_expires_at")
    before = [stored_item(dynamodb_local, TASKS, item["taskArn"]["S"]) for item in (stopped, ghost)]

    for item in (stopped, ghost):
        assert migrate.backfill_item(dynamodb_local, TASKS, names()[TASKS], item, at_upgrade_time()) is False

    assert [stored_item(dynamodb_local, TASKS, item["taskArn"]["S"]) for item in (stopped, ghost)] == before
