"""`make deploy STAGE=<stage>`: ship ecs-state with `chalice deploy`, nothing made by hand.

Chalice creates the functions, their roles and the EventBridge rules, but
cannot create tables or queues, and has no retry or dead-letter setting. So:

1. ``set_up``: create or update the two tables (from chalicelib.tables, the one
   definition, plus point-in-time recovery and KMS encryption), the encrypted
   dead-letter queue and its alarm, and each function's log group with its
   retention (the roles may not create log groups, which would never expire;
   and Chalice's log_retention_in_days would break its Terraform packaging).
   Idempotent: a second run changes nothing.
2. ``chalice deploy --stage <stage>``.
3. ``apply_event_invoke_configs``: each function's retries, maximum event age
   and OnFailure destination (the queue). `chalice deploy` keeps these; it
   rewrites rule targets on every deploy, so the rule-level dead-letter queue
   exists only in the packaged stack (resources.json).

Steps 1 and 3 also serve Terraform users (`--only set-up`, `terraform apply`,
`--only event-invoke-configs`): Chalice's Terraform output names the functions
as `chalice deploy` does, <app>-<stage>-<handler>.

Every step returns the list of changes it made; the tests run them against
moto and check that a second run returns none.
"""
import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Tuple

from chalicelib import settings, tables
from chalicelib.tables import TableSpec

ROOT = Path(__file__).resolve().parent.parent
SET_UP, CHALICE_DEPLOY, EVENT_INVOKE_CONFIGS = "set-up", "chalice-deploy", "event-invoke-configs"
STEPS = (SET_UP, CHALICE_DEPLOY, EVENT_INVOKE_CONFIGS)

# The same values as resources.json (tests/test_package.py proves they agree).
DEAD_LETTER_QUEUE_ATTRIBUTES = {
    "MessageRetentionPeriod": str(14 * 24 * 3600),  # SQS's maximum: two weeks to notice and redrive
    "SqsManagedSseEnabled": "true",  # SSE-SQS: EventBridge cannot use the AWS managed KMS key
}
# Lambda's maxima: the recorder is idempotent, so retrying is always safe.
EVENT_INVOKE_MAX_RETRY_ATTEMPTS = 2
EVENT_INVOKE_MAX_EVENT_AGE_SECONDS = 6 * 3600
TABLE_ENCRYPTION = {"Enabled": True, "SSEType": "KMS"}  # the AWS managed key aws/dynamodb
LOG_RETENTION_DAYS = 30  # one line per event: a month to investigate, no year-long storage bill


def alarm_settings(queue_name: str) -> Dict[str, Any]:
    """The dead-letter alarm, less its name: fires as soon as one event waits in the queue."""
    return {
        "AlarmDescription": "ecs-state could not record some ECS events: they wait in the dead-letter queue (14 days).",
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "Statistic": "Maximum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "Threshold": 0.0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }


class DeployError(RuntimeError):
    """The account holds something ecs-state cannot use or fix by itself."""


@dataclass(frozen=True)
class StagePlan:
    """What one stage is made of, all derived from .chalice/config.json and chalicelib.tables."""

    stage: str
    app_name: str
    table_names: Mapping[TableSpec, str]
    function_names: Tuple[str, ...]  # the event handlers, as `chalice deploy` names them: <app>-<stage>-<handler>
    api_function_name: str  # the read API's function: Chalice names it <app>-<stage>

    @property
    def queue_name(self) -> str:
        # The packaged stack names it ${AWS::StackName}-dead-letters: the same for stack ecs-state-<stage>.
        return f"{self.app_name}-{self.stage}-dead-letters"

    @property
    def alarm_name(self) -> str:
        return self.queue_name

    @property
    def log_group_names(self) -> List[str]:
        return [f"/aws/lambda/{function}" for function in (*self.function_names, self.api_function_name)]


def chalice_config(stage: str, project_dir: Path = ROOT) -> Any:
    """Chalice's own view of the stage's configuration (refusing a stage config.json lacks)."""
    from chalice.cli.factory import CLIFactory

    factory = CLIFactory(str(project_dir))
    stages = factory.load_project_config().get("stages", {})
    if stage not in stages:
        raise DeployError(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(sorted(stages))})")
    if stage not in deployable_stages(stages):
        raise DeployError(f"stage {stage!r} is for chalice local only: it enables POST /events")
    return factory.create_config_obj(chalice_stage_name=stage)


def deployable_stages(stages: Mapping[str, Any]) -> List[str]:
    """The stages of config.json that may be deployed: not those that turn on POST /events (local)."""
    from chalicelib.settings import EVENTS_ROUTE_ENABLED, EVENTS_ROUTE_VARIABLE

    return [
        name for name, stage in stages.items()
        if stage.get("environment_variables", {}).get(EVENTS_ROUTE_VARIABLE) != EVENTS_ROUTE_ENABLED
    ]


