"""`make deploy` / `make destroy`: the boto3 steps, against moto in this process (no AWS here).

moto accepts some requests AWS refuses, so these tests prove what is asked
for and what is left alone, not AWS's own validation; nothing here is concurrent.
The table work on an existing table is also proven on DynamoDB Local
(tests/test_migrate.py).
"""
import dataclasses
import io
import json
import subprocess
import sys
import time
from typing import Any, Dict

import boto3
import pytest
from moto import mock_aws

from chalicelib import tables
from chalicelib.model import attributes, lifecycle
from tests.helpers import (
    DAY,
    EVENT_TIME,
    container_instance_event,
    create_older_ecs_state_table,
    create_phase_index_table,
    iso,
    phase_index_item,
    task_event,
)
from tools import deploy, destroy, migrate, stage

REGION = "us-east-1"


@pytest.fixture
def session(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"lambda": {"use_docker": False}}):  # an invocation answers at once, runs nothing
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture(params=["dev", "prod"])
def plan(request):
    return stage.stage_plan(request.param)


def yes(changes):
    return True


def describe_everything(session, plan) -> Dict[str, Any]:
    """What an operator would look at after a deploy: tables, backups, queue, alarm."""
    dynamodb, sqs, cloudwatch = (session.client(name) for name in ("dynamodb", "sqs", "cloudwatch"))
    state: Dict[str, Any] = {}
    for name in plan.table_names.values():
        table = dynamodb.describe_table(TableName=name)["Table"]
        backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        state[name] = {
            "KeySchema": table["KeySchema"],
            "AttributeDefinitions": table["AttributeDefinitions"],
            "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode"),
            "SSE": table.get("SSEDescription"),
            "PITR": backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
            "GSIs": sorted(i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])),
            "TTL": dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"],
            "Tags": dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"]).get("Tags", []),
        }
    url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    state["queue"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    state["alarms"] = cloudwatch.describe_alarms(AlarmNames=[plan.alarm_name])["MetricAlarms"]
    groups = session.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    state["log groups"] = {group["logGroupName"]: group.get("retentionInDays") for group in groups}
    return state


def describe_log_groups(session):
    return session.client("logs").describe_log_groups()["logGroups"]


def test_stage_plan_reads_names_from_the_stage_config(plan):
    config = stage.chalice_config(plan.stage)
    assert {spec.name_env: name for spec, name in plan.table_names.items()} == {
        spec.name_env: config.environment_variables[spec.name_env] for spec in tables.ALL
    }
    assert plan.queue_name == config.environment_variables["ECS_STATE_DEAD_LETTER_QUEUE"]
    assert plan.queue_name == f"ecs-state-{plan.stage}-dead-letters"  # the packaged stack's name for it too
    assert plan.event_function_names == (
        f"ecs-state-{plan.stage}-task_state_change", f"ecs-state-{plan.stage}-container_instance_state_change"
    )
    assert plan.reconcile_function_name == f"ecs-state-{plan.stage}-reconcile"
    assert plan.api_function_name == plan.deployment == f"ecs-state-{plan.stage}"
    assert plan.item_rules.read_index is True


PRODUCTION_TOOLS = ("deploy", "destroy", "migrate", "stage", "policies", "policy_files", "reconcile", "redrive")
LOCAL_LAUNCHERS = ("tools.local_api", "tools.local_dynamodb", "tools.replay")


def test_the_production_tools_import_nothing_from_the_local_launchers():
    """Issue 14: what make deploy, destroy, migrate, reconcile and redrive run loads none of the local
    run's modules (moto, DynamoDB Local, the sample events). A fresh interpreter: this one has them."""
    imports = "; ".join(f"import tools.{name}" for name in PRODUCTION_TOOLS)
    loaded = subprocess.run(
        [sys.executable, "-c", f"import json, sys; {imports}; print(json.dumps(sorted(sys.modules)))"],
        cwd=stage.ROOT, capture_output=True, text=True, check=True,
    ).stdout
    modules = set(json.loads(loaded))
    assert {f"tools.{name}" for name in PRODUCTION_TOOLS} <= modules
    assert modules.isdisjoint(LOCAL_LAUNCHERS), sorted(modules & set(LOCAL_LAUNCHERS))


def test_the_local_stage_is_not_deployable():
    with pytest.raises(stage.DeployError, match="'local' is for chalice local only"):
        stage.stage_plan("local")


def test_stage_plan_refuses_an_unknown_stage():
    with pytest.raises(stage.DeployError, match="'staging' is not in .chalice/config.json"):
        stage.stage_plan("staging")


@pytest.mark.parametrize("variable, value, problem", [
    ("ECS_STATE_DEAD_LETTER_QUEUE", "", "must name its dead-letter queue in ECS_STATE_DEAD_LETTER_QUEUE"),
    ("ECS_STATE_RETENTION_DAYS", "1", "ECS_STATE_RETENTION_DAYS must be at least 2"),
    ("ECS_STATE_READ_INDEX", "on", "ECS_STATE_READ_INDEX must be"),
])
def test_stage_plan_refuses_bad_stage_settings_before_anything_runs(tmp_path, variable, value, problem):
    config = json.loads((stage.ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"][variable] = value
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    with pytest.raises(stage.DeployError, match=problem):
        stage.stage_plan("dev", project_dir=tmp_path)


def test_set_up_creates_tables_queue_and_alarm_as_defined(session, plan):
    queue_arn, changes = deploy.set_up(session, plan)

    state = describe_everything(session, plan)
    for spec, name in plan.table_names.items():
        request = spec.create_table_request(name)
        assert state[name]["KeySchema"] == request["KeySchema"]
        assert sorted(state[name]["AttributeDefinitions"], key=str) == sorted(request["AttributeDefinitions"], key=str)
        assert state[name]["BillingMode"] == request["BillingMode"] == "PAY_PER_REQUEST"
        assert state[name]["GSIs"] == [tables.READ_INDEX.name]
        assert state[name]["SSE"]["Status"] == "ENABLED" and state[name]["SSE"]["SSEType"] == "KMS"
        assert state[name]["PITR"] == "ENABLED"
        assert state[name]["TTL"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "cw_expires_at"}
        assert state[name]["Tags"] == [{"Key": "ecs-state:deployment", "Value": plan.deployment}]
        assert f"created table {name}" in changes
    assert state["queue"]["MessageRetentionPeriod"] == "1209600"
    assert state["queue"]["SqsManagedSseEnabled"] == "true"
    assert state["queue"]["QueueArn"] == queue_arn
    [alarm] = state["alarms"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": plan.queue_name}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
    assert alarm["AlarmActions"] == alarm["OKActions"] == []
    assert state["log groups"] == {
        f"/aws/lambda/{name}": 30 for name in (*plan.event_function_names, plan.reconcile_function_name, plan.api_function_name)
    }


def test_second_set_up_changes_nothing(session, plan):
    first_arn, first_changes = deploy.set_up(session, plan)
    before = describe_everything(session, plan)

    second_arn, second_changes = deploy.set_up(session, plan)

    assert first_changes and second_changes == []
    assert second_arn == first_arn
    assert describe_everything(session, plan) == before


def test_set_up_repairs_drifted_queue_alarm_backups_and_expiry(session, plan):
    deploy.set_up(session, plan)
    sqs, dynamodb = session.client("sqs"), session.client("dynamodb")
    url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    task_table = plan.table_names[tables.TASKS]
    dynamodb.update_continuous_backups(
        TableName=task_table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )
    dynamodb.update_time_to_live(TableName=task_table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "cw_expires_at"})
    session.client("cloudwatch").put_metric_alarm(
        AlarmName=plan.alarm_name, **{**deploy.alarm_settings(plan.queue_name), "Threshold": 10.0}
    )
    log_group = plan.log_group_names[0]
    session.client("logs").delete_retention_policy(logGroupName=log_group)

    _, changes = deploy.set_up(session, plan)

    assert sorted(changes) == sorted([
        f"turned on TTL on cw_expires_at of {task_table}",
        f"enabled point-in-time recovery on {task_table}",
        f"set MessageRetentionPeriod on queue {plan.queue_name}",
        f"updated alarm {plan.alarm_name}",
        f"set 30-day retention on {log_group}",
    ])
    state = describe_everything(session, plan)
    assert state["queue"]["MessageRetentionPeriod"] == "1209600"
    assert state[task_table]["PITR"] == "ENABLED"
    assert state[task_table]["TTL"]["TimeToLiveStatus"] == "ENABLED"
    assert state["alarms"][0]["Threshold"] == 0.0
    assert state["log groups"][log_group] == 30


def create_docs_example_table(dynamodb, name, spec=tables.TASKS):
    """The ECS Developer Guide's table: its key only, provisioned, untagged."""
    request = spec.create_table_request(name, read_index=False)
    del request["BillingMode"]
    dynamodb.create_table(**request, ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})


def ensure_table(dynamodb, spec, name, confirm=yes, rules=None, options=migrate.DEPLOY, now=None):
    plan = stage.stage_plan("prod")
    return migrate.ensure_tables(dynamodb, {spec: name}, rules or plan.item_rules, plan.deployment, options, confirm,
                                 pause=lambda seconds: None, now=now)


def test_the_docs_example_table_keeps_its_billing_and_gains_index_expiry_and_backups(session):
    dynamodb = session.client("dynamodb")
    create_docs_example_table(dynamodb, "ECSTaskState")
    shown = []

    changes = ensure_table(dynamodb, tables.TASKS, "ECSTaskState", confirm=lambda lines: shown.extend(lines()) or True)

    assert shown == [
        "ECSTaskState: add index cw_listing-cw_listing_key-index (provisioned like the table: 5 read and 5 write capacity units)",
        "ECSTaskState: add cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to the items stored without them (a scan of the table)",
        "ECSTaskState: 0 of 0 items lack cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at",
        "ECSTaskState: turn on TTL on cw_expires_at",
        "ECSTaskState: encrypt with the AWS managed KMS key",
        "ECSTaskState: turn on point-in-time recovery",
    ]
    assert changes == [
        "created index cw_listing-cw_listing_key-index on ECSTaskState",  # (the table is empty: no item to backfill)
        "turned on TTL on cw_expires_at of ECSTaskState",
        "encrypted table ECSTaskState with KMS",
        "enabled point-in-time recovery on ECSTaskState",
    ]
    table = dynamodb.describe_table(TableName="ECSTaskState")["Table"]
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
    assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
    [index] = table["GlobalSecondaryIndexes"]
    assert index["ProvisionedThroughput"]["ReadCapacityUnits"] == index["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
    assert dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"]).get("Tags", []) == []  # still not ecs-state's


def test_a_table_ecs_state_did_not_create_is_not_changed_without_confirmation(session):
    dynamodb = session.client("dynamodb")
    create_docs_example_table(dynamodb, "ECSTaskState")

    with pytest.raises(stage.DeployError, match=(
        "not changing tables ecs-state did not create without confirmation: "
        "ECSTaskState: add index cw_listing-cw_listing_key-index .*; ECSTaskState: turn on TTL on cw_expires_at; .*YES=1"
    )):
        ensure_table(dynamodb, tables.TASKS, "ECSTaskState", confirm=migrate.confirm_on_terminal(False))

    table = dynamodb.describe_table(TableName="ECSTaskState")["Table"]
    assert not table.get("GlobalSecondaryIndexes") and "SSEDescription" not in table
    assert dynamodb.describe_time_to_live(TableName="ECSTaskState")["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


class Terminal:
    def __init__(self, answer):
        self.answer = answer

    def isatty(self):
        return True

    def readline(self):
        return self.answer


@pytest.mark.parametrize("answer, goes_ahead", [("yes\n", True), ("y\n", True), ("\n", False), ("no\n", False)])
def test_confirmation_on_a_terminal_lists_the_changes_and_takes_a_yes(answer, goes_ahead, capsys):
    confirm = migrate.confirm_on_terminal(False, stdin=Terminal(answer))
    assert confirm(lambda: ["ECSTaskState: turn on TTL on cw_expires_at"]) is goes_ahead
    out = capsys.readouterr().out
    assert "ecs-state did not create these tables" in out and "  - ECSTaskState: turn on TTL on cw_expires_at" in out
    # --yes asks nothing, and without a terminal nothing is asked: neither lists (scans) the tables.
    assert migrate.confirm_on_terminal(True, stdin=Terminal("no\n"))(lambda: pytest.fail("listed")) is True
    assert migrate.confirm_on_terminal(False, stdin=io.StringIO("yes\n"))(lambda: pytest.fail("listed")) is False


@pytest.mark.parametrize("attribute_type", ["N", "B"])
def test_a_key_of_another_type_is_refused_before_any_change(session, attribute_type):
    dynamodb = session.client("dynamodb")
    dynamodb.create_table(
        TableName="ECSTaskState", KeySchema=[{"AttributeName": "taskArn", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "taskArn", "AttributeType": attribute_type}], BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(stage.DeployError, match=f"table ECSTaskState defines taskArn as type {attribute_type}, ecs-state needs S"):
        ensure_table(dynamodb, tables.TASKS, "ECSTaskState")
    assert not dynamodb.describe_table(TableName="ECSTaskState")["Table"].get("GlobalSecondaryIndexes")


def test_existing_table_with_another_key_is_refused(session):
    dynamodb = session.client("dynamodb")
    dynamodb.create_table(
        TableName="wrong-key",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(stage.DeployError, match="table wrong-key has key .*taskArn"):
        ensure_table(dynamodb, tables.TASKS, "wrong-key")
    assert "SSEDescription" not in dynamodb.describe_table(TableName="wrong-key")["Table"]


def test_a_table_expiring_items_on_another_attribute_is_refused_before_any_change(session):
    dynamodb = session.client("dynamodb")
    create_docs_example_table(dynamodb, "ECSTaskState")
    dynamodb.update_time_to_live(TableName="ECSTaskState", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    with pytest.raises(stage.DeployError, match="table ECSTaskState has TTL on ttl; ecs-state needs it on cw_expires_at"):
        ensure_table(dynamodb, tables.TASKS, "ECSTaskState")
    assert not dynamodb.describe_table(TableName="ECSTaskState")["Table"].get("GlobalSecondaryIndexes")


def test_an_older_ecs_state_table_gets_the_read_index_then_loses_the_old_one(session):
    dynamodb = session.client("dynamodb")
    create_older_ecs_state_table(dynamodb, "tasks")
    dynamodb.put_item(TableName="tasks", Item={
        "taskArn": {"S": "arn:aws:ecs:us-east-1:111122223333:task/c/1"}, "version": {"N": "3"},
        "clusterArn": {"S": "arn:aws:ecs:us-east-1:111122223333:cluster/c"}, "lastStatus": {"S": "RUNNING"},
    })

    changes = ensure_table(dynamodb, tables.TASKS, "tasks", options=migrate.MIGRATE)

    assert changes == [
        "created index cw_listing-cw_listing_key-index on tasks",
        "added cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to 1 of 1 items of tasks",
        "deleted index clusterArn-lastStatus-index from tasks",
        "turned on TTL on cw_expires_at of tasks",
    ]
    indexes = dynamodb.describe_table(TableName="tasks")["Table"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == ["cw_listing-cw_listing_key-index"]
    item = dynamodb.get_item(TableName="tasks", Key={"taskArn": {"S": "arn:aws:ecs:us-east-1:111122223333:task/c/1"}})["Item"]
    assert item["cw_phase"] == {"S": "open"} and "cw_expires_at" not in item


def test_a_stage_turning_the_read_index_off_drops_it(session):
    dynamodb = session.client("dynamodb")
    plan = stage.stage_plan("dev")
    deploy.set_up(session, plan)
    name = plan.table_names[tables.TASKS]

    changes = ensure_table(dynamodb, tables.TASKS, name, rules=plan.item_rules._replace(read_index=False))

    assert changes == [f"deleted index cw_listing-cw_listing_key-index from {name}"]
    assert not dynamodb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes")


def create_function(session, name: str, environment=None, timeout: int = 3) -> str:
    iam = session.client("iam")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))["Role"]["Arn"]
    return session.client("lambda").create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
        Environment={"Variables": dict(environment or {})}, Timeout=timeout,
    )["FunctionArn"]


def create_functions(session, plan):
    """What `chalice deploy` (or terraform apply) leaves, as far as the later steps look: every
    function, with the stage's settings and timeouts, replacing what was deployed."""
    client = session.client("lambda")
    for name in plan.function_names:
        timeout = 300 if name == plan.reconcile_function_name else 30
        try:
            client.update_function_configuration(
                FunctionName=name, Environment={"Variables": dict(plan.environment)}, Timeout=timeout)
        except client.exceptions.ResourceNotFoundException:
            create_function(session, name, plan.environment, timeout)


def lambda_as_aws_answers(client):
    """Lambda answers GetFunctionEventInvokeConfig with "OnSuccess": {} and "OnFailure": {} for a
    destination not set (moto leaves them out), and PutFunctionEventInvokeConfig replaces the
    config (moto adds a second one, and keeps answering with the first)."""

    def replace(params, **kwargs):
        try:
            client.delete_function_event_invoke_config(FunctionName=params["FunctionName"])
        except client.exceptions.ResourceNotFoundException:
            pass

    def add_empty_destinations(parsed, **kwargs):
        destinations = parsed.setdefault("DestinationConfig", {})
        destinations.setdefault("OnSuccess", {})
        destinations.setdefault("OnFailure", {})

    client.meta.events.register("after-call.lambda.GetFunctionEventInvokeConfig", add_empty_destinations)
    client.meta.events.register("before-parameter-build.lambda.PutFunctionEventInvokeConfig", replace)
    return client


def test_event_invoke_configs_send_failures_to_the_queue_once(session, plan):
    queue_arn, _ = deploy.set_up(session, plan)
    create_functions(session, plan)
    client = lambda_as_aws_answers(session.client("lambda"))

    changes = deploy.apply_event_invoke_configs(client, plan, queue_arn)

    assert changes == [f"set retries and OnFailure destination of {name}" for name in plan.event_function_names] + [
        f"set retries of {plan.reconcile_function_name} to 0: the next scheduled pass follows a failed one"
    ]
    for name in plan.event_function_names:
        config = client.get_function_event_invoke_config(FunctionName=name)
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
        assert config["MaximumRetryAttempts"] == deploy.EVENT_INVOKE_MAX_RETRY_ATTEMPTS
        assert config["MaximumEventAgeInSeconds"] == deploy.EVENT_INVOKE_MAX_EVENT_AGE_SECONDS
    config = client.get_function_event_invoke_config(FunctionName=plan.reconcile_function_name)
    assert config["MaximumRetryAttempts"] == 0
    assert config["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    # Lambda's empty "OnSuccess": {} is no reason to write again (it was, on every deploy).
    assert deploy.apply_event_invoke_configs(client, plan, queue_arn) == []


def test_event_invoke_configs_keep_what_ecs_state_does_not_own(session):
    plan = stage.stage_plan("dev")
    queue_arn, _ = deploy.set_up(session, plan)
    create_functions(session, plan)
    client = lambda_as_aws_answers(session.client("lambda"))
    name = plan.event_function_names[0]
    session.client("sqs").create_queue(QueueName="audit")
    audit_arn = deploy.queue_arn(session.client("sqs"), "audit")
    client.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, DestinationConfig={"OnSuccess": {"Destination": audit_arn}}
    )

    deploy.apply_event_invoke_configs(client, plan, queue_arn)

    config = client.get_function_event_invoke_config(FunctionName=name)
    assert config["MaximumRetryAttempts"] == deploy.EVENT_INVOKE_MAX_RETRY_ATTEMPTS
    assert config["DestinationConfig"]["OnSuccess"] == {"Destination": audit_arn}
    assert config["DestinationConfig"]["OnFailure"] == {"Destination": queue_arn}


def test_event_invoke_configs_need_the_functions_and_the_queue(session, plan):
    with pytest.raises(stage.DeployError, match=f"queue {plan.queue_name} does not exist: run the set-up step"):
        deploy.queue_arn(session.client("sqs"), plan.queue_name)
    queue_arn, _ = deploy.set_up(session, plan)
    with pytest.raises(stage.DeployError, match=f"function {plan.event_function_names[0]} does not exist"):
        deploy.apply_event_invoke_configs(session.client("lambda"), plan, queue_arn)


def test_the_reconcile_pass_is_started_asynchronously_with_a_scheduled_event(session, plan):
    create_functions(session, plan)
    client = session.client("lambda")
    calls = []
    client.meta.events.register("before-call.lambda.Invoke", lambda params, **kwargs: calls.append(params))

    changes = deploy.start_reconcile_pass(client, plan.reconcile_function_name)

    assert changes == [f"started a reconcile pass: {plan.reconcile_function_name} fills the tables from the ECS API now; "
                       f"its summary is logged to /aws/lambda/{plan.reconcile_function_name}"]
    [call] = calls
    assert call["headers"]["X-Amz-Invocation-Type"] == "Event"
    event = json.loads(call["body"])
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert (event["source"], event["detail-type"], event["region"]) == ("aws.events", "Scheduled Event", REGION)
    from chalice.app import CloudWatchEvent

    assert CloudWatchEvent(event, None).to_dict() == event  # what the reconcile handler is given


@pytest.mark.parametrize("stage_name", ["dev"])
def test_the_alarm_notifies_a_topic_given_by_arn(session, stage_name):
    plan = stage.stage_plan(stage_name)
    topic = session.client("sns").create_topic(Name="ops")["TopicArn"]

    _, changes = deploy.set_up(session, plan, notify=topic)

    [alarm] = describe_everything(session, plan)["alarms"]
    assert alarm["AlarmActions"] == alarm["OKActions"] == [topic]
    assert deploy.set_up(session, plan, notify=topic)[1] == []
    assert deploy.set_up(session, plan)[1] == []  # without NOTIFY, the actions stay
    assert describe_everything(session, plan)["alarms"][0]["AlarmActions"] == [topic]


def test_the_alarm_notifies_an_email_through_a_topic_of_its_own(session):
    plan = stage.stage_plan("dev")

    _, changes = deploy.set_up(session, plan, notify="ops@example.com")

    topic_name = "ecs-state-dev-alarms"
    assert f"created topic {topic_name}" in changes
    assert f"subscribed ops@example.com to topic {topic_name}: confirm with the link in the e-mail AWS sends" in changes
    sns = session.client("sns")
    [topic] = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{topic_name}")]
    assert [s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]] == ["ops@example.com"]
    assert describe_everything(session, plan)["alarms"][0]["AlarmActions"] == [topic]
    assert deploy.set_up(session, plan, notify="ops@example.com")[1] == []


def test_a_notification_target_that_is_neither_topic_nor_email_is_refused(session):
    with pytest.raises(stage.DeployError, match="NOTIFY must be an SNS topic ARN or an e-mail address, got 'ops'"):
        deploy.set_up(session, stage.stage_plan("dev"), notify="ops")


def test_tear_down_keeps_tables_unless_asked(session, plan):
    deploy.set_up(session, plan, notify="ops@example.com")

    deleted = destroy.tear_down(session, plan)

    assert deleted == [f"deleted alarm {plan.alarm_name}", f"deleted topic {plan.deployment}-alarms",
                       f"deleted queue {plan.queue_name}"] + [f"deleted log group {name}" for name in plan.log_group_names]
    assert describe_log_groups(session) == []
    dynamodb = session.client("dynamodb")
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(plan.table_names.values())
    assert destroy.tear_down(session, plan) == []

    deleted = destroy.tear_down(session, plan, delete_tables=True)

    assert deleted == [f"deleted table {name}" for name in plan.table_names.values()]
    assert dynamodb.list_tables()["TableNames"] == []


def test_tear_down_deletes_only_the_tables_ecs_state_created_for_the_stage(session):
    plan = stage.stage_plan("prod")
    dynamodb = session.client("dynamodb")
    create_docs_example_table(dynamodb, "ECSTaskState")  # the docs example's, used by prod
    deploy.set_up(session, plan, confirm=yes)  # creates ECSCtrInstanceState, tagged

    deleted = destroy.tear_down(session, plan, delete_tables=True)

    assert deleted[-2:] == [
        "kept table ECSTaskState: ecs-state did not create it (no ecs-state:deployment tag), "
        "e.g. the docs example's; delete it yourself if its data may go",
        "deleted table ECSCtrInstanceState",
    ]
    assert dynamodb.list_tables()["TableNames"] == ["ECSTaskState"]


def test_destroy_refuses_while_events_wait_in_the_queue_unless_forced(session, monkeypatch):
    monkeypatch.setattr(destroy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    plan = stage.stage_plan("dev")
    deploy.set_up(session, plan)
    sqs = session.client("sqs")
    url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": n}))
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)  # one in flight counts too

    with pytest.raises(stage.DeployError, match=(
        'queue ecs-state-dev-dead-letters holds 3 events ecs-state could not record: redrive them first '
        r'\(docs/deploy.md, "Redriving the dead-letter queue"\), or delete them with it: make destroy STAGE=dev FORCE=1'
    )):
        destroy.main(["--stage", "dev"])
    assert sqs.list_queues()["QueueUrls"] == [url]

    assert destroy.main(["--stage", "dev", "--without-chalice-delete", "--force"]) == 0
    assert sqs.list_queues().get("QueueUrls", []) == []


def test_make_deploy_runs_set_up_chalice_deploy_invoke_configs_then_a_pass(session, monkeypatch, capsys):
    """The whole `make deploy` sequence, with `chalice deploy` stood in for by creating the functions."""
    plan = stage.stage_plan("dev")
    calls = []

    def fake_chalice(*args, **options):
        calls.append(args)
        assert session.client("dynamodb").list_tables()["TableNames"], "chalice deploy ran before the set-up step"
        create_functions(session, plan)

    monkeypatch.setattr(deploy, "run_chalice", fake_chalice)

    assert deploy.main(["--stage", "dev"], pause=pytest.fail) == 0  # nothing to wait for

    assert calls == [("deploy", "--stage", "dev")]
    queue_arn = deploy.queue_arn(session.client("sqs"), plan.queue_name)
    for name in plan.event_function_names:
        config = session.client("lambda").get_function_event_invoke_config(FunctionName=name)
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    out = capsys.readouterr().out
    assert f"set retries and OnFailure destination of {plan.event_function_names[0]}" in out
    assert f"started a reconcile pass: {plan.reconcile_function_name}" in out

    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: calls.append(args))
    assert deploy.main(["--stage", "dev"], pause=pytest.fail) == 0  # the code replaced wrote every field
    out = capsys.readouterr().out
    assert out.count("  - nothing to change") == 2  # set-up and event-invoke-configs
    for name in plan.table_names.values():
        assert f"  - {name}: 0 items read (1 requests, " in out and "repaired 0 that lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at" in out


def test_terraform_steps_and_destroy_without_chalice(session, monkeypatch):
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    monkeypatch.setattr(destroy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    plan = stage.stage_plan("dev")

    assert deploy.main(["--stage", "dev", "--only", "set-up"]) == 0
    create_functions(session, plan)  # what terraform apply creates
    assert deploy.main(["--stage", "dev", "--only", "event-invoke-configs"]) == 0
    assert destroy.main(["--stage", "dev", "--without-chalice-delete", "--delete-tables"]) == 0

    assert session.client("dynamodb").list_tables()["TableNames"] == []
    assert session.client("sqs").list_queues().get("QueueUrls", []) == []


# -- what the code an upgrade replaces writes -----------------------------------------------------


class OldWriter:
    """Whole items by PutItem without cw_phase or cw_expires_at (even over an item that had them): as
    an ecs-state older than those fields wrote them (cw_version, cw_id, cw_time and the detail), or,
    ``docs_example``, as the docs example's Lambda does (cw_version and the detail only)."""

    def __init__(self, session, plan, docs_example=False):
        self.client, self.plan, self.docs_example = session.client("dynamodb"), plan, docs_example

    def write(self, event):
        spec = tables.BY_DETAIL_TYPE[event["detail-type"]]
        envelope = {} if self.docs_example else {"cw_id": event["id"], "cw_time": event["time"]}
        item = {"cw_version": event["version"], **envelope, **event["detail"]}
        self.client.put_item(TableName=self.plan.table_names[spec],
                             Item={name: attributes.encode(value)[0] for name, value in item.items()})


def every_item(session, plan):
    """The items of the stage's tables (those that exist), decoded."""
    dynamodb = session.client("dynamodb")
    existing = dynamodb.list_tables()["TableNames"]
    return [(spec, {name: attributes.decode(value) for name, value in item.items()})
            for spec, name in plan.table_names.items() if name in existing
            for item in dynamodb.scan(TableName=name)["Items"]]


# -- the history of the docs example's tables (issue 13, point 8) ---------------------------------


def with_history(session, plan):
    """The docs example's task table with three tasks stopped today, 30 and 90 days ago, one running."""
    create_docs_example_table(session.client("dynamodb"), plan.table_names[tables.TASKS])
    writer = OldWriter(session, plan, docs_example=True)
    for n, days_ago in enumerate((0, 30, 90)):
        writer.write(task_event(4, task_id=f"{n:032x}", lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME - days_ago * DAY)))
    writer.write(task_event(2, task_id="f" * 32))


def utc(epoch_seconds):
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch_seconds))


def test_the_confirmation_says_how_many_items_will_expire_when_and_what_the_floor_keeps(session):
    plan = stage.stage_plan("prod")
    with_history(session, plan)
    shown = []

    ensure_table(session.client("dynamodb"), tables.TASKS, "ECSTaskState",
                 confirm=lambda lines: shown.extend(lines()) or True, now=EVENT_TIME)

    floor = lifecycle.expires_at(EVENT_TIME, plan.item_rules.retention_seconds)
    assert shown[1:4] == [
        "ECSTaskState: add cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at to the items stored without them (a scan of the table)",
        "ECSTaskState: 4 of 4 items lack cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at",
        f"ECSTaskState: 3 finished items will get cw_expires_at on {utc(floor)}, none sooner than 16 days after "
        "this upgrade (TTL deletes an item within days of its date); dated from when they finished "
        "(EXPIRE_HISTORY=yes, --expire-history), 2 of them would be deleted at once",
    ]
    assert "ECSTaskState: turn on point-in-time recovery" in shown  # make deploy does: no advice needed
    assert not [line for line in shown if "point-in-time recovery is off" in line]
    expiries = [item["cw_expires_at"] for spec, item in every_item(session, plan) if "cw_expires_at" in item]
    assert expiries == [floor] * 3  # what it said is what it did


def test_asked_to_expire_history_make_migrate_says_what_ttl_will_delete_and_advises_backups(session):
    plan = stage.stage_plan("prod")
    with_history(session, plan)
    shown = []

    ensure_table(session.client("dynamodb"), tables.TASKS, "ECSTaskState", options=migrate.MIGRATE._replace(
        expire_history=True), confirm=lambda lines: shown.extend(lines()) or True, now=EVENT_TIME)

    retention = plan.item_rules.retention_seconds
    assert shown[2:5] == [
        "ECSTaskState: 4 of 4 items lack cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at",
        f"ECSTaskState: 3 finished items will get cw_expires_at dated from when they finished (--expire-history), "
        f"from {utc(lifecycle.expires_at(EVENT_TIME - 90 * DAY, retention))} to {utc(lifecycle.expires_at(EVENT_TIME, retention))}; "
        "2 of them are past, and TTL deletes those within days",
        "ECSTaskState: point-in-time recovery is off, so nothing TTL deletes can be restored: turn it on before "
        "that (aws dynamodb update-continuous-backups --table-name ECSTaskState "
        "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true)",
    ]
    expiries = sorted(item["cw_expires_at"] for spec, item in every_item(session, plan) if "cw_expires_at" in item)
    assert expiries == [lifecycle.expires_at(EVENT_TIME - days * DAY, retention) for days in (90, 30, 0)]


# -- an upgrade while the old code writes (issue 13, point 1) -------------------------------------


def deployed_by_an_older_ecs_state(session, plan) -> OldWriter:
    """What an older `make deploy` left: untagged tables with the index keyed by status and no TTL,
    items without lifecycle fields, and event functions (30 s) without the settings that came with
    those fields (nor a reconcile function: it came with them)."""
    dynamodb = session.client("dynamodb")
    for spec, name in plan.table_names.items():
        create_older_ecs_state_table(dynamodb, name, spec)
    older = {name: value for name, value in plan.environment.items() if name not in deploy.LIFECYCLE_SETTINGS}
    for name in (*plan.event_function_names, plan.api_function_name):
        create_function(session, name, older, timeout=30)
    writer = OldWriter(session, plan)
    writer.write(task_event(3, task_id="a" * 32))
    writer.write(task_event(5, task_id="b" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME - 90 * DAY)))
    writer.write(container_instance_event(2))
    return writer


