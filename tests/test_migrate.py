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

from chalicelib import runtime
from chalicelib.model import attributes, lifecycle
from chalicelib.model.clock import parse_time
from chalicelib.model.lifecycle import expires_at
from chalicelib.model.listing import sort_time
from chalicelib.tables import CONTAINER_INSTANCES, TASKS, TableSpec
from tests.conftest import dynamodb_local_server
from tests.helpers import (
    DAY,
    EVENT_TIME,
    HOUR,
    container_instance_event,
    create_older_ecs_state_table,
    create_phase_index_table,
    iso,
    legacy_index_definition,
    parse,
    phase_index_item,
    record,
    stored_item,
    table_name,
    task_event,
)
from tools import migrate
from tools.stage import stage_plan

PLAN = stage_plan("prod")  # the docs example's tables, 16 days' retention
INDEX_FIELDS = ("cw_phase", "cw_listing", "cw_listing_key", "cw_stop_code")  # what keys the read indexes
LIFECYCLE_FIELDS = (*INDEX_FIELDS, "cw_expires_at")
FIELDS = "cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at"  # as the reports name them
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
    assert f"created index cw_listing-cw_listing_key-index on {task_table}" in changes
    assert f"added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 12 of 12 items of {task_table}" in changes
    for name in names().values():
        table = docs_example_tables.describe_table(TableName=name)["Table"]
        assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
        [index] = table["GlobalSecondaryIndexes"]
        assert (index["IndexName"], index["IndexStatus"]) == ("cw_listing-cw_listing_key-index", "ACTIVE")
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
                if name not in LIFECYCLE_FIELDS} == item  # nothing else touched
        # The read index's attributes, as the recorder writes them (finished ones dated from stoppedAt,
        # or, with no time of their own, from the upgrade).
        given = lifecycle.lifecycle_fields(spec, item, UPGRADE_TIME, PLAN.item_rules)
        assert {name: stored[name] for name in INDEX_FIELDS if name in stored} == {
            name: given[name] for name in INDEX_FIELDS if name in given}
    # The read index answers at once: the open tasks of the cluster.
    cluster = docs_example_items()[0]["clusterArn"]
    listed = runtime.current().read_api().list_items(TASKS, {"cluster": cluster, "status": "RUNNING"})
    assert len(listed["items"]) == 8

    assert upgrade(client) == []


def test_an_older_ecs_state_table_between_the_packaged_stacks_two_updates(dynamodb_local):
    """A stack made before the previous read index, after update 1 (KeepLegacyIndex=status-index): the
    table has the read index and the one keyed by status; make migrate backfills and drops the old one."""
    name = table_name(TASKS)
    dynamodb_local.delete_table(TableName=name)
    dynamodb_local.get_waiter("table_not_exists").wait(TableName=name)
    request = TASKS.create_table_request(name)
    request["AttributeDefinitions"] += [{"AttributeName": attribute, "AttributeType": "S"}
                                        for attribute in ("clusterArn", "lastStatus")]
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
    assert added == f"added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 12 of 12 items of {name}"
    floor = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at_upgrade_time().floor))
    assert expiry.startswith(f"{name}: 4 finished items got cw_expires_at on {floor}, none sooner than 16 days after")
    assert backups.startswith(f"{name}: point-in-time recovery is off")  # make migrate does not turn it on
    assert deleted == f"deleted index clusterArn-lastStatus-index from {name}"
    indexes = dynamodb_local.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == ["cw_listing-cw_listing_key-index"]


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
    assert "  - added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 1 of 1 items of stack-tasks" in out
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


