"""`make deploy` / `make destroy`: the boto3 steps, against moto in this process (no AWS here).

moto accepts some requests AWS refuses, so these tests prove what is asked
for and what is left alone, not AWS's own validation; nothing here is concurrent.
"""
import json
from typing import Any, Dict

import boto3
import pytest
from moto import mock_aws

from chalicelib import tables
from tools import deploy, destroy

REGION = "us-east-1"


@pytest.fixture
def session(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture(params=["dev", "prod"])
def plan(request):
    return deploy.stage_plan(request.param)


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
        }
    url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    state["queue"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    state["alarms"] = cloudwatch.describe_alarms(AlarmNames=[plan.alarm_name])["MetricAlarms"]
    groups = session.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    state["log groups"] = {group["logGroupName"]: group.get("retentionInDays") for group in groups}
    return state


def describe_log_groups(session):
    return session.client("logs").describe_log_groups()["logGroups"]


def test_stage_plan_reads_table_names_from_the_stage_config(plan):
    config = deploy.chalice_config(plan.stage)
    assert {spec.name_env: name for spec, name in plan.table_names.items()} == {
        spec.name_env: config.environment_variables[spec.name_env] for spec in tables.ALL
    }
    assert plan.queue_name == f"ecs-state-{plan.stage}-dead-letters"
    assert plan.function_names == (
        f"ecs-state-{plan.stage}-task_state_change", f"ecs-state-{plan.stage}-container_instance_state_change"
    )
    assert plan.api_function_name == f"ecs-state-{plan.stage}"


def test_the_local_stage_is_not_deployable():
    with pytest.raises(deploy.DeployError, match="'local' is for chalice local only"):
        deploy.stage_plan("local")


def test_stage_plan_refuses_an_unknown_stage():
    with pytest.raises(deploy.DeployError, match="'staging' is not in .chalice/config.json"):
        deploy.stage_plan("staging")


def test_set_up_creates_tables_queue_and_alarm_as_defined(session, plan):
    queue_arn, changes = deploy.set_up(session, plan)

    state = describe_everything(session, plan)
    for spec, name in plan.table_names.items():
        request = spec.create_table_request(name)
        assert state[name]["KeySchema"] == request["KeySchema"]
        assert state[name]["AttributeDefinitions"] == request["AttributeDefinitions"]
        assert state[name]["BillingMode"] == request["BillingMode"] == "PAY_PER_REQUEST"
        assert state[name]["SSE"]["Status"] == "ENABLED" and state[name]["SSE"]["SSEType"] == "KMS"
        assert state[name]["PITR"] == "ENABLED"
        assert f"created table {name}" in changes
    assert state["queue"]["MessageRetentionPeriod"] == "1209600"
    assert state["queue"]["SqsManagedSseEnabled"] == "true"
    assert state["queue"]["QueueArn"] == queue_arn
    [alarm] = state["alarms"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": plan.queue_name}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
    assert state["log groups"] == {
        f"/aws/lambda/{name}": 30 for name in (*plan.function_names, plan.api_function_name)
    }


def test_second_set_up_changes_nothing(session, plan):
    first_arn, first_changes = deploy.set_up(session, plan)
    before = describe_everything(session, plan)

    second_arn, second_changes = deploy.set_up(session, plan)

    assert first_changes and second_changes == []
    assert second_arn == first_arn
    assert describe_everything(session, plan) == before


def test_set_up_repairs_drifted_queue_alarm_and_backups(session, plan):
    deploy.set_up(session, plan)
    sqs, dynamodb = session.client("sqs"), session.client("dynamodb")
    url = sqs.get_queue_url(QueueName=plan.queue_name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    task_table = plan.table_names[tables.TASKS]
    dynamodb.update_continuous_backups(
        TableName=task_table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )
    session.client("cloudwatch").put_metric_alarm(
        AlarmName=plan.alarm_name, **{**deploy.alarm_settings(plan.queue_name), "Threshold": 10.0}
    )
    log_group = plan.log_group_names[0]
    session.client("logs").delete_retention_policy(logGroupName=log_group)

    _, changes = deploy.set_up(session, plan)

    assert sorted(changes) == sorted([
        f"set MessageRetentionPeriod on queue {plan.queue_name}",
        f"enabled point-in-time recovery on {task_table}",
        f"updated alarm {plan.alarm_name}",
        f"set 30-day retention on {log_group}",
    ])
    state = describe_everything(session, plan)
    assert state["queue"]["MessageRetentionPeriod"] == "1209600"
    assert state[task_table]["PITR"] == "ENABLED"
    assert state["alarms"][0]["Threshold"] == 0.0
    assert state["log groups"][log_group] == 30


def test_existing_docs_table_keeps_its_billing_and_gains_backups(session):
    """The docs example's provisioned ECSTaskState: used as it is, only PITR and KMS added."""
    plan = deploy.stage_plan("prod")
    name = plan.table_names[tables.TASKS]
    dynamodb = session.client("dynamodb")
    request = tables.TASKS.create_table_request(name)
    del request["BillingMode"]
    dynamodb.create_table(**request, ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})

    changes = deploy.ensure_table(dynamodb, tables.TASKS, name)

    assert changes == [f"encrypted table {name} with KMS", f"enabled point-in-time recovery on {name}"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
    assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"


def test_existing_table_with_another_key_is_refused(session):
    dynamodb = session.client("dynamodb")
    dynamodb.create_table(
        TableName="wrong-key",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(deploy.DeployError, match="table wrong-key has key .*taskArn"):
        deploy.ensure_table(dynamodb, tables.TASKS, "wrong-key")
    assert "SSEDescription" not in dynamodb.describe_table(TableName="wrong-key")["Table"]


def test_indexes_of_the_definition_are_added_to_an_existing_table_without_them(session):
    # e.g. the docs example's ECSTaskState: its key only, none of the read API's indexes.
    dynamodb = session.client("dynamodb")
    dynamodb.create_table(**tables.TASKS.create_table_request("tasks", read_index=False))

    changes = deploy.ensure_table(dynamodb, tables.TASKS, "tasks", pause=lambda seconds: None)

    wanted = [tables.TASKS.cluster_index.name]
    assert [change for change in changes if "index" in change] == [f"created index {name} on tasks" for name in wanted]
    described = dynamodb.describe_table(TableName="tasks")["Table"]["GlobalSecondaryIndexes"]
    assert sorted(index["IndexName"] for index in described) == sorted(wanted)
    # (moto forgets the table's SSE setting when an index is added, so only indexes are compared here.)
    assert [change for change in deploy.ensure_table(dynamodb, tables.TASKS, "tasks") if "index" in change] == []


def create_function(session, name: str) -> str:
    iam = session.client("iam")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }))["Role"]["Arn"]
    return session.client("lambda").create_function(
        FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18}
    )["FunctionArn"]