def assert_every_item_has_its_lifecycle_fields(session, plan, upgraded_at):
    items = every_item(session, plan)
    for spec, item in items:
        finished = item.get(spec.status_field) in spec.finished_statuses
        phase = "finished" if finished else "open"
        assert item.get("cw_phase") == phase, item
        assert item.get("cw_listing") == "all" and item["cw_listing_key"].startswith(
            f"{item['clusterArn']}\x1f{phase}\x1f"), item  # in the read index
        if finished:
            assert item["cw_expires_at"] >= lifecycle.expires_at(upgraded_at, plan.item_rules.retention_seconds), item
    return items


def record_index_changes(session, timeline):
    """Each index UpdateTable creates or deletes, as "create <index>" or "delete <index>", in ``timeline``."""
    def on_update(params, **kwargs):
        for change in params.get("GlobalSecondaryIndexUpdates", []):
            for kind, index in change.items():
                timeline.append(f"{kind.lower()} {index['IndexName']}")

    session.events.register("before-parameter-build.dynamodb.UpdateTable", on_update)


def test_make_deploy_leaves_no_item_without_its_lifecycle_fields_whatever_the_old_code_wrote(session, monkeypatch,
                                                                                               capsys):
    plan = stage.stage_plan("dev")
    writer = deployed_by_an_older_ecs_state(session, plan)
    timeline = []

    def after_time_to_live(**kwargs):  # the task table's comes after its backfill, the first of the two
        timeline.append("TTL")
        if timeline.count("TTL") == 1:  # the old code writes after the set-up step backfilled ...
            writer.write(task_event(4, task_id="a" * 32))  # over an item the backfill gave its fields
            writer.write(task_event(1, task_id="c" * 32))  # a new task

    session.events.register("after-call.dynamodb.UpdateTimeToLive", after_time_to_live)
    session.events.register("before-call.dynamodb.Scan", lambda **kwargs: timeline.append("scan"))
    record_index_changes(session, timeline)
    monkeypatch.setattr(boto3.session, "Session", lambda *args, **kwargs: session)  # main's, with these hooks

    def chalice_deploy(*args, **options):  # ... and while chalice deploy replaces it
        writer.write(task_event(6, task_id="b" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)))
        writer.write(task_event(2, task_id="d" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)))
        create_functions(session, plan)
        timeline.append("chalice deploy")

    monkeypatch.setattr(deploy, "run_chalice", chalice_deploy)

    assert deploy.main(["--stage", "dev", "--yes"], pause=lambda seconds: timeline.append(seconds), now=EVENT_TIME) == 0

    deployed = timeline.index("chalice deploy")
    since_deployed = timeline[deployed:]
    assert len(assert_every_item_has_its_lifecycle_fields(session, plan, EVENT_TIME)) == 5
    # The repair scanned each table once the old code could write no more: its update done, then
    # its timeout (30 s) and the margin; then the old index went, which that code read until replaced.
    assert timeline[:deployed].count("TTL") == 2
    assert [change for change in timeline[:deployed] if " " in str(change)] == [
        "create cw_listing-cw_listing_key-index"] * 2
    assert since_deployed == ["chalice deploy", 35, "scan", "scan", "delete clusterArn-lastStatus-index",
                              "delete clusterArn-status-index"]
    out = capsys.readouterr().out
    assert "waiting for the code chalice deploy replaced, which wrote items without them, to stop" in out
    assert "  - ecs-state-dev-tasks: 4 items read (1 requests, " in out
    assert "repaired 4 that lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at" in out
    assert "that no code this run replaced explains" not in out  # the code just replaced wrote them: no other writer


