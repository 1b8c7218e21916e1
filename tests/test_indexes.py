"""The read index: defined once in chalicelib.tables, its keys checked before any write,
and written only when an item is created and when it finishes, measured on DynamoDB Local."""
import pytest
from botocore.exceptions import ClientError

from chalicelib import runtime
from chalicelib.config import READ_INDEX_ENV
from chalicelib.errors import InvalidEvent
from chalicelib.model.attributes import encode
from chalicelib.tables import ALL, CONTAINER_INSTANCES, TASKS
from tests.helpers import container_instance_event, count_requests, parse, record, stored_item, table_name, task_event
from tools.local_dynamodb import create_tables


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_tables_are_created_with_the_read_index_projecting_keys_only(dynamodb_local, table):
    description = dynamodb_local.describe_table(TableName=table_name(table))["Table"]
    (index,) = description["GlobalSecondaryIndexes"]
    assert index["IndexName"] == table.cluster_index.name == "clusterArn-cw_phase-index"
    assert [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]] == [
        ("clusterArn", "HASH"), ("cw_phase", "RANGE"),
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_a_stage_without_the_read_index_gets_bare_tables_and_items_without_a_phase(dynamodb_local, table, configure):
    stage = configure(read_index=False, **{f"{table.kind}_table": table_name(table) + "-bare"}).config
    create_tables(dynamodb_local, {table: table_name(table)}, stage.read_index)
    description = dynamodb_local.describe_table(TableName=table_name(table))["Table"]
    assert "GlobalSecondaryIndexes" not in description
    event = task_event(1) if table is TASKS else container_instance_event(1)
    assert record(event)["outcome"] == "created"
    assert "cw_phase" not in stored_item(dynamodb_local, table, event["detail"][table.key])


def test_a_bad_read_index_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(READ_INDEX_ENV, "off")
    runtime.reset()  # the process's first event reads the stage's settings
    with pytest.raises(ValueError, match=READ_INDEX_ENV):
        record(task_event(1))


def _index_units(client, event):
    """The read index's write units for recording ``event``, as DynamoDB reports them."""
    change = parse(event)
    response = client.put_item(
        TableName=table_name(change.table), Item=change.item, ReturnConsumedCapacity="INDEXES"
    )
    indexes = response["ConsumedCapacity"].get("GlobalSecondaryIndexes", {})
    return indexes.get(change.table.cluster_index.name, {}).get("CapacityUnits", 0)


def test_a_task_writes_its_index_entry_once_when_created_and_moves_it_once_when_it_stops(dynamodb_local):
    lifecycle = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"]
    units = [_index_units(dynamodb_local, task_event(version, lastStatus=status))
             for version, status in enumerate(lifecycle, start=1)]
    units.append(_index_units(dynamodb_local, task_event(8, lastStatus="STOPPED")))
    assert units == [1, 0, 0, 0, 0, 0, 0, 2]  # a put; nothing; a delete and a put


def test_a_container_instances_frequent_updates_write_no_index_entry(dynamodb_local):
    units = [_index_units(dynamodb_local, container_instance_event(version, runningTasksCount=version))
             for version in range(1, 6)]
    assert units == [1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "make_event, field, value",
    [
        (task_event, "clusterArn", 5),
        (task_event, "clusterArn", None),
        (task_event, "clusterArn", ""),
        (task_event, "clusterArn", "c" * 2049),
        (container_instance_event, "clusterArn", {"arn": "x"}),
    ],
)
def test_dynamodb_refuses_a_bad_index_key_so_the_event_is_refused_first(dynamodb_local, make_event, field, value):
    event = make_event(1, **{field: value})
    requests = count_requests(dynamodb_local)
    with pytest.raises(InvalidEvent) as refused:
        record(event)
    assert refused.value.field == f"detail.{field}"
    assert requests == {}
    # Without the check, DynamoDB would refuse the write itself.
    valid = parse(make_event(1))
    with pytest.raises(ClientError, match="ValidationException"):
        dynamodb_local.put_item(
            TableName=table_name(valid.table), Item={**valid.item, field: encode(value)[0]}
        )


@pytest.mark.parametrize(
    "make_event, field, value",
    [
        (task_event, "lastStatus", ""),
        (task_event, "lastStatus", ["RUNNING"]),
        (task_event, "lastStatus", "R" * 1025),
        (container_instance_event, "status", ""),
        (container_instance_event, "status", True),
    ],
)
def test_a_status_that_would_break_the_previous_index_is_refused(dynamodb_local, make_event, field, value):
    # A table being upgraded still has the index keyed by status (tables.TableSpec.legacy_index).
    requests = count_requests(dynamodb_local)
    with pytest.raises(InvalidEvent) as refused:
        record(make_event(1, **{field: value}))
    assert refused.value.field == f"detail.{field}"
    assert requests == {}


def test_an_event_without_a_cluster_is_stored_but_not_indexed(dynamodb_local):
    event = task_event(1)
    del event["detail"]["clusterArn"]
    assert record(event)["outcome"] == "created"
    index = TASKS.cluster_index
    listed = dynamodb_local.query(
        TableName=table_name(TASKS), IndexName=index.name,
        KeyConditionExpression="#c = :c", ExpressionAttributeNames={"#c": index.hash_key},
        ExpressionAttributeValues={":c": {"S": task_event(1)["detail"]["clusterArn"]}},
    )["Items"]
    assert listed == []
    assert stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"])["version"] == 1


def test_the_container_instance_table_shares_the_index_definition():
    assert CONTAINER_INSTANCES.cluster_index == TASKS.cluster_index
    assert CONTAINER_INSTANCES.create_table_request("x")["GlobalSecondaryIndexes"] == \
        TASKS.create_table_request("y")["GlobalSecondaryIndexes"]
