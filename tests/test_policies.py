"""Least privilege, proven three ways: the policy files of `chalice deploy` and the roles of
resources.json grant exactly tests/policies.py's list, on the stage's own resources in this
account and region only; and that list is exactly what the code calls (run on moto).
"""
import json
from typing import Any, Dict, Iterator, List

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws

from chalicelib import events, settings, tables
from tests import policies
from tests.helpers import task_event
from tools.fake_ecs import FakeECS
from tools.local_dynamodb import create_tables
from tools.stage import ROOT, chalice_config, deployable_stages, stage_plan

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = sorted(deployable_stages(CONFIG["stages"]))
MERGE_TEMPLATE = json.loads((ROOT / "resources.json").read_text())
# The account and region of every ARN, through IAM policy variables; any partition (aws, aws-cn, aws-us-gov).
ARN = "arn:*:{service}:${{aws:RequestedRegion}}:${{aws:PrincipalAccount}}:{resource}"


def policy_arn(service: str, resource: str) -> str:
    return ARN.format(service=service, resource=resource)


def stage_functions(stage: str) -> Iterator[tuple]:
    """(function kind, deployed name, policy file, the event handler's table or None) of each function."""
    plan = stage_plan(stage)
    config = chalice_config(stage)
    from tools.stage import handler_names

    event_handlers, [reconcile] = handler_names()
    for handler, name in zip(event_handlers, plan.event_function_names):
        spec = {f"{s.kind}_state_change": s for s in tables.ALL}[handler]
        yield policies.EVENT, name, config.scope(chalice_stage=stage, function_name=handler).iam_policy_file, spec
    yield policies.RECONCILE, plan.reconcile_function_name, config.scope(chalice_stage=stage, function_name=reconcile).iam_policy_file, None
    yield policies.API, plan.api_function_name, f"policy-{stage}.json", None  # the stage's default policy


@pytest.mark.parametrize("stage", STAGES)
def test_each_policy_file_grants_exactly_what_its_function_calls_on_the_stage_resources(stage):
    plan = stage_plan(stage)
    index = tables.CLUSTER_INDEX.name
    for kind, function, policy_file, own_table in stage_functions(stage):
        assert policy_file, f"{function} has no iam_policy_file: it would get policy-{stage}.json"
        resources = {
            "own-table": policy_arn("dynamodb", f"table/{plan.table_names[own_table]}") if own_table else None,
            "tables": [policy_arn("dynamodb", f"table/{name}") for name in plan.table_names.values()],
            "index": [policy_arn("dynamodb", f"table/{name}/index/{index}") for name in plan.table_names.values()],
            "own-log-group": policy_arn("logs", f"log-group:/aws/lambda/{function}:*"),
            "queue": policy_arn("sqs", plan.queue_name),
            "any": "*",
            "clusters": policy_arn("ecs", "cluster/*"),
            "tasks": policy_arn("ecs", "task/*"),
            "container-instances": policy_arn("ecs", "container-instance/*"),
        }
        in_clusters = {"ArnLike": {"ecs:cluster": policy_arn("ecs", "cluster/*")}}
        statements = json.loads((ROOT / ".chalice" / policy_file).read_text())["Statement"]
        assert policies.normalized(statements) == policies.rendered(
            policies.grants(kind, plan.item_rules.read_index), resources.__getitem__, lambda condition: in_clusters
        ), policy_file


def policy_documents(node: Any) -> Iterator[Dict[str, Any]]:
    if isinstance(node, dict):
        if "PolicyDocument" in node:
            yield node["PolicyDocument"]
        for value in node.values():
            yield from policy_documents(value)
    elif isinstance(node, list):
        for value in node:
            yield from policy_documents(value)


def arn_strings(node: Any) -> Iterator[str]:
    """Every ARN a Resource or Condition may name: literal strings, Fn::Sub templates, both branches of
    an Fn::If (Fn::GetAtt and Ref name one resource of the stack: exact by construction)."""
    if isinstance(node, str):
        if node.startswith("arn:"):
            yield node
    elif isinstance(node, list):
        for value in node:
            yield from arn_strings(value)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::Sub":
                yield from arn_strings(value[0] if isinstance(value, list) else value)
            elif key == "Fn::If":
                yield from arn_strings(value[1:])
            elif key not in ("Fn::GetAtt", "Ref"):
                yield from arn_strings(value)