def test_a_second_make_deploy_repairs_what_another_writer_stripped_since_and_says_so(session, monkeypatch, capsys):
    plan = stage.stage_plan("dev")
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: create_functions(session, plan))
    assert deploy.main(["--stage", "dev"], pause=pytest.fail, now=EVENT_TIME) == 0
    # A writer ecs-state does not replace (the docs example's Lambda, its rule left on) keeps writing.
    docs_example = OldWriter(session, plan, docs_example=True)
    docs_example.write(task_event(7, task_id="e" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)))
    docs_example.write(container_instance_event(3))
    capsys.readouterr()

    assert deploy.main(["--stage", "dev"], pause=pytest.fail, now=EVENT_TIME + DAY) == 0

    assert len(assert_every_item_has_its_lifecycle_fields(session, plan, EVENT_TIME + DAY)) == 2
    out = capsys.readouterr().out
    for name in plan.table_names.values():
        assert (f"  - {name}: 1 items lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at that no code this run replaced explains "
                "(1 with neither cw_source nor cw_time, as no ecs-state writes them: the docs example's Lambda "
                "writes cw_version and the detail only): another writer still writes whole items to this table, "
                "most likely the docs example's Lambda") in out


def test_a_first_make_deploy_warns_when_the_docs_examples_lambda_still_writes(session, monkeypatch, capsys):
    """make deploy STAGE=prod YES=1 on the docs example's tables, its rule left on: its Lambda writes
    while chalice deploy runs, and after. No ecs-state code was replaced: nothing explains its items."""
    plan = stage.stage_plan("prod")
    for spec, name in plan.table_names.items():
        create_docs_example_table(session.client("dynamodb"), name, spec)
    docs_example = OldWriter(session, plan, docs_example=True)
    docs_example.write(task_event(2, task_id="a" * 32))  # its history

    def chalice_deploy(*args, **options):
        docs_example.write(task_event(3, task_id="a" * 32))  # over an item the set-up step backfilled
        docs_example.write(container_instance_event(2))
        create_functions(session, plan)

    monkeypatch.setattr(deploy, "run_chalice", chalice_deploy)

    assert deploy.main(["--stage", "prod", "--yes"], pause=pytest.fail, now=EVENT_TIME) == 0

    out = capsys.readouterr().out
    assert "repaired 1 that lacked" in out
    for name in plan.table_names.values():
        assert (f"  - {name}: 1 items lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at that no code this run replaced explains "
                "(1 with neither cw_source nor cw_time, as no ecs-state writes them") in out
    assert "aws events disable-rule --name <name>" in out