@pytest.mark.parametrize("create, old_index", [
    (create_phase_index_table, "clusterArn-cw_phase-index"),  # the previous version's stack
    (create_older_ecs_state_table, "clusterArn-lastStatus-index"),  # the one before
], ids=["previous", "before-previous"])
def test_between_a_packaged_stacks_two_updates_the_old_index_is_left_to_cloudformation(moto_session, capsys,
                                                                                        create, old_index):
    dynamodb = moto_session.client("dynamodb")
    for spec, name in ((TASKS, "stack-tasks"), (CONTAINER_INSTANCES, "stack-container-instances")):
        create(dynamodb, name, spec)

    assert migrate.main(["--stage", "dev", "--task-table", "stack-tasks", "--container-instance-table",
                         "stack-container-instances", "--keep-legacy-index", "--yes"]) == 0

    out = capsys.readouterr().out
    assert "deleted index" not in out and "  - created index cw_listing-cw_listing_key-index on stack-tasks" in out
    indexes = dynamodb.describe_table(TableName="stack-tasks")["Table"]["GlobalSecondaryIndexes"]
    assert sorted(index["IndexName"] for index in indexes) == sorted(["cw_listing-cw_listing_key-index", old_index])


# -- an item DynamoDB refuses (issue 13 review, point 2) --------------------------------------------


ODD_TASK = task_event(2, task_id="9" * 32)["detail"]["taskArn"]


def filled_to_the_limit(item: Dict[str, Any]) -> Dict[str, Any]:
    """An attribute that brings the item to 10 bytes under DynamoDB's 400 KB (chalicelib.attributes
    counts the bytes as DynamoDB Local does): stored, but not once cw_phase is added."""
    size = sum(attributes.attribute_name_length(name) + attributes.encode(value)[1] for name, value in item.items())
    return {"overrides": "x" * (attributes.MAX_ITEM_BYTES - size - len("overrides") - 10)}