def all_policy_statements() -> Iterator[tuple]:
    for path in sorted((ROOT / ".chalice").glob("policy-*.json")):
        for statement in json.loads(path.read_text())["Statement"]:
            yield path.name, statement
    for document in policy_documents(MERGE_TEMPLATE["Resources"]):
        statements = document["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            yield "resources.json", statement


def test_no_policy_leaves_the_account_or_the_region_open():
    checked = 0
    for where, statement in all_policy_statements():
        if "Fn::If" in statement:  # a statement only some stacks have: check what it holds
            statement = statement["Fn::If"][1]
        for arn in arn_strings([statement.get("Resource"), statement.get("Condition")]):
            region, account = policies.arn_positions(arn)
            assert region and "*" not in region and "?" not in region, f"{where}: {arn} leaves the region open"
            assert account and "*" not in account and "?" not in account, f"{where}: {arn} leaves the account open"
            checked += 1
        if "*" in policies.as_list(statement.get("Resource")):
            # Only actions without resource-level permissions, each restricted by a condition where IAM has one.
            assert set(policies.as_list(statement["Action"])) <= {"ecs:ListClusters", "ecs:ListTasks"}, (where, statement)
            if "ecs:ListTasks" in policies.as_list(statement["Action"]):
                assert "ecs:cluster" in statement["Condition"]["ArnLike"], (where, statement)
    assert checked > 40


def test_the_arn_check_catches_an_open_account_or_region():
    for arn in ("arn:aws:dynamodb:*:111122223333:table/t", "arn:aws:dynamodb:us-east-1:*:table/t",
                "arn:aws:sqs:us-east-?:111122223333:q", "arn:aws:logs:us-east-1::log-group:x"):
        region, account = policies.arn_positions(arn)
        assert not (region and "*" not in region and "?" not in region and account and "*" not in account)


# -- what the code calls ----------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch):
    """moto in this process, and every AWS call any client makes, as an IAM action."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "ECS_STATE_HIGH_WATER_ENTRIES": "0"}.items():
        monkeypatch.setenv(name, value)
    calls: List[str] = []
    original = BaseClient._make_api_call

    def recording(client, operation, params):
        calls.append(f"{client.meta.service_model.endpoint_prefix}:{operation}")
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    settings.reset_client()
    with mock_aws():
        yield calls
    settings.reset_client()


@pytest.fixture
def fake_ecs(monkeypatch):
    """The fake ECS API on loopback, the reconciler's ECS client pointed at it, unpaced."""
    with FakeECS() as ecs:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", ecs.endpoint)
        monkeypatch.setenv(settings.ECS_CALLS_PER_SECOND_ENV, "20")
        settings.reset_client()
        yield ecs


def fresh_tables(read_index: bool) -> Any:
    client = boto3.client("dynamodb")
    create_tables(client, {spec: settings.table_name(spec) for spec in tables.ALL}, read_index=read_index)
    return client


def test_the_event_functions_call_exactly_what_their_policy_grants(aws, monkeypatch):
    fresh_tables(read_index=True)
    queue = boto3.client("sqs").create_queue(QueueName="dead-letters")["QueueUrl"]
    monkeypatch.setenv(settings.DEAD_LETTER_QUEUE_ENV, "dead-letters")
    aws.clear()
    from chalicelib import recorder

    recorder.record(task_event(3))
    # Can never be stored: the handler sends it to the queue itself (chalicelib/dead_letters.py).
    assert recorder.record(task_event(4, cw_bad="reserved prefix"))["outcome"] == "dead_lettered"

    assert set(aws) == policies.actions(policies.EVENT, read_index=True) - policies.LOG_ACTIONS
    assert boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"] == "1"


@pytest.mark.parametrize("read_index", [True, False])
def test_the_api_calls_exactly_what_its_policy_grants(aws, monkeypatch, read_index):
    monkeypatch.setenv(settings.READ_INDEX_ENV, settings.ENABLED if read_index else settings.DISABLED)
    fresh_tables(read_index)
    from chalicelib import api, recorder

    event = task_event(3)
    recorder.record(event)
    aws.clear()
    api.list_items(tables.TASKS, {"cluster": event["detail"]["clusterArn"]})
    api.get_item(tables.TASKS, event["detail"]["taskArn"], None)

    assert set(aws) == policies.actions(policies.API, read_index) - policies.LOG_ACTIONS


@pytest.mark.parametrize("read_index", [True, False])
def test_a_reconcile_pass_calls_exactly_what_its_policy_grants(aws, fake_ecs, monkeypatch, read_index):
    """A pass that creates, updates and marks a ghost: every call it can make."""
    monkeypatch.setenv(settings.READ_INDEX_ENV, settings.ENABLED if read_index else settings.DISABLED)
    fresh_tables(read_index)
    from chalicelib import reconciler, recorder

    ecs = fake_ecs
    ecs.add_cluster("test-cluster")
    running = ecs.add_task("test-cluster", version=5)
    ecs.add_container_instance("test-cluster")
    recorder.record(task_event(2, task_id=running.rsplit("/", 1)[-1]))  # older than ECS's: updated
    recorder.record(task_event(7, task_id="f" * 32))  # ECS no longer knows it: a ghost
    aws.clear()

    summary = reconciler.reconcile({"time": "2026-11-22T10:00:00Z"}, None, budget_seconds=60)
    assert (summary["written"], summary["errors"]) == ({"created": 1, "updated": 1}, [])
    # Without the read index, each pass scans one slice of the tables: the ghost is in one of them.
    minutes = settings.reconcile_minutes()
    for number in range(reconciler.SWEEP_SEGMENTS):
        if summary["missing"]:
            break
        summary = reconciler.reconcile({"time": events.iso_time(number * minutes * 60)}, None, budget_seconds=60)

    assert summary["missing"] == 1
    assert set(aws) == policies.actions(policies.RECONCILE, read_index) - policies.LOG_ACTIONS