def test_the_repair_tells_the_items_of_the_code_it_replaced_from_another_writers(session, monkeypatch, capsys):
    """An older ecs-state is replaced while the docs example's Lambda also writes to its tables: only
    the Lambda's items (neither cw_source nor cw_time) are unexplained."""
    plan = stage.stage_plan("dev")
    older = deployed_by_an_older_ecs_state(session, plan)
    docs_example = OldWriter(session, plan, docs_example=True)

    def chalice_deploy(*args, **options):
        older.write(task_event(4, task_id="a" * 32))
        docs_example.write(task_event(2, task_id="c" * 32))
        docs_example.write(task_event(2, task_id="d" * 32))
        create_functions(session, plan)

    monkeypatch.setattr(deploy, "run_chalice", chalice_deploy)

    assert deploy.main(["--stage", "dev", "--yes"], pause=lambda seconds: None, now=EVENT_TIME) == 0

    out = capsys.readouterr().out
    task_table = plan.table_names[tables.TASKS]
    assert "repaired 3 that lacked" in out
    assert (f"  - {task_table}: 2 items lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at that no code this run replaced explains "
            "(2 with neither cw_source nor cw_time") in out
    assert out.count("that no code this run replaced explains") == 1


def test_the_wait_covers_the_replaced_functions_that_wrote_items_without_their_fields(session):
    plan = stage.stage_plan("dev")
    client = session.client("lambda")
    assert deploy.replaced_writers(client, plan) == {}  # a first deploy replaces nothing
    create_functions(session, plan)
    assert deploy.replaced_writers(client, plan) == {}  # this ecs-state writes them: nothing to wait for
    index_off = {**plan.environment, "ECS_STATE_READ_INDEX": "disabled"}  # a stage turning its read index on
    client.update_function_configuration(FunctionName=plan.reconcile_function_name, Environment={"Variables": index_off})
    assert deploy.replaced_writers(client, plan) == {
        plan.reconcile_function_name: deploy.ReplacedWriter(300, migrate.PHASE_OFF_ECS_STATE)}
    keeping_it_off = dataclasses.replace(plan, environment=index_off)
    assert deploy.replaced_writers(client, keeping_it_off) == {}  # ... but not one keeping it off
    pauses = []
    assert deploy.wait_for_replaced_code(client, deploy.replaced_writers(client, plan), pauses.append) == 305
    assert pauses == [305]


