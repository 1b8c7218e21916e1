"""Least privilege, proven three ways: the policy files of `chalice deploy` and the roles of
resources.json grant exactly tools/policies.py's list, on the stage's own resources in this
account and region only; and that list is exactly what the code calls (run on moto). And
every stage deploys, with either read index setting, only with the calls its functions make
allowed: `make deploy` refuses a stage whose files do not allow them.
"""
import json
import shutil
from typing import Any, Dict, Iterator, List, Tuple

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib import runtime, tables
from chalicelib.config import DISABLED, ENABLED, READ_INDEX_ENV
from chalicelib.model.clock import iso_time
from chalicelib.reconcile import passes
from chalicelib.runtime import Runtime
from tests.conftest import TEST_SETTINGS
from tests.fake_ecs import FakeECS
from tests.helpers import container_instance_event, record, table_name, task_event
from tools import deploy, policies, policy_files
from tools.local_dynamodb import create_tables
from tools.stage import ROOT, DeployError, StagePlan, deployable_stages, stage_plan

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = sorted(deployable_stages(CONFIG["stages"]))
MERGE_TEMPLATE = json.loads((ROOT / "resources.json").read_text())
MOTO_ACCOUNT, REGION = "123456789012", "us-east-1"
VARIABLES = {"${aws:RequestedRegion}": REGION, "${aws:PrincipalAccount}": MOTO_ACCOUNT}  # the policy files' values on moto


@pytest.mark.parametrize("stage", STAGES)
def test_each_policy_file_grants_exactly_what_its_function_calls_on_the_stage_resources(stage):
    plan = stage_plan(stage)
    for function in policy_files.stage_functions(plan):
        if function.kind != policies.API:  # the stage's default policy is the API's
            assert function.policy_file not in (None, f"policy-{stage}.json"), f"{function.name}: no file of its own"
        statements = json.loads((ROOT / ".chalice" / function.policy_file).read_text())["Statement"]
        required = policy_files.required_statements(plan, function)
        assert policies.normalized(statements) == policies.normalized(required), function.policy_file
    assert policy_files.policy_gaps(plan) == {} and deploy.check_policies(plan) is None


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
    for where, either in all_policy_statements():
        # A statement that depends on a parameter (ReadIndex): each of the two it can be.
        for statement in either["Fn::If"][1:] if "Fn::If" in either else [either]:
            checked += check_account_and_region(where, statement)
    assert checked > 40


def check_account_and_region(where: str, statement: Dict[str, Any]) -> int:
    """Assert that ``statement`` names only this account and region; return how many ARNs it names."""
    checked = 0
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
    return checked


def test_the_arn_check_catches_an_open_account_or_region():
    for arn in ("arn:aws:dynamodb:*:111122223333:table/t", "arn:aws:dynamodb:us-east-1:*:table/t",
                "arn:aws:sqs:us-east-?:111122223333:q", "arn:aws:logs:us-east-1::log-group:x"):
        region, account = policies.arn_positions(arn)
        assert not (region and "*" not in region and "?" not in region and account and "*" not in account)


# -- what the code calls ----------------------------------------------------------------------


class Calls(List[str]):
    """Each call as its IAM action; ``requests``: each as (service, operation, parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Tuple[str, str, Dict[str, Any]]] = []

    def clear(self) -> None:
        super().clear()
        self.requests.clear()


def install(config) -> Runtime:
    """A Runtime of its own with ``config``, its clients made on first use (on moto, or the fake ECS):
    no high-water marks, so every event reaches DynamoDB and makes each call its policy must allow."""
    return runtime.use(Runtime(config._replace(high_water_entries=0)))


@pytest.fixture
def aws(monkeypatch):
    """moto in this process, and every AWS call any client makes, as an IAM action; the test
    settings installed."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_ECS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    calls = Calls()
    original = BaseClient._make_api_call

    def recording(client, operation, params):
        calls.append(f"{client.meta.service_model.endpoint_prefix}:{operation}")
        calls.requests.append((client.meta.service_model.endpoint_prefix, operation, params))
        try:
            return original(client, operation, params)
        except ClientError as error:  # a query of an index the table lacks, answered as DynamoDB does
            if operation != "Query" or not error.response["Error"]["Message"].startswith("Invalid index"):
                raise
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "The table does not have the "
                                         f"specified index: {params['IndexName']}"}}, operation) from None

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    with mock_aws():
        install(TEST_SETTINGS)
        yield calls
    runtime.reset()


