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
PHASE = "cw_phase"  # OPEN or FINISHED (the previous read index's sort key; written while the read index is on)
OPEN, FINISHED = "open", "finished"
EXPIRES_AT = "cw_expires_at"  # epoch seconds: DynamoDB's TTL deletes the item after it
# The tables' TTL setting (UpdateTimeToLive, CloudFormation): DynamoDB deletes an item some
# time after its cw_expires_at (chalicelib/model/lifecycle.py).
TIME_TO_LIVE = {"Enabled": True, "AttributeName": EXPIRES_AT}
MISSING_SINCE = "cw_missing_since"  # ISO time the reconciler found ECS no longer knows the item
VERSION = "version"  # detail.version: the order of a key's states
CLUSTER = "clusterArn"  # the detail field naming the cluster of a task or container instance
# The read index's keys (chalicelib/model/listing.py builds them), written while the read index is on:
LISTING = "cw_listing"  # its partition key: LISTED on every listed item, so one query can skip from cluster to cluster
LISTED = "all"
LISTING_KEY = "cw_listing_key"  # its sort key: <clusterArn>␟open␟<group>, or <clusterArn>␟finished␟<finished time>
STOP_CODE = "cw_stop_code"  # a finished task's stopCode, projected into the index (absent while it runs)
GROUP = "group"  # a task's group (service:NAME, family:NAME): projected, it never changes


# NamedTuples, not dataclasses: a frozen dataclass costs milliseconds to build at
# import (it compiles its methods), and import time is every cold start's.
class IndexSpec(NamedTuple):
    name: str
    hash_key: str  # partition key
    range_key: str  # sort key
    projected: Tuple[str, ...] = ()  # the attributes besides the keys; none: KEYS_ONLY

    @property
    def key_attributes(self) -> Tuple[str, str]:
        return (self.hash_key, self.range_key)

    def definition(self) -> Dict[str, Any]:
        """The GlobalSecondaryIndexes entry of CreateTable / UpdateTable / CloudFormation."""
        projection: Dict[str, Any] = {"ProjectionType": "KEYS_ONLY"}
        if self.projected:
            projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.projected)}
        return {
            "IndexName": self.name,
            "KeySchema": [
                {"AttributeName": self.hash_key, "KeyType": "HASH"},
                {"AttributeName": self.range_key, "KeyType": "RANGE"},
            ],
            "Projection": projection,
        }


# The read index. Its sort key puts a cluster's unfinished items by group, then its finished
# ones by when they finished, so every listing, filter and time window is one key range:
# the running tasks of a service, or the last hour's stopped tasks, newest first. An entry
# is written when its item is created and moved once, when it finishes; the attributes it
# projects never change but on that move, so no other state change writes to the index
# (3 write units per task lifecycle: see docs/benchmark.md). One partition key for all
# items lets GET /clusters skip from one cluster to the next: a request per cluster.
READ_INDEX = IndexSpec(name="cw_listing-cw_listing_key-index", hash_key=LISTING, range_key=LISTING_KEY,
                       projected=(GROUP, STOP_CODE))
# The read index before it (keys only, by cluster and phase). A stage moving to READ_INDEX
# keeps it until its items are backfilled; readers use it while it is there.
PHASE_INDEX = IndexSpec(name="clusterArn-cw_phase-index", hash_key=CLUSTER, range_key=PHASE)


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
    stop_code_field: Optional[str]  # the detail field saying why it finished, if ECS sends one
    legacy_index: str  # the index ecs-state had first (keyed by status); migrations drop it, and PHASE_INDEX

    @property
    def read_index(self) -> IndexSpec:
        return READ_INDEX

    @property
    def legacy_indexes(self) -> Tuple[str, ...]:
        """The indexes of earlier ecs-state versions, which a migration drops (once its backfill is done)."""
        return (self.legacy_index, PHASE_INDEX.name)

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
                {"AttributeName": name, "AttributeType": "S"} for name in self.read_index.key_attributes
            ]
            request["GlobalSecondaryIndexes"] = [self.read_index.definition()]
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
    stop_code_field="stopCode",
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
    stop_code_field=None,
    legacy_index="clusterArn-status-index",
)

ALL: Tuple[TableSpec, ...] = (TASKS, CONTAINER_INSTANCES)
BY_DETAIL_TYPE: Dict[str, TableSpec] = {spec.detail_type: spec for spec in ALL}