def test_a_deployed_writer_is_judged_by_its_read_index_alone():
    """Another setting of the deployed function, bad by this code's rules (a value edited by hand,
    or an older ecs-state's), does not make it a writer that strips the lifecycle fields."""
    rules = stage.stage_plan("dev").config.rules
    assert deploy.writes_lifecycle_fields({"ECS_STATE_READ_INDEX": "enabled", "ECS_STATE_ECS_CALLS_PER_SECOND": "50"}, rules)
    assert not deploy.writes_lifecycle_fields({"ECS_STATE_READ_INDEX": "disabled", "ECS_STATE_RETENTION_DAYS": "1"}, rules)
    assert not deploy.writes_lifecycle_fields({"ECS_STATE_READ_INDEX": "sometimes"}, rules)


# -- expiries an older ecs-state dated from the retention alone (issue 13 review, point 1) ----------


def test_every_make_deploy_raises_the_expiries_an_older_ecs_state_dated_sooner(session, monkeypatch, capsys):
    """The ecs-state before the delivery horizon wrote finished + retention + 1 h; the repair raises it."""
    plan = stage.stage_plan("dev")
    deploy.set_up(session, plan)  # the tables, as that ecs-state made them: already upgraded
    stopped_at = EVENT_TIME - 3600
    event = task_event(5, lastStatus="STOPPED", stoppedAt=iso(stopped_at))
    item = {"cw_version": "0", "cw_time": event["time"], "cw_source": "event", **event["detail"],
            "cw_phase": "finished", "cw_expires_at": int(stopped_at) + 14 * DAY + 3600}
    task_table = plan.table_names[tables.TASKS]
    session.client("dynamodb").put_item(TableName=task_table,
                                        Item={name: attributes.encode(value)[0] for name, value in item.items()})
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: create_functions(session, plan))

    assert deploy.main(["--stage", "dev"], pause=pytest.fail, now=EVENT_TIME) == 0

    assert f"  - {task_table}: raised the expiry of 1 items stored before this version" in capsys.readouterr().out
    [(_, stored)] = every_item(session, plan)
    assert stored["cw_expires_at"] == lifecycle.expires_at(stopped_at, plan.item_rules.retention_seconds)


