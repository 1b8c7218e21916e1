"""`make deploy STAGE=<stage>`: ship ecs-state with `chalice deploy`, nothing made by hand.

Chalice creates the functions, their roles, the EventBridge rules and the
reconcile schedule, but cannot create tables or queues, and has no retry or
dead-letter setting. So:

1. ``set_up``: the two tables (tools/migrate.py: created from chalicelib.tables
   with TTL, point-in-time recovery and KMS encryption, or an existing one
   brought up to that definition, asking first if ecs-state did not create
   it), the encrypted dead-letter queue and its alarm (with an optional
   notification target), and each function's log group with its retention
   (the roles may not create log groups, which would never expire; and
   Chalice's log_retention_in_days would break its Terraform packaging).
   Idempotent: a second run changes nothing.
2. ``chalice deploy --stage <stage>``.
3. ``apply_event_invoke_configs``: the event functions' retries, maximum event
   age and OnFailure destination (the queue); the reconcile function's retries
   (none: the next scheduled pass follows a failed one). `chalice deploy` keeps
   these; it rewrites rule targets on every deploy, so the rule-level
   dead-letter queue exists only in the packaged stack (resources.json).
4. ``repair``: the code `chalice deploy` replaced kept writing while step 1
   backfilled, and an older ecs-state writes whole items without the lifecycle
   fields it did not know (cw_phase and cw_expires_at; the one before the read
   index READ_INDEX, its cw_listing, cw_listing_key and cw_stop_code), as does
   the docs example's Lambda, if still running. Once that code can no longer
   write (``wait_for_replaced_code``: the update done, then its timeout), one
   more backfill pass gives every item what it lacks, and raises each expiry an
   older ecs-state dated sooner than ecs-state does. Only then does it delete the
   indexes of earlier versions (migrate.drop_legacy_indexes): the replaced code
   read them, and the new code's readers use PHASE_INDEX while a table has it,
   so listings answer throughout the upgrade. On every deploy, so that a second
   one repairs what another writer broke since; it warns whenever it finds such
   items that no code this deploy replaced wrote (the docs example's Lambda, its
   rule left on).
5. ``start_reconcile_pass``: invoke the reconcile function once, asynchronously,
   as its schedule would, so the tables fill within minutes of a first deploy.

Steps 1, 3 and 4 also serve Terraform users (`--only set-up`, `terraform apply`,
`--only event-invoke-configs`, `--only repair`): Chalice's Terraform output names
the functions as `chalice deploy` does, <app>-<stage>-<handler>.

Every step returns the list of changes it made (the repair also what its scan
read); the tests run them against moto and check that a second run changes
nothing.
"""
import argparse
import json
import re
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from chalicelib import config as settings
from chalicelib.errors import ConfigError
from chalicelib.model.lifecycle import ItemRules
from tools import migrate
from tools.migrate import DEPLOY, EXPIRE_HISTORY_HELP, Confirm, Upgrade, confirm_on_terminal, ensure_tables
from tools.policy_files import policy_gaps
from tools.stage import DeployError, StagePlan, cli, report, run_chalice, stage_plan

SET_UP, CHALICE_DEPLOY, EVENT_INVOKE_CONFIGS, REPAIR, RECONCILE_PASS = (
    "set-up", "chalice-deploy", "event-invoke-configs", "repair", "reconcile-pass"
)
STEPS = (SET_UP, CHALICE_DEPLOY, EVENT_INVOKE_CONFIGS, REPAIR, RECONCILE_PASS)

# The same values as resources.json (tests/test_package.py proves they agree).
DEAD_LETTER_QUEUE_ATTRIBUTES = {
    "MessageRetentionPeriod": str(14 * 24 * 3600),  # SQS's maximum: two weeks to notice and redrive
    "SqsManagedSseEnabled": "true",  # SSE-SQS: EventBridge cannot use the AWS managed KMS key
}
# Lambda's maxima: the recorder is idempotent, so retrying is always safe.
EVENT_INVOKE_MAX_RETRY_ATTEMPTS = 2
EVENT_INVOKE_MAX_EVENT_AGE_SECONDS = 6 * 3600
# A failed pass is followed by the next scheduled one: retrying it would only overlap that.
RECONCILE_INVOKE_CONFIG = {"MaximumRetryAttempts": 0}
LOG_RETENTION_DAYS = 30  # one line per event: a month to investigate, no year-long storage bill
# A replaced function's invocation may write until its timeout; the margin covers a request sent at
# its last moment, and lets DynamoDB's eventually consistent scan see that write.
REPLACED_CODE_MARGIN_SECONDS = 5
# The stage settings that came with cw_phase and cw_expires_at: a function deployed without any of
# them runs an ecs-state that writes neither.
LIFECYCLE_SETTINGS = (settings.READ_INDEX_ENV, settings.RETENTION_DAYS_ENV)
SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def alarm_settings(queue_name: str) -> Dict[str, Any]:
    """The dead-letter alarm, less its name and actions: fires as soon as one event waits in the queue."""
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


