"""Event builders and DynamoDB helpers shared by the tests."""
import contextlib
import copy
import io
import json
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

from boto3.dynamodb.types import TypeDeserializer
from chalice.local import LambdaContext

from chalicelib import runtime
from chalicelib.ingest.events import parse_event
from chalicelib.model.changes import StateChange
from chalicelib.model.clock import iso_time
from chalicelib.model.lifecycle import ItemRules
from chalicelib.tables import CONTAINER_INSTANCES, LISTING, LISTING_KEY, PHASE_INDEX, STOP_CODE, TASKS, TableSpec

ACCOUNT = "111122223333"
HOUR = 3600
DAY = 86_400
# The envelope time of the test events: an hour before the run started, in whole
# seconds as EventBridge writes it. Relative to now, so no test depends on the date
# it runs (an event older than the creation window may not create its item).
EVENT_TIME = float(int(time.time()) - HOUR)


def iso(epoch_seconds: float) -> str:
    """An epoch time as ECS events write theirs ("2026-11-22T10:00:00.75Z")."""
    return iso_time(epoch_seconds)


class _ExactDeserializer(TypeDeserializer):
    """boto3's, but numbers read exactly: DynamoDB returns 5.5E+110 with all its zeros,
    which boto3's 38-digit context refuses (decimal.Rounded) though it holds 2 digits."""

    def _deserialize_n(self, value: str) -> Decimal:
        return Decimal(value)


_deserialize = _ExactDeserializer().deserialize


def task_event(version: int, task_id: str = "0123456789abcdef0123456789abcdef", **detail: Any) -> Dict[str, Any]:
    """A real-shaped ECS Task State Change envelope (string version "0", as EventBridge sends)."""
    arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/test-cluster/{task_id}"
    body = {
        "taskArn": arn,
        "clusterArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/test-cluster",
        "lastStatus": "RUNNING",
        "desiredStatus": "RUNNING",
        "launchType": "FARGATE",
        "cpu": "256",
        "memory": "512",
        "containers": [{"name": "web", "lastStatus": "RUNNING", "networkInterfaces": []}],
        "version": version,
    }
    body.update(detail)
    return _envelope(TASKS, arn, body, version)


def container_instance_event(version: int, instance_id: str = "fedcba9876543210fedcba9876543210", **detail: Any):
    arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/test-cluster/{instance_id}"
    body = {
        "containerInstanceArn": arn,
        "clusterArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/test-cluster",
        "agentConnected": True,
        "status": "ACTIVE",
        "registeredResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "CPU_CREDITS", "type": "DOUBLE", "doubleValue": 1.1},
            {"name": "MEMORY_BYTES", "type": "LONG", "longValue": 8053063680},
        ],
        "version": version,
    }
    body.update(detail)
    return _envelope(CONTAINER_INSTANCES, arn, body, version)


def _envelope(table: TableSpec, arn: str, detail: Dict[str, Any], version: int) -> Dict[str, Any]:
    return {
        "version": "0",
        "id": f"00000000-0000-4000-8000-{version:012d}",
        "detail-type": table.detail_type,
        "source": "aws.ecs",
        "account": ACCOUNT,
        "time": iso(EVENT_TIME),
        "region": "us-east-1",
        "resources": [arn],
        "detail": copy.deepcopy(detail),
    }


def lambda_context(function_name: str, client_context: Optional[Dict[str, Any]] = None) -> Any:
    """A Lambda context; ``client_context`` is the JSON of an Invoke request's ClientContext, which
    Lambda's Python runtime (awslambdaric) turns into an object with its custom, env and client."""
    context = LambdaContext(function_name, 256)
    if client_context is not None:
        context.client_context = SimpleNamespace(
            **{name: client_context.get(name) for name in ("custom", "env", "client")}
        )
    return context


# The rules of the test settings (tests/conftest.py): the read index, a century's retention.
TEST_RULES = ItemRules(read_index=True, retention_seconds=36_500 * DAY)


def parse(event: Any, rules: ItemRules = TEST_RULES) -> StateChange:
    """``event`` checked and built into its item, as the recorder does (the wall clock dates an
    event without a time)."""
    return parse_event(event, rules, time.time)


def table_name(table: TableSpec) -> str:
    """The installed Runtime's name of ``table`` (tests/conftest.py gives each test its own)."""
    return runtime.current().config.table_name(table)


def record(event: Any, context: Any = None) -> Dict[str, Any]:
    """Record ``event`` as the event functions do, with the installed Runtime."""
    return runtime.current().record(event, context)