# -- from the previous read index (PHASE_INDEX) to READ_INDEX (issue 15, point 5) -----------------------


class PreviousWriter:
    """The recorder and reconciler of the version before READ_INDEX: whole items with cw_phase and
    cw_expires_at, but no cw_listing, cw_listing_key or cw_stop_code."""

    def __init__(self, session, plan):
        self.client, self.plan = session.client("dynamodb"), plan

    def write(self, event):
        spec = tables.BY_DETAIL_TYPE[event["detail-type"]]
        self.client.put_item(TableName=self.plan.table_names[spec], Item=phase_index_item(event, self.plan.item_rules))


def deployed_by_the_previous_version(session, plan, tagged=True) -> PreviousWriter:
    """What the previous `make deploy` left: tagged tables with PHASE_INDEX and TTL, its items, and its
    functions, with the same settings as this version's."""
    dynamodb = session.client("dynamodb")
    for spec, name in plan.table_names.items():
        create_phase_index_table(dynamodb, name, spec)
        if tagged:
            dynamodb.tag_resource(ResourceArn=dynamodb.describe_table(TableName=name)["Table"]["TableArn"],
                                  Tags=[{"Key": "ecs-state:deployment", "Value": plan.deployment}])
    create_functions(session, plan)
    writer = PreviousWriter(session, plan)
    writer.write(task_event(3, task_id="a" * 32, group="service:web"))
    writer.write(task_event(5, task_id="b" * 32, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME),
                            stopCode="EssentialContainerExited"))
    writer.write(container_instance_event(2))
    return writer