def test_an_item_dynamodb_refuses_is_listed_and_the_upgrade_goes_on(docs_example_tables):
    """The docs example stored it (its table had no index); ecs-state's writes cannot complete it: the
    fields would take it over 400 KB."""
    name = names()[TASKS]
    event = task_event(2, task_id="9" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    item = {"cw_version": "0", **event["detail"]}
    docs_example_tables.put_item(TableName=name, Item=encoded({**item, **filled_to_the_limit(item)}))
    client = WithoutTaggingBackupsOrEncryption(docs_example_tables)

    changes = upgrade(client)

    assert f"added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 12 of 13 items of {name}" in changes
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


@pytest.mark.parametrize("odd", [
    {"clusterArn": ""},  # DynamoDB refuses an empty string as an index key (the previous read index's),
    {"clusterArn": 7},  # another type,
    {"clusterArn": "c" * 2049},  # and more than 2,048 bytes; the read index's key holds 1,024,
    {"clusterArn": None},  # none at all
], ids=["empty-cluster", "numeric-cluster", "long-cluster", "no-cluster"])
def test_an_item_the_read_index_cannot_list_is_named_and_the_upgrade_goes_on(docs_example_tables, odd):
    """The docs example stored it (its table had no index). The read index is keyed by what ecs-state
    makes of the item (lifecycle.lifecycle_fields), which has no entry for it: it gets its other fields,
    stays out of the listings, and every backfill names it."""
    name = names()[TASKS]
    event = task_event(2, task_id="9" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    item = {"cw_version": "0", **event["detail"], **odd}
    docs_example_tables.put_item(TableName=name, Item=encoded({key: value for key, value in item.items()
                                                               if value is not None}))
    client = WithoutTaggingBackupsOrEncryption(docs_example_tables)

    changes = upgrade(client)

    assert f"added {FIELDS} to 13 of 13 items of {name}" in changes
    [unlisted] = [line for line in changes if "cannot be listed" in line]
    assert unlisted == (f"{name}: 1 item cannot be listed: the read index cannot key it (a clusterArn missing, "
                        "empty or not a string, or with its group too long for cw_listing_key); kept, and found by "
                        "key (GET /tasks/{id}, GET /container-instances/{id}), but in no listing: "
                        f"taskArn {ODD_TASK}")
    stored = stored_item(docs_example_tables, TASKS, ODD_TASK)
    assert stored["cw_phase"] == "finished" and "cw_expires_at" in stored and "cw_listing_key" not in stored
    assert not [line for line in changes if "refused" in line]
    # Every later backfill reads the item again, says so again, and changes nothing else.
    assert upgrade(client, migrate.MIGRATE) == [unlisted]


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
    assert added == f"added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 1 of 2 items of {name}"
    assert refused.startswith(f"{name}: DynamoDB refused 1 item (ValidationException: ")
    assert refused.endswith("); left as it was (without cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at, an item is missing from "
                            f"listings or never expires), the others done; correct or delete it, then run again: "
                            f"taskArn {ODD_TASK}")
    assert later == [f"deleted index clusterArn-lastStatus-index from {name}", f"turned on TTL on cw_expires_at of {name}"]


# -- expiries an older ecs-state dated from the retention alone (issue 13 review, point 1) ----------


OLD_RETENTION = 14 * DAY  # the stage's retention then: an older ecs-state's expiry was finished + 14 d + 1 h


def ecs_state_item(event: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
    """What an ecs-state that wrote the lifecycle fields stored for ``event`` (the read index's as this
    one does), and ``fields``."""
    return with_read_index_fields({"cw_version": event["version"], "cw_time": event["time"], "cw_source": "event",
                                   **event["detail"], **fields})


def with_read_index_fields(item: Dict[str, Any]) -> Dict[str, Any]:
    """``item`` (decoded) with the read index's attributes as the recorder gives them, encoded; an item
    with no time of its own dated as the events."""
    spec = TASKS if "taskArn" in item else CONTAINER_INSTANCES
    observed = parse_time(item["cw_time"], "cw_time") if "cw_time" in item else EVENT_TIME
    given = lifecycle.lifecycle_fields(spec, item, observed, PLAN.item_rules)
    return encoded({**item, **{name: given[name] for name in INDEX_FIELDS[1:] if name in given}})


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
        (TASKS, with_read_index_fields({"cw_version": "0", **undated["detail"], "cw_phase": "finished",
                                        "cw_expires_at": int(EVENT_TIME) + old}), int(EVENT_TIME) + old),  # undated
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


# -- from the previous read index (PHASE_INDEX) to READ_INDEX (issue 15, point 5) -----------------------


CLUSTER_ARN = task_event(1)["detail"]["clusterArn"]


def stopped_task(n: int, minutes_ago: int, stop_code: str, group: str) -> Dict[str, Any]:
    return task_event(n + 4, task_id=f"{n:032x}", group=group, lastStatus="STOPPED", desiredStatus="STOPPED",
                      stoppedAt=iso(EVENT_TIME - minutes_ago * 60), stopCode=stop_code)


# What a stage of the previous version recorded: running tasks of two services, stopped ones of those
# and of a standalone family, an active and a deregistered container instance.
PREVIOUS_VERSION_EVENTS = [
    task_event(3, task_id=f"{1:032x}", group="service:web"),
    task_event(3, task_id=f"{2:032x}", group="service:web"),
    task_event(3, task_id=f"{3:032x}", group="service:worker"),
    stopped_task(4, 10, "EssentialContainerExited", "service:worker"),
    stopped_task(5, 120, "UserInitiated", "service:web"),
    stopped_task(6, 30, "TaskFailedToStart", "family:cron"),
    container_instance_event(2),
    container_instance_event(5, instance_id="e" * 32, status="INACTIVE"),
]


def spec_of(event: Dict[str, Any]) -> TableSpec:
    return TASKS if event["detail-type"] == TASKS.detail_type else CONTAINER_INSTANCES


def tables_of_the_previous_version(client: Any) -> None:
    """The stage's tables as the previous version left them: PHASE_INDEX (keys only) and TTL, items as its
    code wrote them (cw_phase, cw_expires_at, no cw_listing, cw_listing_key or cw_stop_code)."""
    for spec, name in names().items():
        client.delete_table(TableName=name)
        client.get_waiter("table_not_exists").wait(TableName=name)
        create_phase_index_table(client, name, spec)
    for event in PREVIOUS_VERSION_EVENTS:
        write_as_the_previous_version(client, event)


def write_as_the_previous_version(client: Any, event: Dict[str, Any]) -> None:
    """The previous version's recorder: a whole item, over whatever the item had."""
    client.put_item(TableName=table_name(spec_of(event)), Item=phase_index_item(event, PLAN.item_rules))


def listings() -> Dict[str, Any]:
    """The answers of the read API (the process's: it remembers a table's PHASE_INDEX gone), as keys:
    in the order given where the read index sorts them (the stopped tasks newest first), else as a set."""
    api = runtime.current().read_api()

    def keys(spec: TableSpec, **params: str) -> List[str]:
        answer = api.list_items(spec, {"cluster": CLUSTER_ARN, **params})
        assert isinstance(answer, dict), answer.to_dict()  # a Response: an error
        assert answer["next"] is None
        return [item[spec.key] for item in answer["items"]]

    return {
        "tasks": set(keys(TASKS)),
        "running": set(keys(TASKS, status="RUNNING")),
        "web": set(keys(TASKS, service="web")),
        "worker, stopped": keys(TASKS, service="worker", status="STOPPED"),
        "failed to start": keys(TASKS, stopCode="TaskFailedToStart"),
        "stopped since 60 min before the events": set(keys(TASKS, since=iso(EVENT_TIME - 3600))),
        "instances": set(keys(CONTAINER_INSTANCES)),
    }


def truth(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What listings() must answer for the latest of ``events`` per key."""
    latest = {event["detail"][spec_of(event).key]: event["detail"] for event in events}
    tasks = {key: detail for key, detail in latest.items() if "taskArn" in detail}

    def task_keys(keep: Any) -> Any:
        return {key for key, detail in tasks.items() if keep(detail)}

    return {
        "tasks": set(tasks),
        "running": task_keys(lambda task: task["lastStatus"] == "RUNNING"),
        "web": task_keys(lambda task: task.get("group") == "service:web"),
        "worker, stopped": [key for key, task in sorted(tasks.items(), key=lambda pair: pair[1].get("stoppedAt", ""),
                                                        reverse=True)
                            if task.get("group") == "service:worker" and task["lastStatus"] == "STOPPED"],
        "failed to start": sorted(task_keys(lambda task: task.get("stopCode") == "TaskFailedToStart")),
        "stopped since 60 min before the events": task_keys(
            lambda task: "stoppedAt" in task and parse_time(task["stoppedAt"], "stoppedAt") >= EVENT_TIME - 3600),
        "instances": set(latest) - set(tasks),
    }


def index_names(client: Any, name: str) -> List[str]:
    return sorted(index["IndexName"] for index in client.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"])


def scanned_attributes(client: Any) -> List[set]:
    """The attribute names of each item every Scan of ``client`` returns, from now on."""
    returned: List[set] = []
    client.meta.events.register("after-call.dynamodb.Scan",
                                lambda parsed, **kwargs: returned.extend(set(item) for item in parsed.get("Items", [])))
    return returned


def test_a_table_of_the_previous_version_moves_to_the_read_index_and_lists_the_same(dynamodb_local):
    tables_of_the_previous_version(dynamodb_local)
    expected = truth(PREVIOUS_VERSION_EVENTS)
    assert listings() == expected  # through PHASE_INDEX: its answers are the ground truth's
    client = WithoutTaggingBackupsOrEncryption(dynamodb_local)

    changes = migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                    lambda changes: True, short_pause, UPGRADE_TIME)

    task_table, instance_table = names().values()
    assert changes == [
        f"created index cw_listing-cw_listing_key-index on {task_table}",
        f"added {FIELDS} to 6 of 6 items of {task_table}",
        f"deleted index clusterArn-cw_phase-index from {task_table}",
        f"created index cw_listing-cw_listing_key-index on {instance_table}",
        f"added {FIELDS} to 2 of 2 items of {instance_table}",
        f"deleted index clusterArn-cw_phase-index from {instance_table}",
    ]
    for name in names().values():
        assert index_names(dynamodb_local, name) == ["cw_listing-cw_listing_key-index"]
    # Each item is now what this version's recorder writes for its event, to the attribute.
    for event in PREVIOUS_VERSION_EVENTS:
        spec = spec_of(event)
        stored = dynamodb_local.get_item(TableName=table_name(spec), Key={spec.key: {"S": event["detail"][spec.key]}},
                                         ConsistentRead=True)["Item"]
        assert stored == parse(event, PLAN.item_rules).item
    # The same answers, now from the read index (which the process switched to when PHASE_INDEX went).
    assert listings() == expected
    assert expected["worker, stopped"] and expected["failed to start"] and expected["stopped since 60 min before the events"]

    # Again: a scan of each table that reads only what dates and keys the items that may need something
    # (the finished ones), and writes nothing.
    scanned = scanned_attributes(dynamodb_local)
    assert migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                 lambda changes: pytest.fail("asked"), short_pause, UPGRADE_TIME + DAY) == []
    assert len(scanned) == 4  # the three stopped tasks, the deregistered instance
    read = {"taskArn", "containerInstanceArn", "version", "cw_time", "cw_source", "cw_expires_at", "lastStatus",
            "status", "stoppedAt", "clusterArn", "group", "stopCode", *INDEX_FIELDS}
    assert all(attributes_read <= read for attributes_read in scanned), scanned


def add_index_as_cloudformation_does(client: Any, name: str, index: Dict[str, Any]) -> None:
    """A stack update adding one index: UpdateTable, then CloudFormation waits for it to be active."""
    client.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Create": index}],
                        AttributeDefinitions=[{"AttributeName": key["AttributeName"], "AttributeType": "S"}
                                              for key in index["KeySchema"]])
    settled(client, name)


def delete_index_as_cloudformation_does(client: Any, name: str, index: str) -> None:
    client.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": index}}])
    settled(client, name)


def settled(client: Any, name: str) -> None:
    while any(index.get("IndexStatus") != "ACTIVE"
              for index in client.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])):
        short_pause(0)


def test_listings_answer_throughout_a_packaged_stacks_move_and_the_old_codes_items_are_backfilled(dynamodb_local):
    """Update 1 (KeepLegacyIndex=yes) adds the read index; the old code writes until it is replaced, the
    new code writes; make migrate KEEP_LEGACY_INDEX=yes backfills; update 2 drops PHASE_INDEX. At each
    step the read API answers what was recorded."""
    tables_of_the_previous_version(dynamodb_local)
    events = list(PREVIOUS_VERSION_EVENTS)
    assert listings() == truth(events)

    for name in names().values():  # update 1
        add_index_as_cloudformation_does(dynamodb_local, name, TASKS.read_index.definition())
    # Both indexes: the readers keep to PHASE_INDEX, complete, while the read index has only new writes.
    old_code = [stopped_task(1, 5, "EssentialContainerExited", "service:web"),  # a backfilled-to-be task stops
                task_event(2, task_id=f"{7:032x}", group="service:worker")]  # a new one starts
    new_code = [task_event(2, task_id=f"{8:032x}", group="service:web"), container_instance_event(6, status="INACTIVE")]
    for event in old_code:
        write_as_the_previous_version(dynamodb_local, event)
    for event in new_code:
        assert record(event)["outcome"] in ("created", "updated")
    events += old_code + new_code
    assert listings() == truth(events)

    client = WithoutTaggingBackupsOrEncryption(dynamodb_local)
    keep = migrate.MIGRATE._replace(keep_legacy_index=True)
    changes = migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, keep, lambda changes: True,
                                    short_pause, UPGRADE_TIME)

    task_table, instance_table = names().values()
    assert changes == [f"added {FIELDS} to 7 of 8 items of {task_table}",  # all but the new code's
                       f"added {FIELDS} to 1 of 2 items of {instance_table}"]
    for name in names().values():
        assert index_names(dynamodb_local, name) == ["clusterArn-cw_phase-index", "cw_listing-cw_listing_key-index"]
    assert listings() == truth(events)
    # The old code's last invocation, just before it stopped: another task stops. (docs/deploy.md: run make
    # migrate once update 1 is done and the old functions' timeout passed; again before update 2 is as cheap.)
    late = stopped_task(7, 1, "EssentialContainerExited", "service:worker")
    write_as_the_previous_version(dynamodb_local, late)
    events.append(late)
    assert listings() == truth(events)
    assert migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, keep, lambda changes: True,
                                 short_pause, UPGRADE_TIME) == [f"added {FIELDS} to 1 of 8 items of {task_table}"]

    for name in names().values():  # update 2
        delete_index_as_cloudformation_does(dynamodb_local, name, "clusterArn-cw_phase-index")
    assert listings() == truth(events)  # from the read index now
    assert listings()["worker, stopped"] == [late["detail"]["taskArn"], PREVIOUS_VERSION_EVENTS[3]["detail"]["taskArn"]]
    assert migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                 lambda changes: pytest.fail("asked"), short_pause, UPGRADE_TIME) == []


def test_the_backfill_corrects_index_attributes_a_writer_left_behind_the_items_state(dynamodb_local):
    """A writer that changed an item without its index attributes (an UpdateItem of the state alone):
    the task stopped but its entry says running, a running task with a stop code. The backfill sets
    them to what the state says, conditioned on the values read; a later run changes nothing."""
    name = table_name(TASKS)
    running = task_event(3, task_id="a" * 32, group="service:web")
    record(running)
    dynamodb_local.update_item(
        TableName=name, Key={"taskArn": {"S": running["detail"]["taskArn"]}},
        UpdateExpression="SET lastStatus = :s, stoppedAt = :t, stopCode = :c, version = :v",
        ExpressionAttributeValues={":s": {"S": "STOPPED"}, ":t": {"S": iso(EVENT_TIME)},
                                   ":c": {"S": "TaskFailedToStart"}, ":v": {"N": "4"}})
    coded = task_event(2, task_id="b" * 32, group="service:web")
    record(coded)
    dynamodb_local.update_item(TableName=name, Key={"taskArn": {"S": coded["detail"]["taskArn"]}},
                               UpdateExpression="SET cw_stop_code = :c", ExpressionAttributeValues={":c": {"S": "X"}})
    stopped = task_event(4, task_id="a" * 32, group="service:web", lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME),
                         stopCode="TaskFailedToStart")
    client = WithoutTaggingBackupsOrEncryption(dynamodb_local)

    changes = migrate.ensure_tables(client, {TASKS: name}, PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                    lambda changes: True, short_pause, UPGRADE_TIME)

    assert f"added {FIELDS} to 1 of 2 items of {name}" in changes  # the stopped one's cw_stop_code, expiry
    assert (f"corrected cw_phase, cw_listing, cw_listing_key, cw_stop_code of 2 items of {name} to what their "
            "state says (a writer changed them without these)") in changes
    fixed = stored_item(dynamodb_local, TASKS, stopped["detail"]["taskArn"])
    given = lifecycle.lifecycle_fields(TASKS, stopped["detail"], UPGRADE_TIME, PLAN.item_rules)
    assert {field: fixed[field] for field in INDEX_FIELDS} == {field: given[field] for field in INDEX_FIELDS}
    assert "cw_stop_code" not in stored_item(dynamodb_local, TASKS, coded["detail"]["taskArn"])
    assert listings()["failed to start"] == [stopped["detail"]["taskArn"]]
    assert migrate.ensure_tables(client, {TASKS: name}, PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                 lambda changes: pytest.fail("asked"), short_pause, UPGRADE_TIME + DAY) == []


def test_an_item_with_no_time_of_its_own_is_keyed_once(docs_example_tables):
    """The docs example's deregistered instance has neither cw_time nor a finish time: the backfill keys
    its entry from when it runs (as it dates its expiry), and a later run, later, leaves that key."""
    client = WithoutTaggingBackupsOrEncryption(docs_example_tables)
    upgrade(client)
    [instance] = [item for item in docs_example_items() if "containerInstanceArn" in item]
    key = stored_item(docs_example_tables, CONTAINER_INSTANCES, instance["containerInstanceArn"])["cw_listing_key"]
    assert key.endswith(f"\x1ffinished\x1f{sort_time(UPGRADE_TIME)}")

    assert migrate.ensure_tables(client, names(), PLAN.item_rules, PLAN.deployment, migrate.MIGRATE,
                                 lambda changes: pytest.fail("asked"), short_pause, UPGRADE_TIME + 3 * DAY) == []
    assert stored_item(docs_example_tables, CONTAINER_INSTANCES, instance["containerInstanceArn"])["cw_listing_key"] == key