def notification_topic_name(plan: StagePlan) -> str:
    """The topic `make deploy NOTIFY=<e-mail>` creates (the packaged stack's is named by CloudFormation)."""
    return f"{plan.deployment}-alarms"


def queue_arn(client: Any, name: str) -> str:
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        raise DeployError(f"queue {name} does not exist: run the {SET_UP} step first") from None
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def ensure_queue(client: Any, name: str) -> Tuple[str, List[str]]:
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


def ensure_notification_target(client: Any, plan: StagePlan, notify: str) -> Tuple[str, List[str]]:
    """The SNS topic the alarm notifies: the ARN given, or a topic of ours subscribing the e-mail given."""
    if SNS_TOPIC_ARN.fullmatch(notify):
        return notify, []
    if not EMAIL.fullmatch(notify):
        raise DeployError(f"NOTIFY must be an SNS topic ARN or an e-mail address, got {notify!r}")
    name = notification_topic_name(plan)
    existing = [t["TopicArn"] for page in client.get_paginator("list_topics").paginate() for t in page["Topics"]
                if t["TopicArn"].rsplit(":", 1)[-1] == name]
    topic = existing[0] if existing else client.create_topic(Name=name)["TopicArn"]
    changes = [] if existing else [f"created topic {name}"]
    subscribed = [s for page in client.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic)
                  for s in page["Subscriptions"] if s["Protocol"] == "email" and s["Endpoint"] == notify]
    if not subscribed:
        client.subscribe(TopicArn=topic, Protocol="email", Endpoint=notify)
        changes.append(f"subscribed {notify} to topic {name}: confirm with the link in the e-mail AWS sends")
    return topic, changes


def ensure_alarm(client: Any, name: str, queue_name: str, notify_topic: Optional[str] = None) -> List[str]:
    """The alarm as alarm_settings says; its actions notify ``notify_topic`` if given, else stay as they are."""
    desired = alarm_settings(queue_name)
    found = client.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])["MetricAlarms"]
    current = found[0] if found else {}
    if notify_topic is not None:
        desired.update(AlarmActions=[notify_topic], OKActions=[notify_topic])  # and when the queue is empty again
    if found and all(current.get(key) == value for key, value in desired.items()):
        return []
    # PutMetricAlarm replaces the whole alarm: keep the actions someone else set.
    actions = {key: current[key] for key in ("AlarmActions", "OKActions") if current.get(key)}
    client.put_metric_alarm(AlarmName=name, **{**actions, **desired})
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


def dynamodb_client(session: Any) -> Any:
    """The tools' DynamoDB client: a backfill on a provisioned table is throttled, and waits."""
    from botocore.config import Config

    return session.client("dynamodb", config=Config(retries={"mode": "adaptive", "total_max_attempts": 10}))


ASK_ON_TERMINAL = confirm_on_terminal(False)  # asks when changing tables ecs-state did not create


def set_up(
    session: Any, plan: StagePlan, confirm: Confirm = ASK_ON_TERMINAL, notify: Optional[str] = None,
    pause: Callable[[float], None] = time.sleep, now: Optional[float] = None, expire_history: bool = False,
) -> Tuple[str, List[str]]:
    """Step 1: tables, queue, alarm and log groups. Returns the queue ARN and every change made.
    ``now`` and ``expire_history`` date the backfill's expiries (tools/migrate.py's Upgrade)."""
    changes = ensure_tables(dynamodb_client(session), plan.table_names, plan.item_rules, plan.deployment,
                            DEPLOY._replace(expire_history=expire_history), confirm, pause, now)
    queue, queue_changes = ensure_queue(session.client("sqs"), plan.queue_name)
    changes += queue_changes
    topic = None
    if notify:
        topic, topic_changes = ensure_notification_target(session.client("sns"), plan, notify)
        changes += topic_changes
    changes += ensure_alarm(session.client("cloudwatch"), plan.alarm_name, plan.queue_name, topic)
    logs = session.client("logs")
    for name in plan.log_group_names:
        changes += ensure_log_group(logs, name)
    return queue, changes