def test_make_deploy_moves_the_previous_versions_stage_to_the_read_index_dropping_its_index_last(session, monkeypatch,
                                                                                                capsys):
    """The read index is added and filled before chalice deploy; the previous code writes on (its
    items lack the read index's attributes) until it is replaced and stopped; then the repair fills
    what it wrote, and only then does PHASE_INDEX go: its readers, and the new code's until then,
    list from it."""
    plan = stage.stage_plan("dev")
    previous = deployed_by_the_previous_version(session, plan)
    timeline = []
    session.events.register("before-call.dynamodb.Scan", lambda **kwargs: timeline.append("scan"))
    record_index_changes(session, timeline)
    monkeypatch.setattr(boto3.session, "Session", lambda *args, **kwargs: session)

    def chalice_deploy(*args, **options):
        indexes = {name: sorted(i["IndexName"] for i in session.client("dynamodb").describe_table(
            TableName=name)["Table"]["GlobalSecondaryIndexes"]) for name in plan.table_names.values()}
        assert all(found == ["clusterArn-cw_phase-index", "cw_listing-cw_listing_key-index"] for found in indexes.values())
        previous.write(task_event(6, task_id="a" * 32, group="service:web", lastStatus="STOPPED",  # over a backfilled one
                                  stoppedAt=iso(EVENT_TIME), stopCode="UserInitiated"))
        previous.write(task_event(1, task_id="c" * 32, group="service:worker"))
        create_functions(session, plan)
        timeline.append("chalice deploy")

    monkeypatch.setattr(deploy, "run_chalice", chalice_deploy)

    assert deploy.main(["--stage", "dev"], pause=lambda seconds: timeline.append(seconds), now=EVENT_TIME) == 0

    deployed = timeline.index("chalice deploy")
    assert timeline[:deployed] == ["create cw_listing-cw_listing_key-index", "scan"] * 2
    # The previous version's functions have this one's settings: the tables' PHASE_INDEX says that code
    # may be the previous one, so the repair waits for the reconcile function's timeout (300 s) and the margin.
    assert timeline[deployed:] == ["chalice deploy", 305, "scan", "scan", "delete clusterArn-cw_phase-index",
                                   "delete clusterArn-cw_phase-index"]
    assert len(assert_every_item_has_its_lifecycle_fields(session, plan, EVENT_TIME)) == 4
    for name in plan.table_names.values():
        assert [index["IndexName"] for index in session.client("dynamodb").describe_table(
            TableName=name)["Table"]["GlobalSecondaryIndexes"]] == ["cw_listing-cw_listing_key-index"]
    out = capsys.readouterr().out
    assert ("  - kept index clusterArn-cw_phase-index on ecs-state-dev-tasks for the repair step to delete, once the "
            "code it replaces has stopped") in out
    assert "repaired 2 that lacked cw_phase, cw_listing, cw_listing_key, cw_stop_code and cw_expires_at" in out
    assert "that no code this run replaced explains" not in out  # the previous version's items: explained
    assert "  - deleted index clusterArn-cw_phase-index from ecs-state-dev-container-instances" in out

    timeline.clear()  # the move is done: the next deploy waits for nothing and changes no index
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: timeline.append("chalice deploy"))
    assert deploy.main(["--stage", "dev"], pause=pytest.fail, now=EVENT_TIME) == 0
    assert timeline == ["chalice deploy", "scan", "scan"]  # the repair's


