"""The one definition of ecs-state's two tables.

The handlers, the reconciler, the local run, the tests and the deployment all
read it from here, so the schema cannot drift between them. The names and keys
are those of the ECS Developer Guide's "Handling events" example, so its tables
and readers keep working.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, NamedTuple, Optional, Tuple

# ecs-state's own attributes, beside the event's detail fields (the cw_ prefix
# cannot collide with ECS's camelCase fields; cw_version is the docs example's).
PHASE = "cw_phase"  # OPEN or FINISHED: the read index's sort key (only while the index is on)
OPEN, FINISHED = "open", "finished"
EXPIRES_AT = "cw_expires_at"  # epoch seconds: DynamoDB's TTL deletes the item after it
# The tables' TTL setting (UpdateTimeToLive, CloudFormation): DynamoDB deletes an item some
# time after its cw_expires_at (chalicelib/model/lifecycle.py).
TIME_TO_LIVE = {"Enabled": True, "AttributeName": EXPIRES_AT}
MISSING_SINCE = "cw_missing_since"  # ISO time the reconciler found ECS no longer knows the item
VERSION = "version"  # detail.version: the order of a key's states


# NamedTuples, not dataclasses: a frozen dataclass costs milliseconds to build at
# import (it compiles its methods), and import time is every cold start's.
class IndexSpec(NamedTuple):
    """The read index: a cluster's items, unfinished ones apart, never found by a scan.

    Keyed (clusterArn, cw_phase) and projecting keys only, so an item's entry is
    written when the item is created and moved once, when it finishes: not on
    every state change. A listing reads the items' details back by key.
    (Keyed by status with every attribute projected, as before, each state change
    rewrote the whole item in the index twice: see docs/benchmark.md.)
    """

    name: str
    hash_key: str  # partition key
    range_key: str  # sort key

    @property
    def key_attributes(self) -> Tuple[str, str]:
        return (self.hash_key, self.range_key)

    def definition(self) -> Dict[str, Any]:
        """The GlobalSecondaryIndexes entry of CreateTable / UpdateTable / CloudFormation."""
        return {
            "IndexName": self.name,
            "KeySchema": [
                {"AttributeName": self.hash_key, "KeyType": "HASH"},
                {"AttributeName": self.range_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }


CLUSTER_INDEX = IndexSpec(name="clusterArn-cw_phase-index", hash_key="clusterArn", range_key=PHASE)


class TableSpec(NamedTuple):
    kind: str  # short name used in results, logs and metrics
    detail_type: str  # the EventBridge detail-type whose events land here
    key: str  # partition key: the ARN field of the event's detail
    name_env: str  # environment variable holding the table name
    default_name: str  # the docs example's table name
    arn_resource: str  # the resource type in the key's ARN: arn:aws:ecs:...:<arn_resource>/<cluster>/<id>
    status_field: str  # the detail field holding the state: lastStatus / status
    finished_statuses: FrozenSet[str]  # states after which ECS never changes the item again
    finished_at_field: Optional[str]  # the detail field holding when it finished, if ECS sends one
    legacy_index: str  # the index ecs-state had before the read index (keyed by status); migrations drop it

    @property
    def cluster_index(self) -> IndexSpec:
        return CLUSTER_INDEX

    def phase(self, status: Any) -> str:
        return FINISHED if status in self.finished_statuses else OPEN

    def create_table_request(self, table_name: str, read_index: bool = True) -> Dict[str, Any]:
        """CreateTable arguments: on-demand billing, and the read index unless the stage turns it off.

        TTL on cw_expires_at is a separate call (UpdateTimeToLive) wherever tables are made.
        """
        request: Dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": [{"AttributeName": self.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": self.key, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if read_index:
            request["AttributeDefinitions"] += [
                {"AttributeName": name, "AttributeType": "S"} for name in self.cluster_index.key_attributes
            ]
            request["GlobalSecondaryIndexes"] = [self.cluster_index.definition()]
        return request


TASKS = TableSpec(
    kind="task",
    detail_type="ECS Task State Change",
    key="taskArn",
    name_env="TASK_TABLE_NAME",
    default_name="ECSTaskState",
    arn_resource="task",
    status_field="lastStatus",
    finished_statuses=frozenset({"STOPPED"}),
    finished_at_field="stoppedAt",
    legacy_index="clusterArn-lastStatus-index",
)
CONTAINER_INSTANCES = TableSpec(
    kind="container_instance",
    detail_type="ECS Container Instance State Change",
    key="containerInstanceArn",
    name_env="CONTAINER_INSTANCE_TABLE_NAME",
    default_name="ECSCtrInstanceState",
    arn_resource="container-instance",
    status_field="status",
    # Deregistered. (A REGISTRATION_FAILED instance is deregistered next, and ends INACTIVE.)
    finished_statuses=frozenset({"INACTIVE"}),
    finished_at_field=None,
    legacy_index="clusterArn-status-index",
)

ALL: Tuple[TableSpec, ...] = (TASKS, CONTAINER_INSTANCES)
BY_DETAIL_TYPE: Dict[str, TableSpec] = {spec.detail_type: spec for spec in ALL}