def test_event_invoke_configs_send_failures_to_the_queue_once(session, plan):
    queue_arn, _ = deploy.set_up(session, plan)
    for name in plan.function_names:
        create_function(session, name)
    client = session.client("lambda")

    changes = deploy.apply_event_invoke_configs(client, plan.function_names, queue_arn)

    assert changes == [f"set retries and OnFailure destination of {name}" for name in plan.function_names]
    for name in plan.function_names:
        config = client.get_function_event_invoke_config(FunctionName=name)
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
        assert config["MaximumRetryAttempts"] == deploy.EVENT_INVOKE_MAX_RETRY_ATTEMPTS
        assert config["MaximumEventAgeInSeconds"] == deploy.EVENT_INVOKE_MAX_EVENT_AGE_SECONDS
    assert deploy.apply_event_invoke_configs(client, plan.function_names, queue_arn) == []


def test_event_invoke_configs_need_the_functions_and_the_queue(session, plan):
    with pytest.raises(deploy.DeployError, match=f"queue {plan.queue_name} does not exist: run the set-up step"):
        deploy.queue_arn(session.client("sqs"), plan.queue_name)
    queue_arn, _ = deploy.set_up(session, plan)
    with pytest.raises(deploy.DeployError, match=f"function {plan.function_names[0]} does not exist"):
        deploy.apply_event_invoke_configs(session.client("lambda"), plan.function_names, queue_arn)


def test_tear_down_keeps_tables_unless_asked(session, plan):
    deploy.set_up(session, plan)

    deleted = destroy.tear_down(session, plan)

    assert deleted == [f"deleted alarm {plan.alarm_name}", f"deleted queue {plan.queue_name}"] + [
        f"deleted log group {name}" for name in plan.log_group_names
    ]
    assert describe_log_groups(session) == []
    dynamodb = session.client("dynamodb")
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(plan.table_names.values())
    assert destroy.tear_down(session, plan) == []

    deleted = destroy.tear_down(session, plan, delete_tables=True)

    assert deleted == [f"deleted table {name}" for name in plan.table_names.values()]
    assert dynamodb.list_tables()["TableNames"] == []


def test_make_deploy_runs_set_up_chalice_deploy_then_invoke_configs(session, monkeypatch, capsys):
    """The whole `make deploy` sequence, with `chalice deploy` stood in for by creating the functions."""
    plan = deploy.stage_plan("dev")
    calls = []

    def fake_chalice(*args, **options):
        calls.append(args)
        assert session.client("dynamodb").list_tables()["TableNames"], "chalice deploy ran before the set-up step"
        for name in plan.function_names:
            create_function(session, name)

    monkeypatch.setattr(deploy, "run_chalice", fake_chalice)

    assert deploy.main(["--stage", "dev"]) == 0

    assert calls == [("deploy", "--stage", "dev")]
    queue_arn = deploy.queue_arn(session.client("sqs"), plan.queue_name)
    for name in plan.function_names:
        config = session.client("lambda").get_function_event_invoke_config(FunctionName=name)
        assert config["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    assert f"set retries and OnFailure destination of {plan.function_names[0]}" in capsys.readouterr().out


def test_terraform_steps_and_destroy_without_chalice(session, monkeypatch):
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    monkeypatch.setattr(destroy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    plan = deploy.stage_plan("dev")

    assert deploy.main(["--stage", "dev", "--only", "set-up"]) == 0
    for name in plan.function_names:  # what terraform apply creates
        create_function(session, name)
    assert deploy.main(["--stage", "dev", "--only", "event-invoke-configs"]) == 0
    assert destroy.main(["--stage", "dev", "--without-chalice-delete", "--delete-tables"]) == 0

    assert session.client("dynamodb").list_tables()["TableNames"] == []
    assert session.client("sqs").list_queues().get("QueueUrls", []) == []