@pytest.fixture
def fake_ecs(aws, monkeypatch, configure):
    """The fake ECS API on loopback, the reconciler's ECS client pointed at it, unpaced."""
    with FakeECS() as ecs:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", ecs.endpoint)  # (the Runtime makes its ECS client on first use)
        configure(ecs_calls_per_second=20.0)
        yield ecs


def fresh_tables(read_index: bool) -> Any:
    client = boto3.client("dynamodb")
    create_tables(client, {spec: table_name(spec) for spec in tables.ALL}, read_index=read_index)
    return client


def test_the_event_functions_call_exactly_what_their_policy_grants(aws, configure):
    fresh_tables(read_index=True)
    queue = boto3.client("sqs").create_queue(QueueName="dead-letters")["QueueUrl"]
    configure(dead_letter_queue="dead-letters")
    aws.clear()

    record(task_event(3))
    # Can never be stored: the handler sends it to the queue itself (chalicelib/ingest/dead_letters.py).
    assert record(task_event(4, cw_bad="reserved prefix"))["outcome"] == "dead_lettered"

    assert set(aws) == policies.actions(policies.EVENT, read_index=True) - policies.LOG_ACTIONS
    assert boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"] == "1"


@pytest.mark.parametrize("read_index", [True, False])
def test_the_api_calls_exactly_what_its_policy_grants(aws, configure, read_index):
    configure(read_index=read_index)
    fresh_tables(read_index)

    event = task_event(3)
    record(event)
    aws.clear()
    api = runtime.current().read_api()
    listed = api.list_items(tables.TASKS, {"cluster": event["detail"]["clusterArn"]})
    api.get_item(tables.TASKS, event["detail"]["taskArn"], None)

    assert set(aws) == policies.actions(policies.API, read_index) - policies.LOG_ACTIONS
    if read_index:  # the previous read index asked for first (it is not there), then the read index
        assert [item["taskArn"] for item in listed["items"]] == [event["detail"]["taskArn"]]
        assert [params["IndexName"] for _, operation, params in aws.requests if operation == "Query"] == [
            tables.PHASE_INDEX.name, tables.READ_INDEX.name]


@pytest.mark.parametrize("read_index", [True, False])
def test_a_reconcile_pass_calls_exactly_what_its_policy_grants(aws, fake_ecs, configure, read_index):
    """A pass that creates, updates and marks a ghost: every call it can make."""
    process = configure(read_index=read_index)
    fresh_tables(read_index)

    ecs = fake_ecs
    ecs.add_cluster("test-cluster")
    running = ecs.add_task("test-cluster", version=5)
    ecs.add_container_instance("test-cluster")
    record(task_event(2, task_id=running.rsplit("/", 1)[-1]))  # older than ECS's: updated
    record(task_event(7, task_id="f" * 32))  # ECS no longer knows it: a ghost
    aws.clear()

    summary = process.reconcile({"time": "2026-11-22T10:00:00Z"}, None, budget_seconds=60)
    assert (summary["written"], summary["errors"]) == ({"created": 1, "updated": 1}, [])
    # Without the read index, each pass scans one slice of the tables: the ghost is in one of them.
    minutes = process.config.reconcile_minutes
    for number in range(passes.SWEEP_SEGMENTS):
        if summary["missing"]:
            break
        summary = process.reconcile({"time": iso_time(number * minutes * 60)}, None, budget_seconds=60)

    assert summary["missing"] == 1
    assert set(aws) == policies.actions(policies.RECONCILE, read_index) - policies.LOG_ACTIONS


# -- every stage, with either read index setting: deployed with what it calls, or refused ---------


