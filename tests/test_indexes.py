"""The read index: defined once in chalicelib.tables, its keys checked before any write,
and written only when an item is created and when it finishes, measured on DynamoDB Local."""
import time

import pytest
from botocore.exceptions import ClientError

from chalicelib import runtime
from chalicelib.config import READ_INDEX_ENV
from chalicelib.errors import InvalidEvent
from chalicelib.model.attributes import encode
from chalicelib.model.listing import SEPARATOR, open_range
from chalicelib.tables import ALL, CONTAINER_INSTANCES, PHASE_INDEX, TASKS
from tests.helpers import (
    container_instance_event,
    count_requests,
    iso,
    parse,
    record,
    stored_item,
    table_name,
    task_event,
)
from tools.local_dynamodb import create_tables


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_tables_are_created_with_the_read_index_projecting_what_listings_filter_on(dynamodb_local, table):
    description = dynamodb_local.describe_table(TableName=table_name(table))["Table"]
    (index,) = description["GlobalSecondaryIndexes"]
    assert index["IndexName"] == table.read_index.name == "cw_listing-cw_listing_key-index"
    assert [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]] == [
        ("cw_listing", "HASH"), ("cw_listing_key", "RANGE"),
    ]
    assert index["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["group", "cw_stop_code"]}


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_a_stage_without_the_read_index_gets_bare_tables_and_items_without_a_phase(dynamodb_local, table, configure):
    stage = configure(read_index=False, **{f"{table.kind}_table": table_name(table) + "-bare"}).config
    create_tables(dynamodb_local, {table: table_name(table)}, stage.read_index)
    description = dynamodb_local.describe_table(TableName=table_name(table))["Table"]
    assert "GlobalSecondaryIndexes" not in description
    event = task_event(1) if table is TASKS else container_instance_event(1)
    assert record(event)["outcome"] == "created"
    stored = stored_item(dynamodb_local, table, event["detail"][table.key])
    assert not {"cw_phase", "cw_listing", "cw_listing_key"} & set(stored)


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
    return indexes.get(change.table.read_index.name, {}).get("CapacityUnits", 0)


def test_a_task_writes_its_index_entry_once_when_created_and_moves_it_once_when_it_stops(dynamodb_local):
    # As ECS sends them: the group from the start, the stop code once it is stopping, stoppedAt at the end.
    lifecycle = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"]
    stopping = {"desiredStatus": "STOPPED", "stopCode": "EssentialContainerExited", "stoppedReason": "exited"}
    units = [_index_units(dynamodb_local, task_event(version, lastStatus=status, group="service:web",
                                                     **(stopping if version >= 5 else {})))
             for version, status in enumerate(lifecycle, start=1)]
    units.append(_index_units(dynamodb_local, task_event(8, lastStatus="STOPPED", group="service:web",
                                                         stoppedAt=iso(time.time()), **stopping)))
    assert units == [1, 0, 0, 0, 0, 0, 0, 2]  # a put; nothing; a delete and a put


def test_a_tasks_index_entry_holds_its_group_then_its_stop_time_and_code(dynamodb_local):
    cluster = task_event(1)["detail"]["clusterArn"]
    stopped_at = int(time.time()) - 60
    running = parse(task_event(3, group="service:web", stopCode="UserInitiated"))
    assert running.item["cw_listing_key"] == {"S": f"{cluster}{SEPARATOR}open{SEPARATOR}service:web"}
    assert "cw_stop_code" not in running.item  # only once finished: it would cost the index a write
    stopped = parse(task_event(8, lastStatus="STOPPED", group="service:web", stopCode="UserInitiated",
                               stoppedAt=iso(stopped_at + 0.5)))
    assert stopped.item["cw_listing_key"] == {"S": f"{cluster}{SEPARATOR}finished{SEPARATOR}{iso(stopped_at)[:-1]}.500Z"}
    assert stopped.item["cw_stop_code"] == {"S": "UserInitiated"}


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
    # Without the check, DynamoDB would refuse the write itself to a table that still has the
    # previous read index, keyed by clusterArn (a stage in the middle of its upgrade).
    valid = parse(make_event(1))
    moving = f"{table_name(valid.table)}-moving"
    request = valid.table.create_table_request(moving, read_index=False)
    request["AttributeDefinitions"] += [{"AttributeName": name, "AttributeType": "S"}
                                        for name in PHASE_INDEX.key_attributes]
    dynamodb_local.create_table(**request, GlobalSecondaryIndexes=[PHASE_INDEX.definition()])
    with pytest.raises(ClientError, match="ValidationException"):
        dynamodb_local.put_item(TableName=moving, Item={**valid.item, field: encode(value)[0]})


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


def _listed(client, cluster):
    index = TASKS.read_index
    low, high = open_range(cluster)
    return client.query(
        TableName=table_name(TASKS), IndexName=index.name,
        KeyConditionExpression="#p = :p AND #k BETWEEN :low AND :high",
        ExpressionAttributeNames={"#p": index.hash_key, "#k": index.range_key},
        ExpressionAttributeValues={":p": {"S": "all"}, ":low": {"S": low}, ":high": {"S": high}},
    )["Items"]


def test_an_event_without_a_cluster_is_stored_but_not_indexed(dynamodb_local):
    event = task_event(1)
    del event["detail"]["clusterArn"]
    assert record(event)["outcome"] == "created"
    assert _listed(dynamodb_local, task_event(1)["detail"]["clusterArn"]) == []
    assert stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"])["version"] == 1


@pytest.mark.parametrize("cluster, group", [
    ("c" * 1100, "service:web"),  # a key DynamoDB takes, but longer than an index sort key may be
    (f"arn:aws:ecs:us-east-1:123456789012:cluster/a{SEPARATOR}b", "service:web"),
    ("arn:aws:ecs:us-east-1:123456789012:cluster/a", "g" * 1000),
    ("arn:aws:ecs:us-east-1:123456789012:cluster/a", "\ud800"),
])
def test_an_item_the_index_cannot_key_is_stored_and_got_but_not_listed(dynamodb_local, cluster, group):
    event = task_event(1, clusterArn=cluster, group=group)
    if group == "\ud800":  # a lone surrogate: not storable anywhere, the event is refused by name
        with pytest.raises(InvalidEvent, match="detail.group"):
            record(event)
        return
    assert record(event)["outcome"] == "created"
    stored = stored_item(dynamodb_local, TASKS, event["detail"]["taskArn"])
    assert stored["clusterArn"] == cluster and "cw_listing_key" not in stored


def test_the_container_instance_table_shares_the_index_definition():
    assert CONTAINER_INSTANCES.read_index == TASKS.read_index
    assert CONTAINER_INSTANCES.create_table_request("x")["GlobalSecondaryIndexes"] == \
        TASKS.create_table_request("y")["GlobalSecondaryIndexes"]