def stage_plan(stage: str, project_dir: Path = ROOT) -> StagePlan:
    config = chalice_config(stage, project_dir)
    environment = config.environment_variables
    return StagePlan(
        stage=stage,
        app_name=config.app_name,
        table_names={spec: settings.table_name(spec, environment) for spec in tables.ALL},
        function_names=tuple(f"{config.app_name}-{stage}-{handler}" for handler in handler_names()),
        api_function_name=f"{config.app_name}-{stage}",
    )


def handler_names() -> List[str]:
    """Every Lambda function of app.py (app.py makes no AWS call at import)."""
    from app import app

    return [source.name for source in app.event_sources] + [function.name for function in app.pure_lambda_functions]


def create_table_request(spec: TableSpec, name: str) -> Dict[str, Any]:
    """The table's one definition plus encryption (PITR has its own API call)."""
    return {**spec.create_table_request(name), "SSESpecification": TABLE_ENCRYPTION}


def ensure_table(client: Any, spec: TableSpec, name: str, pause: Callable[[float], None] = time.sleep) -> List[str]:
    """Create the table, or bring an existing one up to its definition; return what changed.

    An existing table keeps its billing mode (it may be the docs example's
    provisioned table, and its owner's choice), but must have the right key.
    """
    request = create_table_request(spec, name)
    changes: List[str] = []
    try:
        table = client.describe_table(TableName=name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        client.create_table(**request)
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        changes.append(f"created table {name}")
        table = client.describe_table(TableName=name)["Table"]
    if table["KeySchema"] != request["KeySchema"]:
        raise DeployError(f"table {name} has key {table['KeySchema']}, ecs-state needs {request['KeySchema']}")
    changes += _add_missing_indexes(client, table, request, pause)
    sse = table.get("SSEDescription", {})
    if sse.get("Status") not in ("ENABLED", "UPDATING") or sse.get("SSEType") != "KMS":
        client.update_table(TableName=name, SSESpecification=TABLE_ENCRYPTION)
        changes.append(f"encrypted table {name} with KMS")
    if not _point_in_time_recovery_enabled(client, name):
        _retry_while_backups_start(
            client,
            lambda: client.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            ),
            pause,
        )
        changes.append(f"enabled point-in-time recovery on {name}")
    return changes


def _add_missing_indexes(client: Any, table: Dict[str, Any], request: Dict[str, Any], pause: Callable) -> List[str]:
    """Create the GSIs the definition has and the table lacks, one at a time as DynamoDB requires."""
    existing = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
    changes = []
    for index in request.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] in existing:
            continue
        client.update_table(
            TableName=table["TableName"],
            AttributeDefinitions=request["AttributeDefinitions"],
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )
        _wait_for_index(client, table["TableName"], index["IndexName"], pause)
        changes.append(f"created index {index['IndexName']} on {table['TableName']}")
    return changes


def _wait_for_index(client: Any, table: str, index: str, pause: Callable, attempts: int = 360) -> None:
    for _ in range(attempts):
        indexes = client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        if any(i["IndexName"] == index and i.get("IndexStatus") == "ACTIVE" for i in indexes):
            return
        pause(5)
    raise DeployError(f"index {index} on {table} is not ACTIVE after {attempts * 5} s")


def _point_in_time_recovery_enabled(client: Any, name: str) -> bool:
    backups = client.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    return backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED"


def _retry_while_backups_start(client: Any, call: Callable[[], Any], pause: Callable, attempts: int = 30) -> Any:
    """A new table refuses PITR for a short while ("continuous backups are being enabled")."""
    for attempt in range(attempts):
        try:
            return call()
        except client.exceptions.ContinuousBackupsUnavailableException:
            if attempt == attempts - 1:
                raise
            pause(2)


def queue_arn(client: Any, name: str) -> str:
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        raise DeployError(f"queue {name} does not exist: run the {SET_UP} step first") from None
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def ensure_queue(client: Any, name: str) -> "tuple[str, List[str]]":
    """Create the dead-letter queue or fix its attributes; return its ARN and what changed."""
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        url = client.create_queue(QueueName=name, Attributes=DEAD_LETTER_QUEUE_ATTRIBUTES)["QueueUrl"]
        changes = [f"created queue {name}"]
    else:
        current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        wrong = {key: value for key, value in DEAD_LETTER_QUEUE_ATTRIBUTES.items() if current.get(key) != value}
        changes = []
        if wrong:
            client.set_queue_attributes(QueueUrl=url, Attributes=wrong)
            changes.append(f"set {', '.join(sorted(wrong))} on queue {name}")
    return queue_arn(client, name), changes