def stage_with_read_index(tmp_path, stage: str, read_index: str) -> StagePlan:
    """The stage as .chalice/ holds it, but for its ECS_STATE_READ_INDEX: a copy in ``tmp_path``."""
    shutil.copytree(ROOT / ".chalice", tmp_path / ".chalice")
    path = tmp_path / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][stage]["environment_variables"][READ_INDEX_ENV] = read_index
    path.write_text(json.dumps(config))
    return stage_plan(stage, project_dir=tmp_path)


def authorized(service: str, operation: str, params: Dict[str, Any]) -> List[Tuple[str, str, Dict[str, str]]]:
    """What IAM authorizes for one call: (action, resource ARN, condition keys), per resource it names."""
    action, arn = f"{service}:{operation}", f"arn:aws:{service}:{REGION}:{MOTO_ACCOUNT}:"
    if service == "dynamodb":
        names = list(params["RequestItems"]) if operation == "BatchGetItem" else [params["TableName"]]
        index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
        return [(action, f"{arn}table/{name}{index}", {}) for name in names]
    if service == "sqs":
        return [(action, arn + (params.get("QueueName") or params["QueueUrl"].rsplit("/", 1)[-1]), {})]
    assert service == "ecs", service
    cluster = params.get("cluster")  # the reconciler names each cluster by its ARN
    context = {"ecs:cluster": cluster} if cluster else {}
    resources = {"ListClusters": ["*"], "ListTasks": ["*"], "ListContainerInstances": [cluster]}.get(operation)
    return [(action, resource, context) for resource in resources or params.get("tasks") or params["containerInstances"]]


def run_each_function(aws: Calls, plan: StagePlan, monkeypatch) -> Iterator[Tuple[policy_files.Function, List[tuple]]]:
    """Each of the stage's functions run with its variables on moto, making every call it can:
    (the function, the calls it made)."""
    process = install(plan.config)  # the stage's settings, as its functions read them from its variables
    fresh_tables(plan.item_rules.read_index)
    boto3.client("sqs").create_queue(QueueName=plan.queue_name)
    functions = policy_files.stage_functions(plan)
    for function in functions:
        if function.kind == policies.EVENT:
            make_event = task_event if function.own_table is tables.TASKS else container_instance_event
            aws.clear()
            record(make_event(3))
            assert record(make_event(4, cw_bad="reserved"))["outcome"] == "dead_lettered"  # sent by the function
            yield function, list(aws.requests)
    (api_function,) = [function for function in functions if function.kind == policies.API]
    aws.clear()
    api = process.read_api()
    api.list_items(tables.TASKS, {"cluster": task_event(3)["detail"]["clusterArn"]})
    api.get_item(tables.TASKS, task_event(3)["detail"]["taskArn"], None)
    yield api_function, list(aws.requests)
    with FakeECS(account=MOTO_ACCOUNT) as ecs:  # ECS's ARNs in the account of moto's calls
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", ecs.endpoint)  # (the Runtime makes its ECS client on first use)
        monkeypatch.setattr(passes, "SWEEP_SEGMENTS", 1)  # without the index, one pass sweeps it all
        process = runtime.use(process.replace(ecs_calls_per_second=20.0))
        ecs.add_cluster("web")
        changed = ecs.add_task("web")
        record(ecs.event_for_task(changed))
        ecs.transition_task(changed, "DEACTIVATING")  # its event lost: updated
        ghost = ecs.add_task("web")
        record(ecs.event_for_task(ghost))
        ecs.forget_task(ghost)
        ecs.add_task("web")  # never recorded: created, with the instance
        ecs.add_container_instance("web")
        aws.clear()
        summary = process.reconcile({"time": iso_time(process.now())}, None, budget_seconds=60)
        assert summary["written"] == {"created": 2, "updated": 1} and summary["missing"] == 1, summary
        (reconcile_function,) = [function for function in functions if function.kind == policies.RECONCILE]
        yield reconcile_function, list(aws.requests)


def denied_calls(plan: StagePlan, runs: List[Tuple[policy_files.Function, List[tuple]]],
                 added: Dict[str, List[Dict[str, Any]]]) -> Dict[str, set]:
    """The actions each policy file (plus the statements ``added`` to it) does not allow of its function's calls."""
    denied: Dict[str, set] = {}
    for function, requests in runs:
        path = plan.project_dir / ".chalice" / function.policy_file
        granted = json.loads(path.read_text())["Statement"] + added.get(function.policy_file, [])
        for request in requests:
            for action, resource, context in authorized(*request):
                if not policy_files.allows(granted, action, resource, context, VARIABLES):
                    denied.setdefault(function.policy_file, set()).add(action)
    return denied


