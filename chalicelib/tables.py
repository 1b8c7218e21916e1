"""The one definition of ecs-state's two tables.

The handlers, the local run, the tests and the deployment all read it from
here, so the schema cannot drift between them. The names and keys are those of
the ECS Developer Guide's "Handling events" example, so its tables and readers
keep working.
"""
from typing import Any, Dict, NamedTuple, Tuple


# NamedTuples, not dataclasses: a frozen dataclass costs milliseconds to build at
# import (it compiles its methods), and import time is every cold start's.
class IndexSpec(NamedTuple):
    """A global secondary index: the read API lists a cluster's items through it, never by scan.

    Its key attributes must be non-empty strings on every write that has them
    (events.py checks this); an item without them is simply not in the index.
    """

    name: str
    hash_key: str  # partition key
    range_key: str  # sort key

    @property
    def key_attributes(self) -> Tuple[str, str]:
        return (self.hash_key, self.range_key)


class TableSpec(NamedTuple):
    kind: str  # short name used in results, logs and metrics
    detail_type: str  # the EventBridge detail-type whose events land here
    key: str  # partition key: the ARN field of the event's detail
    name_env: str  # environment variable holding the table name
    default_name: str  # the docs example's table name
    arn_resource: str  # the resource type in the key's ARN: arn:aws:ecs:...:<arn_resource>/<cluster>/<id>
    cluster_index: IndexSpec  # the cluster's items by status

    @property
    def indexes(self) -> Tuple[IndexSpec, ...]:
        return (self.cluster_index,)

    def create_table_request(self, table_name: str) -> Dict[str, Any]:
        """CreateTable arguments for this table: on-demand billing, every index projecting ALL."""
        key_attributes = dict.fromkeys([self.key, *(name for index in self.indexes for name in index.key_attributes)])
        return {
            "TableName": table_name,
            "KeySchema": [{"AttributeName": self.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name in key_attributes],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.hash_key, "KeyType": "HASH"},
                        {"AttributeName": index.range_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in self.indexes
            ],
            "BillingMode": "PAY_PER_REQUEST",
        }


TASKS = TableSpec(
    kind="task",
    detail_type="ECS Task State Change",
    key="taskArn",
    name_env="TASK_TABLE_NAME",
    default_name="ECSTaskState",
    arn_resource="task",
    cluster_index=IndexSpec(name="clusterArn-lastStatus-index", hash_key="clusterArn", range_key="lastStatus"),
)
CONTAINER_INSTANCES = TableSpec(
    kind="container_instance",
    detail_type="ECS Container Instance State Change",
    key="containerInstanceArn",
    name_env="CONTAINER_INSTANCE_TABLE_NAME",
    default_name="ECSCtrInstanceState",
    arn_resource="container-instance",
    cluster_index=IndexSpec(name="clusterArn-status-index", hash_key="clusterArn", range_key="status"),
)

ALL: Tuple[TableSpec, ...] = (TASKS, CONTAINER_INSTANCES)
BY_DETAIL_TYPE: Dict[str, TableSpec] = {spec.detail_type: spec for spec in ALL}