def event_invoke_config(queue_arn: str) -> Dict[str, Any]:
    """What ecs-state owns of an event function's EventInvokeConfig."""
    return {
        "MaximumRetryAttempts": EVENT_INVOKE_MAX_RETRY_ATTEMPTS,
        "MaximumEventAgeInSeconds": EVENT_INVOKE_MAX_EVENT_AGE_SECONDS,
        "DestinationConfig": {"OnFailure": {"Destination": queue_arn}},
    }


def apply_event_invoke_configs(client: Any, plan: StagePlan, queue_arn: str) -> List[str]:
    """Step 3: each event function's retries and OnFailure destination, the reconcile function's retries."""
    changes = []
    for name in plan.event_function_names:
        if ensure_event_invoke_config(client, name, event_invoke_config(queue_arn)):
            changes.append(f"set retries and OnFailure destination of {name}")
    if ensure_event_invoke_config(client, plan.reconcile_function_name, RECONCILE_INVOKE_CONFIG):
        changes.append(f"set retries of {plan.reconcile_function_name} to 0: the next scheduled pass follows a failed one")
    return changes


def ensure_event_invoke_config(client: Any, name: str, owned: Mapping[str, Any]) -> bool:
    """Make the function's EventInvokeConfig hold ``owned``, keeping what ecs-state does not own
    (an OnSuccess destination, another setting); return whether it changed."""
    try:
        client.get_function_configuration(FunctionName=name)
    except client.exceptions.ResourceNotFoundException:
        raise DeployError(f"function {name} does not exist: deploy the functions first") from None
    try:
        current = client.get_function_event_invoke_config(FunctionName=name)
    except client.exceptions.ResourceNotFoundException:  # none set yet
        current = {}
    # Lambda answers "OnSuccess": {} (or "OnFailure": {}) for a destination not set: not a setting.
    destinations = {kind: value for kind, value in current.get("DestinationConfig", {}).items() if value}
    kept = {key: current[key] for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds") if key in current}
    if destinations:
        kept["DestinationConfig"] = destinations
    desired = {**kept, **owned}
    if "DestinationConfig" in owned:
        desired["DestinationConfig"] = {**destinations, **owned["DestinationConfig"]}
    if desired == kept:
        return False
    client.put_function_event_invoke_config(FunctionName=name, **desired)
    return True


def writes_lifecycle_fields(environment: Mapping[str, str], rules: ItemRules) -> bool:
    """Whether a function deployed with this environment writes every lifecycle field the stage's
    items need: an ecs-state that knows them (it has their settings) and writes cw_phase if needed."""
    if not any(name in environment for name in LIFECYCLE_SETTINGS):
        return False
    try:
        return settings.read_index(environment) or not rules.read_index
    except ConfigError:
        return False


class ReplacedWriter(NamedTuple):
    timeout: int  # seconds: how long an invocation of its code may still write
    writes: str  # the kind of items it writes without their fields (migrate.WRITER_SIGNS)


def replaced_writers(client: Any, plan: StagePlan, moving: bool = False) -> Dict[str, ReplacedWriter]:
    """Before `chalice deploy`: the functions that write items (events, reconcile) whose deployed
    code may write them without the lifecycle fields, with their timeouts and what they write.
    ``moving``: the stage's tables still have an index of an earlier version (migrate.legacy_indexes),
    so the deployed code may be the ecs-state before READ_INDEX, which has the same settings as this
    one but writes no cw_listing_key (a move completed drops them: then the code is this one)."""
    writers = {}
    for name in (*plan.event_function_names, plan.reconcile_function_name):
        try:
            config = client.get_function_configuration(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:
            continue  # nothing deployed yet: nothing replaced
        environment = config.get("Environment", {}).get("Variables", {})
        timeout = config.get("Timeout", 3)  # Lambda's default
        if not writes_lifecycle_fields(environment, plan.item_rules):
            knows_them = any(setting in environment for setting in LIFECYCLE_SETTINGS)
            writers[name] = ReplacedWriter(timeout, migrate.PHASE_OFF_ECS_STATE if knows_them else migrate.OLDER_ECS_STATE)
        elif moving and plan.item_rules.read_index:
            writers[name] = ReplacedWriter(timeout, migrate.PHASE_INDEX_ECS_STATE)
    return writers


def explained_writers(writers: Optional[Mapping[str, ReplacedWriter]]) -> FrozenSet[str]:
    """The kinds of item lacking its fields that the code this run replaced explains; ``writers``
    None: not known (--only repair follows whatever replaced the code, e.g. terraform apply), so
    only an item no ecs-state writes is unexplained."""
    if writers is None:
        return frozenset({migrate.PHASE_INDEX_ECS_STATE, migrate.PHASE_OFF_ECS_STATE, migrate.OLDER_ECS_STATE})
    return frozenset(writer.writes for writer in writers.values())


def wait_for_replaced_code(client: Any, writers: Mapping[str, ReplacedWriter], pause: Callable[[float], None]) -> float:
    """After `chalice deploy`: until each replaced writer's update is done (new invocations run the
    new code), then until the last invocation of its old code has timed out. Returns the wait."""
    if not writers:
        return 0
    for name in writers:
        for _ in range(migrate.WAIT_ATTEMPTS):
            if client.get_function_configuration(FunctionName=name).get("LastUpdateStatus") != "InProgress":
                break
            pause(migrate.WAIT_SECONDS)
        else:
            raise DeployError(f"function {name} is still being updated after {migrate.WAIT_ATTEMPTS * migrate.WAIT_SECONDS} s")
    seconds = max(writer.timeout for writer in writers.values()) + REPLACED_CODE_MARGIN_SECONDS
    pause(seconds)
    return seconds


def repair(client: Any, plan: StagePlan, upgrade: Upgrade, backfilled: Mapping[str, bool],
           writers: Optional[Mapping[str, ReplacedWriter]], confirm: Confirm = ASK_ON_TERMINAL,
           pause: Callable[[float], None] = time.sleep) -> List[str]:
    """Step 4: every item lacking its lifecycle fields gets them, every index attribute its state
    contradicts is corrected, and every expiry dated sooner than ecs-state dates it is raised (a scan
    of each table, a write conditioned on the version read per item that needs something); then the
    indexes of earlier versions go (migrate.drop_legacy_indexes; on a table ecs-state did not create,
    once ``confirm`` says so). ``backfilled``: the tables backfilled before this step (upgraded before
    this run, or by its set-up step), where an item lacking its fields that the code this run replaced
    (``writers``, None if not known) did not write means another writer is running."""
    lines = []
    fields = migrate.lifecycle_names(plan.item_rules)
    for spec, name in plan.table_names.items():
        try:
            count = migrate.backfill(client, spec, name, upgrade)
        except client.exceptions.ResourceNotFoundException:
            raise DeployError(f"table {name} does not exist: run the {SET_UP} step first") from None
        lines.append(f"{name}: {count.read} items read ({count.requests} requests, {count.read_units:g} read units); "
                     f"repaired {count.updated} that lacked {fields}"
                     + (f", corrected {count.corrected} whose index attributes said otherwise than their state"
                        if count.corrected else ""))
        explained = explained_writers(writers) if backfilled.get(name) else None
        lines += migrate.backfill_notes(client, name, count, upgrade, explained, check_backups=False)
    return lines + migrate.drop_legacy_indexes(client, plan.table_names, plan.item_rules, confirm, pause)


def scheduled_event(account: str, region: str, at: float) -> Dict[str, Any]:
    """A scheduled EventBridge event, as the reconcile function's rule sends it (Chalice's
    CloudWatchEvent reads each of these fields)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "region": region,
        "resources": [],
        "detail": {},
    }


def start_reconcile_pass(client: Any, name: str) -> List[str]:
    """Step 5: one pass now, asynchronously (it may take minutes); its summary goes to its log group."""
    try:
        arn = client.get_function_configuration(FunctionName=name)["FunctionArn"]
    except client.exceptions.ResourceNotFoundException:
        raise DeployError(f"function {name} does not exist: deploy the functions first") from None
    region, account = arn.split(":")[3:5]  # arn:partition:lambda:region:account:function:name
    payload = json.dumps(scheduled_event(account, region, time.time())).encode()
    client.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
    return [f"started a reconcile pass: {name} fills the tables from the ECS API now; "
            f"its summary is logged to /aws/lambda/{name}"]


def check_policies(plan: StagePlan) -> None:
    """Refuse, before anything changes, a stage whose policy files do not allow every call its
    functions make with its settings (a stage turning the read index off, say, whose reconciler
    then scans the tables: the files hold one setting's list, tools/policies.py)."""
    gaps = policy_gaps(plan)
    if gaps:
        read_index = plan.environment.get(settings.READ_INDEX_ENV) or settings.ENABLED
        raise DeployError(
            f"stage {plan.stage!r}: its policy files do not allow every call its functions make with its settings "
            f"({settings.READ_INDEX_ENV}={read_index}, its tables and queue), so nothing was changed. "
            "Add these statements (docs/deploy.md, \"The policies name the account and region\"):"
            + "".join(f"\n  .chalice/{file}: " + ", ".join(json.dumps(statement) for statement in statements)
                      for file, statements in gaps.items())
        )


def main(argv: "List[str] | None" = None, pause: Callable[[float], None] = time.sleep,
         now: Optional[float] = None) -> int:
    """``pause``: every wait (the tests pass one that does not sleep); ``now``: the upgrade's time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument(
        "--only", choices=STEPS, action="append",
        help="run only this step (repeatable); e.g. with Terraform: --only set-up, terraform apply, "
        "then --only event-invoke-configs",
    )
    parser.add_argument("--yes", action="store_true", help="change tables ecs-state did not create without asking")
    parser.add_argument("--notify", metavar="TOPIC_ARN_OR_EMAIL",
                        help="the alarm notifies this SNS topic, or this e-mail address through a topic of its own")
    parser.add_argument("--expire-history", action="store_true", help=EXPIRE_HISTORY_HELP)
    args = parser.parse_args(argv)
    steps = args.only or STEPS
    import boto3

    plan = stage_plan(args.stage)
    check_policies(plan)
    session = boto3.session.Session()
    upgrade = Upgrade(plan.item_rules, time.time() if now is None else now, args.expire_history)
    dynamodb = dynamodb_client(session)
    # Before anything changes: which tables the repair finds backfilled (ecs-state's already, or by the
    # set-up step), and which code chalice deploy replaces.
    backfilled = {name: SET_UP in steps or migrate.upgraded(dynamodb, spec, name, plan.item_rules)
                  for spec, name in plan.table_names.items()} if REPAIR in steps else {}
    lambda_client = session.client("lambda")
    writers = None
    if CHALICE_DEPLOY in steps and REPAIR in steps:
        moving = any(migrate.legacy_indexes(dynamodb, spec, name) for spec, name in plan.table_names.items())
        writers = replaced_writers(lambda_client, plan, moving)
    if SET_UP in steps:
        print(f"{SET_UP}: tables, dead-letter queue, alarm and log groups of stage {plan.stage}")
        report(set_up(session, plan, confirm_on_terminal(args.yes), args.notify, pause, upgrade.now,
                      args.expire_history)[1])
    if CHALICE_DEPLOY in steps:
        print(f"{CHALICE_DEPLOY}: chalice deploy --stage {plan.stage}")
        run_chalice("deploy", "--stage", plan.stage)
    if EVENT_INVOKE_CONFIGS in steps:
        print(f"{EVENT_INVOKE_CONFIGS}: retries and OnFailure destination of each function")
        queue = queue_arn(session.client("sqs"), plan.queue_name)
        report(apply_event_invoke_configs(lambda_client, plan, queue))
    if REPAIR in steps:
        print(f"{REPAIR}: every item without {migrate.lifecycle_names(plan.item_rules)} gets them (a scan of each "
              "table); then the indexes of earlier versions go")
        if writers:
            print(f"  waiting for the code chalice deploy replaced, which wrote items without them, to stop: "
                  f"its update, then its timeout ({max(writer.timeout for writer in writers.values())} s) and "
                  f"{REPLACED_CODE_MARGIN_SECONDS} s", flush=True)
            wait_for_replaced_code(lambda_client, writers, pause)
        # The set-up step of this run asked about the indexes it leaves to the repair.
        confirm = (lambda changes: True) if SET_UP in steps else confirm_on_terminal(args.yes)
        report(repair(dynamodb, plan, upgrade, backfilled, writers, confirm, pause))
    if RECONCILE_PASS in steps:
        print(f"{RECONCILE_PASS}: one reconcile pass now (the schedule runs one every "
              f"{plan.config.reconcile_minutes} minutes)")
        report(start_reconcile_pass(lambda_client, plan.reconcile_function_name))
    return 0


if __name__ == "__main__":
    cli(main)