def ensure_alarm(client: Any, name: str, queue_name: str) -> List[str]:
    desired = alarm_settings(queue_name)
    found = client.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])["MetricAlarms"]
    if found and all(found[0].get(key) == value for key, value in desired.items()):
        return []
    client.put_metric_alarm(AlarmName=name, **desired)
    return [f"{'updated' if found else 'created'} alarm {name}"]


def ensure_log_group(client: Any, name: str) -> List[str]:
    found = [g for g in client.describe_log_groups(logGroupNamePrefix=name)["logGroups"] if g["logGroupName"] == name]
    changes = []
    if not found:
        client.create_log_group(logGroupName=name)
        changes.append(f"created log group {name}")
    if not found or found[0].get("retentionInDays") != LOG_RETENTION_DAYS:
        client.put_retention_policy(logGroupName=name, retentionInDays=LOG_RETENTION_DAYS)
        changes.append(f"set {LOG_RETENTION_DAYS}-day retention on {name}")
    return changes


def set_up(session: Any, plan: StagePlan) -> "tuple[str, List[str]]":
    """Step 1: tables, queue, alarm and log groups. Returns the queue ARN and every change made."""
    dynamodb = session.client("dynamodb")
    changes: List[str] = []
    for spec, name in plan.table_names.items():
        changes += ensure_table(dynamodb, spec, name)
    queue_arn, queue_changes = ensure_queue(session.client("sqs"), plan.queue_name)
    changes += queue_changes
    changes += ensure_alarm(session.client("cloudwatch"), plan.alarm_name, plan.queue_name)
    logs = session.client("logs")
    for name in plan.log_group_names:
        changes += ensure_log_group(logs, name)
    return queue_arn, changes


def event_invoke_config(queue_arn: str) -> Dict[str, Any]:
    return {
        "MaximumRetryAttempts": EVENT_INVOKE_MAX_RETRY_ATTEMPTS,
        "MaximumEventAgeInSeconds": EVENT_INVOKE_MAX_EVENT_AGE_SECONDS,
        "DestinationConfig": {"OnFailure": {"Destination": queue_arn}},
    }


def apply_event_invoke_configs(client: Any, function_names: Iterable[str], queue_arn: str) -> List[str]:
    """Step 3: retries and the OnFailure destination of each function (unchanged ones left alone)."""
    desired = event_invoke_config(queue_arn)
    changes = []
    for name in function_names:
        try:
            client.get_function_configuration(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:
            raise DeployError(f"function {name} does not exist: deploy the functions first") from None
        try:
            current = client.get_function_event_invoke_config(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:  # none set yet
            current = {}
        if all(current.get(key) == value for key, value in desired.items()):
            continue
        client.put_function_event_invoke_config(FunctionName=name, **desired)
        changes.append(f"set retries and OnFailure destination of {name}")
    return changes


def run_chalice(*args: str, **options: Any) -> subprocess.CompletedProcess:
    """Run this venv's chalice CLI in the project directory; its failure raises CalledProcessError."""
    chalice = Path(sys.executable).with_name("chalice")
    return subprocess.run([str(chalice), *args], cwd=ROOT, check=True, **options)


def report(changes: List[str]) -> None:
    for change in changes or ["nothing to change"]:
        print(f"  - {change}")


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument(
        "--only", choices=STEPS, action="append",
        help="run only this step (repeatable); e.g. with Terraform: --only set-up, terraform apply, "
        "then --only event-invoke-configs",
    )
    args = parser.parse_args(argv)
    steps = args.only or STEPS
    import boto3

    plan = stage_plan(args.stage)
    session = boto3.session.Session()
    if SET_UP in steps:
        print(f"{SET_UP}: tables, dead-letter queue, alarm and log groups of stage {plan.stage}")
        report(set_up(session, plan)[1])
    if CHALICE_DEPLOY in steps:
        print(f"{CHALICE_DEPLOY}: chalice deploy --stage {plan.stage}")
        run_chalice("deploy", "--stage", plan.stage)
    if EVENT_INVOKE_CONFIGS in steps:
        print(f"{EVENT_INVOKE_CONFIGS}: retries and OnFailure destination of each function")
        queue = queue_arn(session.client("sqs"), plan.queue_name)
        report(apply_event_invoke_configs(session.client("lambda"), plan.function_names, queue))
    return 0


def cli(main: Callable[[], int]) -> None:
    """Exit with main's status; a DeployError or a failed chalice step prints one line, not a traceback."""
    try:
        sys.exit(main())
    except DeployError as error:
        sys.exit(f"error: {error}")
    except subprocess.CalledProcessError as error:
        sys.exit(f"error: {' '.join(map(str, error.cmd))} failed with exit status {error.returncode}")


if __name__ == "__main__":
    cli(main)