def expected_item(event: Dict[str, Any]) -> Dict[str, Any]:
    """What ecs-state stores for an unfinished task or instance's event (index on): the detail
    verbatim, plus the envelope's version and time, where it came from, its phase and its
    read index keys (chalicelib/model/listing.py)."""
    detail = event["detail"]
    group = detail.get("group") if isinstance(detail.get("group"), str) else ""
    return {
        **detail, "cw_version": event["version"], "cw_time": event["time"],
        "cw_source": "event", "cw_phase": "open",
        "cw_listing": "all", "cw_listing_key": f"{detail['clusterArn']}\x1fopen\x1f{group}",
    }


def stored_item(client: Any, table: TableSpec, key: str):
    """The stored item as Python values (numbers as Decimal), or None."""
    response = client.get_item(
        TableName=table_name(table), Key={table.key: {"S": key}}, ConsistentRead=True
    )
    item = response.get("Item")
    return None if item is None else {name: _deserialize(value) for name, value in item.items()}


def store_unnumbered_version(client: Any, event: Dict[str, Any]) -> None:
    """Store the event's task with a version that is not a number: ecs-state refuses to compare
    (StoredItemConflict). DynamoDB Local only: moto answers the comparison with a 500."""
    client.put_item(TableName=table_name(TASKS),
                    Item={"taskArn": {"S": event["detail"]["taskArn"]}, "version": {"S": "seven"}})


def count_requests(client: Any) -> Dict[str, int]:
    """Count every HTTP request (retries included) the client sends, by operation."""
    counts: Dict[str, int] = {}

    def on_send(request: Any, **kwargs: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]
        counts[operation] = counts.get(operation, 0) + 1

    client.meta.events.register("before-send.dynamodb", on_send)
    return counts


@contextlib.contextmanager
def logs_and_metrics(capsys: Any, monkeypatch: Any) -> Iterator[List[Dict[str, Any]]]:
    """The JSON lines (Powertools logs at INFO, EMF metrics) written inside the block,
    parsed into the list yielded, once the block ends."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    logger = runtime.current().telemetry.logger
    log_output = io.StringIO()
    handler = logger.registered_handler
    original_stream = handler.setStream(log_output)
    logger.setLevel("INFO")
    lines: List[Dict[str, Any]] = []
    try:
        yield lines
    finally:
        logger.setLevel("WARNING")
        handler.setStream(original_stream)
    output = log_output.getvalue() + capsys.readouterr().out
    lines.extend(json.loads(line) for line in output.splitlines() if line.startswith("{"))


def legacy_index_definition(table: TableSpec) -> Dict[str, Any]:
    """The index ecs-state gave each table before the read index (TableSpec.legacy_index):
    keyed by cluster and status, every attribute projected. Upgrades must drop it."""
    return {
        "IndexName": table.legacy_index,
        "KeySchema": [
            {"AttributeName": "clusterArn", "KeyType": "HASH"},
            {"AttributeName": table.status_field, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


def create_older_ecs_state_table(client: Any, name: str, table: TableSpec = TASKS) -> None:
    """What `make deploy` made before the read index: on-demand, the index keyed by status, no TTL."""
    request = table.create_table_request(name, read_index=False)
    request["AttributeDefinitions"] += [{"AttributeName": attribute, "AttributeType": "S"}
                                        for attribute in ("clusterArn", table.status_field)]
    client.create_table(**request, GlobalSecondaryIndexes=[legacy_index_definition(table)])


def create_phase_index_table(client: Any, name: str, table: TableSpec = TASKS) -> None:
    """What `make deploy` made before the read index READ_INDEX: on-demand, the previous read index
    PHASE_INDEX (keys only, by clusterArn and cw_phase), TTL on cw_expires_at (DynamoDB Local keeps a
    thread of a pool of ten per table with TTL on: delete such a table after use)."""
    request = table.create_table_request(name, read_index=False)
    request["AttributeDefinitions"] += [{"AttributeName": key, "AttributeType": "S"} for key in PHASE_INDEX.key_attributes]
    client.create_table(**request, GlobalSecondaryIndexes=[PHASE_INDEX.definition()])
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "cw_expires_at"})


def phase_index_item(event: Any, rules: ItemRules = TEST_RULES) -> Dict[str, Any]:
    """What the ecs-state before READ_INDEX stored for ``event`` (encoded): today's item without the new
    index's attributes (it wrote cw_phase for PHASE_INDEX, and cw_expires_at, the same way)."""
    item = parse(event, rules).item
    return {name: value for name, value in item.items() if name not in (LISTING, LISTING_KEY, STOP_CODE)}
