"""The cluster indexes: defined once in chalicelib.tables, their keys checked before any write."""
import pytest
from botocore.exceptions import ClientError

from chalicelib import recorder, settings
from chalicelib.attributes import encode
from chalicelib.errors import InvalidEvent
from chalicelib.events import parse_event
from chalicelib.tables import ALL, CONTAINER_INSTANCES, TASKS
from tests.helpers import container_instance_event, count_requests, stored_item, task_event


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.kind)
def test_tables_are_created_with_their_cluster_index(dynamodb_local, table):
    description = dynamodb_local.describe_table(TableName=settings.table_name(table))["Table"]
    (index,) = description["GlobalSecondaryIndexes"]
    assert index["IndexName"] == table.cluster_index.name
    assert [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]] == [
        (table.cluster_index.hash_key, "HASH"), (table.cluster_index.range_key, "RANGE"),
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}


@pytest.mark.parametrize(
    "make_event, field, value",
    [
        (task_event, "clusterArn", 5),
        (task_event, "clusterArn", None),
        (task_event, "clusterArn", ""),
        (task_event, "lastStatus", ""),
        (task_event, "lastStatus", ["RUNNING"]),
        (task_event, "lastStatus", "R" * 1025),
        (task_event, "clusterArn", "c" * 2049),
        (container_instance_event, "status", ""),
        (container_instance_event, "status", True),
        (container_instance_event, "clusterArn", {"arn": "x"}),
    ],
)
def test_dynamodb_refuses_a_bad_index_key_so_the_event_is_refused_first(dynamodb_local, make_event, field, value):
    event = make_event(1, **{field: value})
    requests = count_requests(dynamodb_local)
    with pytest.raises(InvalidEvent) as refused:
        recorder.record(event)
    assert refused.value.field == f"detail.{field}"
    assert requests == {}
    # Without the check, DynamoDB would refuse the write itself.
    valid = parse_event(make_event(1))
    with pytest.raises(ClientError, match="ValidationException"):
        dynamodb_local.put_item(
            TableName=settings.table_name(valid.table), Item={**valid.item, field: encode(value)[0]}
        )


@pytest.mark.parametrize("make_event, table, field", [
    (task_event, TASKS, "lastStatus"), (task_event, TASKS, "clusterArn"),
    (container_instance_event, CONTAINER_INSTANCES, "status"),
])
def test_an_event_without_an_index_key_is_stored_but_not_indexed(dynamodb_local, make_event, table, field):
    event = make_event(1)
    del event["detail"][field]
    assert recorder.record(event)["outcome"] == "created"
    assert field not in stored_item(dynamodb_local, table, event["detail"][table.key])
    index = table.cluster_index
    listed = dynamodb_local.query(
        TableName=settings.table_name(table), IndexName=index.name,
        KeyConditionExpression="#c = :c", ExpressionAttributeNames={"#c": index.hash_key},
        ExpressionAttributeValues={":c": {"S": make_event(1)["detail"]["clusterArn"]}},
    )["Items"]
    assert listed == []
