"""The one definition of ecs-state's two tables.

The handlers, the local run, the tests and the deployment all read it from
here, so the schema cannot drift between them. The names and keys are those of
the ECS Developer Guide's "Handling events" example, so its tables and readers
keep working.
"""
from typing import Any, Dict, NamedTuple, Tuple


# NamedTuples, not dataclasses: a frozen dataclass costs milliseconds to build at
# import (it compiles its methods), and import time is every cold start's.
class TableSpec(NamedTuple):
    kind: str  # short name used in results, logs and metrics
    detail_type: str  # the EventBridge detail-type whose events land here
    key: str  # partition key: the ARN field of the event's detail
    name_env: str  # environment variable holding the table name
    default_name: str  # the docs example's table name

    def create_table_request(self, table_name: str) -> Dict[str, Any]:
        """CreateTable arguments for this table (on-demand billing)."""
        return {
            "TableName": table_name,
            "KeySchema": [{"AttributeName": self.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": self.key, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }


TASKS = TableSpec(
    kind="task",
    detail_type="ECS Task State Change",
    key="taskArn",
    name_env="TASK_TABLE_NAME",
    default_name="ECSTaskState",
)
CONTAINER_INSTANCES = TableSpec(
    kind="container_instance",
    detail_type="ECS Container Instance State Change",
    key="containerInstanceArn",
    name_env="CONTAINER_INSTANCE_TABLE_NAME",
    default_name="ECSCtrInstanceState",
)

ALL: Tuple[TableSpec, ...] = (TASKS, CONTAINER_INSTANCES)
BY_DETAIL_TYPE: Dict[str, TableSpec] = {spec.detail_type: spec for spec in ALL}