def test_the_repair_deletes_an_old_index_on_a_table_ecs_state_did_not_create_only_once_confirmed(session, capsys):
    """make deploy's set-up step asks for it with the rest; --only repair on its own asks, or takes --yes;
    a table without the read index keeps the index its listings need."""
    plan = stage.stage_plan("dev")
    deployed_by_the_previous_version(session, plan, tagged=False)
    dynamodb = session.client("dynamodb")
    shown = []
    migrate.ensure_tables(dynamodb, {tables.TASKS: plan.table_names[tables.TASKS]}, plan.item_rules, plan.deployment,
                          migrate.DEPLOY, lambda lines: shown.extend(lines()) or True, lambda seconds: None, EVENT_TIME)
    assert ("ecs-state-dev-tasks: delete index clusterArn-cw_phase-index in the repair step, once the code it "
            "replaces has stopped (that code reads it until then)") in shown
    upgrade = migrate.Upgrade(plan.item_rules, EVENT_TIME)

    not_confirmed = deploy.repair(dynamodb, plan, upgrade, {}, None, migrate.confirm_on_terminal(False, io.StringIO()),
                                  lambda seconds: None)

    assert not_confirmed[-2:] == [
        "kept index clusterArn-cw_phase-index on ecs-state-dev-container-instances: the table has no "
        "cw_listing-cw_listing_key-index yet, which the listings need instead (run the set-up step: make deploy)",
        "kept index clusterArn-cw_phase-index on ecs-state-dev-tasks: ecs-state did not create the table, and the "
        "deletion was not confirmed (confirm on a terminal, or add --yes)",
    ]
    confirmed = deploy.repair(dynamodb, plan, upgrade, {}, None, migrate.confirm_on_terminal(True), lambda seconds: None)
    assert confirmed[-1] == "deleted index clusterArn-cw_phase-index from ecs-state-dev-tasks"
    assert [index["IndexName"] for index in dynamodb.describe_table(
        TableName="ecs-state-dev-tasks")["Table"]["GlobalSecondaryIndexes"]] == ["cw_listing-cw_listing_key-index"]