@pytest.mark.parametrize("read_index", [ENABLED, DISABLED])
@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_deployed_only_with_every_call_its_settings_make_allowed(aws, monkeypatch, tmp_path, stage,
                                                                              read_index):
    """Each function runs on moto with the stage's variables, either read index setting, and each of its
    calls is checked against its policy file, as IAM would. Either every call is allowed and `make deploy`
    goes ahead, or it refuses the stage before changing anything, naming statements that allow them all."""
    plan = stage_with_read_index(tmp_path, stage, read_index)
    runs = list(run_each_function(aws, plan, monkeypatch))
    denied = denied_calls(plan, runs, {})
    if not denied:
        assert policy_files.policy_gaps(plan) == {}
        deploy.check_policies(plan)
        return
    monkeypatch.setattr(deploy, "stage_plan", lambda name: plan)
    monkeypatch.setattr(deploy, "set_up", lambda *args, **options: pytest.fail("make deploy changed something"))
    monkeypatch.setattr(deploy, "run_chalice", lambda *args, **options: pytest.fail(f"chalice {args} ran"))
    with pytest.raises(DeployError) as refused:
        deploy.main(["--stage", stage])
    for policy_file, actions in denied.items():
        assert policy_file in str(refused.value) and all(action in str(refused.value) for action in actions)
    assert denied_calls(plan, runs, policy_files.policy_gaps(plan)) == {}  # what it says to add is enough


def test_the_iam_check_denies_what_a_policy_does_not_name():
    def allows(statements, action, resource, context=None):
        return policy_files.allows(statements, action, resource, context or {}, VARIABLES)

    query = {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": policy_files.policy_arn("dynamodb", "table/t/index/*")}
    index = f"arn:aws:dynamodb:{REGION}:{MOTO_ACCOUNT}:table/t/index/i"
    assert allows([query], "dynamodb:query", index)  # actions are case-insensitive
    assert not allows([query], "dynamodb:Scan", index)
    assert not allows([query], "dynamodb:Query", index.replace("/index/i", ""))
    assert not allows([query], "dynamodb:Query", index.replace(MOTO_ACCOUNT, "111122223333"))
    assert not allows([query, {**query, "Effect": "Deny"}], "dynamodb:Query", index)
    list_tasks = {"Effect": "Allow", "Action": "ecs:ListTasks", "Resource": "*",
                  "Condition": {"ArnLike": {"ecs:cluster": policy_files.policy_arn("ecs", "cluster/*")}}}
    cluster = f"arn:aws:ecs:{REGION}:{MOTO_ACCOUNT}:cluster/web"
    assert allows([list_tasks], "ecs:ListTasks", "*", {"ecs:cluster": cluster})
    assert not allows([list_tasks], "ecs:ListTasks", "*")
    assert not allows([list_tasks], "ecs:ListTasks", "*", {"ecs:cluster": cluster.replace(REGION, "eu-west-1")})


def test_make_deploy_refuses_a_stage_turning_the_read_index_off_until_its_reconcile_policy_may_scan(tmp_path):
    plan = stage_with_read_index(tmp_path, "dev", DISABLED)
    needs_scan = r"ECS_STATE_READ_INDEX=disabled.*\n.*policy-dev-reconcile\.json: .*dynamodb:Scan"
    with pytest.raises(DeployError, match=needs_scan) as refused:
        deploy.check_policies(plan)
    assert f"error: {refused.value}\n" in (ROOT / "docs" / "deploy.md").read_text()  # as the docs show it
    path = tmp_path / ".chalice" / "policy-dev-reconcile.json"
    policy = json.loads(path.read_text())
    policy["Statement"] += policy_files.policy_gaps(plan)["policy-dev-reconcile.json"]
    path.write_text(json.dumps(policy))
    deploy.check_policies(plan)
