"""The packaged stack: `chalice package --merge-template resources.json --stage <stage>`.

Each stage's SAM template is generated once per session, then translated to
plain CloudFormation by aws-sam-translator, as CloudFormation will. Both are
linted (cfn-lint) and scanned (checkov, offline), and the structure the issue
asks for is asserted: tables from chalicelib.tables, Refs, least privilege,
and the dead-letter queue on both paths (Lambda retries, EventBridge targets).
"""
import copy
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import pytest
from chalice.utils import to_cfn_resource_name

from app import app
from chalicelib import tables
from chalicelib.tables import TableSpec
from tools import deploy
from tools.deploy import ROOT, run_chalice

IN_CI = os.environ.get("CI", "").lower() == "true"
STAGES = sorted(deploy.deployable_stages(json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]))
MERGE_TEMPLATE = json.loads((ROOT / "resources.json").read_text())
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
CHECKOV_TIMEOUT_SECONDS = 300  # offline it takes ~10 s; a hang (e.g. waiting on the network) fails the test
QUEUE_ARN = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
# Chalice names a handler's resources after it, CamelCased: task_state_change -> TaskStateChange.
HANDLERS = {source.name: source for source in app.event_sources if hasattr(source, "event_pattern")}
API_FUNCTION = "APIHandler"  # Chalice's one function behind every route


def logical_id(spec: TableSpec) -> str:
    """resources.json's names for a table: TaskTable, CreateTaskTable, ExistingTaskTableName."""
    return to_cfn_resource_name(spec.kind)


def table_name_ref(spec: TableSpec) -> Dict[str, Any]:
    """The created table, or the existing one the stack was given."""
    base = logical_id(spec)
    return {"Fn::If": [f"Create{base}Table", {"Ref": f"{base}Table"}, {"Ref": f"Existing{base}TableName"}]}


def spec_of_handler(name: str) -> TableSpec:
    [detail_type] = HANDLERS[name].event_pattern["detail-type"]
    return tables.BY_DETAIL_TYPE[detail_type]


@dataclass
class Package:
    stage: str
    sam_path: Path
    cfn_path: Path
    sam: Dict[str, Any]
    cfn: Dict[str, Any]

    def of_type(self, template: Dict[str, Any], kind: str) -> Dict[str, Dict[str, Any]]:
        return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}

    @property
    def functions(self) -> Dict[str, Dict[str, Any]]:
        return self.of_type(self.sam, "AWS::Serverless::Function")


def to_cloudformation(sam: Dict[str, Any]) -> Dict[str, Any]:
    """What CloudFormation's SAM transform makes of the template (code location faked, as cfn-lint does)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import undo_mark_unicode_str_in_template

    template = copy.deepcopy(sam)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://example-bucket/deployment.zip"

    def no_managed_policies():
        raise AssertionError("the template asks for AWS managed policies")

    # The region only fills pseudo parameters; the output keeps ${AWS::Region} references.
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    translated = translator.translate(template, parameter_values={}, get_managed_policy_map=no_managed_policies)
    translated = undo_mark_unicode_str_in_template(translated)
    # The transform keeps an API's Metadata on the RestApi only, not on the Stage it generates
    # from the same resource (RestAPIapiStage): the reasons written on RestAPI cover that too.
    for name, resource in sam["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Api" and "Metadata" in resource:
            for generated_name, generated in translated["Resources"].items():
                if generated_name.startswith(name) and generated["Type"] == "AWS::ApiGateway::Stage":
                    generated.setdefault("Metadata", copy.deepcopy(resource["Metadata"]))
    return translated


@pytest.fixture(scope="session", params=STAGES)
def package(request, tmp_path_factory) -> Package:
    stage = request.param
    out = tmp_path_factory.mktemp(f"package-{stage}") / "out"
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    try:
        run_chalice("package", "--merge-template", "resources.json", "--stage", stage, str(out),
                    env=env, capture_output=True, text=True, timeout=300)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"chalice package --stage {stage} failed:\n{error.stdout}\n{error.stderr}", pytrace=False)
    sam = json.loads((out / "sam.json").read_text())
    cfn = to_cloudformation(sam)
    cfn_path = out / "cloudformation.json"
    cfn_path.write_text(json.dumps(cfn, indent=2))
    return Package(stage, out / "sam.json", cfn_path, sam, cfn)


# --- one definition of the tables -------------------------------------------------------------


def test_merge_template_tables_agree_with_the_table_definitions():
    """Whatever create_table_request holds (keys, attributes, billing, any future GSI) is in resources.json."""
    found = {name for name, r in MERGE_TEMPLATE["Resources"].items() if r.get("Type") == "AWS::DynamoDB::Table"}
    assert found == {f"{logical_id(spec)}Table" for spec in tables.ALL}
    for spec in tables.ALL:
        properties = MERGE_TEMPLATE["Resources"][f"{logical_id(spec)}Table"]["Properties"]
        request = spec.create_table_request("any-name")
        for key, value in request.items():
            if key != "TableName":
                assert properties.get(key) == value, f"{logical_id(spec)}Table {key} differs from chalicelib.tables"


def test_merge_template_settings_agree_with_the_deploy_tool():
    """`make deploy` creates the same queue, alarm and retries as the packaged stack."""
    resources = MERGE_TEMPLATE["Resources"]
    queue = resources["DeadLetterQueue"]["Properties"]
    assert {key: json.dumps(queue[key]).strip('"') for key in deploy.DEAD_LETTER_QUEUE_ATTRIBUTES} == (
        deploy.DEAD_LETTER_QUEUE_ATTRIBUTES
    )
    alarm = dict(resources["DeadLetterQueueAlarm"]["Properties"])
    assert alarm.pop("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert alarm.pop("AlarmName") == {"Fn::Sub": "${AWS::StackName}-dead-letters"}
    expected = deploy.alarm_settings("queue")
    del expected["Dimensions"]
    assert alarm == expected
    for handler in HANDLERS:
        config = resources[f"{to_cfn_resource_name(handler)}InvokeConfig"]["Properties"]
        assert {key: config[key] for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds")} == {
            key: value for key, value in deploy.event_invoke_config("arn").items() if key != "DestinationConfig"
        }


# --- the packaged templates -------------------------------------------------------------------


def test_tables_are_on_demand_recoverable_encrypted_and_retained(package):
    names = []
    for spec in tables.ALL:
        table = package.sam["Resources"][f"{logical_id(spec)}Table"]
        assert table["Type"] == "AWS::DynamoDB::Table"
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
        assert table["Condition"] == f"Create{logical_id(spec)}Table"
        properties = table["Properties"]
        assert properties["KeySchema"] == [{"AttributeName": spec.key, "KeyType": "HASH"}]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert properties["SSESpecification"] == {"SSEEnabled": True}
        names.append(properties["TableName"]["Fn::Sub"])
    # Named after the stack (ecs-state-<stage>), so each stage's stack has its own tables.
    assert all(name.startswith("${AWS::StackName}-") for name in names) and len(set(names)) == len(names)
    assert set(package.of_type(package.sam, "AWS::DynamoDB::Table")) == {f"{logical_id(s)}Table" for s in tables.ALL}


def test_each_function_gets_the_table_names_by_ref(package):
    assert set(package.functions) == {to_cfn_resource_name(name) for name in HANDLERS} | {API_FUNCTION}
    for function in package.functions.values():
        variables = function["Properties"]["Environment"]["Variables"]
        for spec in tables.ALL:
            assert variables[spec.name_env] == table_name_ref(spec)
        assert variables["POWERTOOLS_SERVICE_NAME"] == "ecs-state"  # Chalice's own variables stay


def test_one_rule_per_detail_type_with_the_app_patterns(package):
    patterns = [r["Properties"]["EventPattern"] for r in package.of_type(package.cfn, "AWS::Events::Rule").values()]
    assert sorted(patterns, key=json.dumps) == sorted(
        ({"source": ["aws.ecs"], "detail-type": [spec.detail_type]} for spec in tables.ALL), key=json.dumps
    )


def test_failed_invocations_go_to_the_queue(package):
    configs = package.of_type(package.sam, "AWS::Lambda::EventInvokeConfig")
    # The event handlers, invoked asynchronously; API Gateway calls the API function synchronously.
    assert sorted(c["Properties"]["FunctionName"]["Ref"] for c in configs.values()) == sorted(
        to_cfn_resource_name(name) for name in HANDLERS
    )
    for config in configs.values():
        properties = config["Properties"]
        assert properties["Qualifier"] == "$LATEST"
        assert properties["DestinationConfig"] == {"OnFailure": {"Destination": QUEUE_ARN}}
        assert properties["MaximumRetryAttempts"] == deploy.EVENT_INVOKE_MAX_RETRY_ATTEMPTS
        assert properties["MaximumEventAgeInSeconds"] == deploy.EVENT_INVOKE_MAX_EVENT_AGE_SECONDS


def test_undeliverable_events_go_to_the_queue(package):
    rules = package.of_type(package.cfn, "AWS::Events::Rule")
    assert len(rules) == len(tables.ALL)
    for rule in rules.values():
        [target] = rule["Properties"]["Targets"]
        assert target["DeadLetterConfig"] == {"Arn": QUEUE_ARN}
        assert set(target["RetryPolicy"]) == {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
    [policy] = package.of_type(package.cfn, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": "DeadLetterQueue"}]
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"], statement["Resource"]) == (
        "Allow", {"Service": "events.amazonaws.com"}, "sqs:SendMessage", QUEUE_ARN
    )
    source_arns = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert sorted(arn["Fn::GetAtt"][0] for arn in source_arns) == sorted(rules)


def test_queue_is_encrypted_keeps_14_days_and_alarms(package):
    queue = package.sam["Resources"]["DeadLetterQueue"]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["SqsManagedSseEnabled"] is True
    [alarm] = package.of_type(package.sam, "AWS::CloudWatch::Alarm").values()
    properties = alarm["Properties"]
    assert properties["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert (properties["MetricName"], properties["ComparisonOperator"], properties["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible", "GreaterThanThreshold", 0
    )


def role_statements(package: Package, function: Dict[str, Any]) -> List[Dict[str, Any]]:
    role = package.sam["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def test_each_role_writes_only_its_own_table_logs_and_queue(package):
    for handler in HANDLERS:
        name = to_cfn_resource_name(handler)
        spec = spec_of_handler(handler)
        statements = role_statements(package, package.functions[name])
        assert all(s["Effect"] == "Allow" for s in statements)
        grants = {action: s["Resource"] for s in statements for action in as_list(s["Action"])}
        own_table = {"Fn::GetAtt": [f"{logical_id(spec)}Table", "Arn"]}
        existing_table = {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
                          f":table/${{Existing{logical_id(spec)}TableName}}"}
        own_log_group = {"Fn::GetAtt": [f"{name}LogGroup", "Arn"]}
        assert grants == {
            "dynamodb:PutItem": {"Fn::If": [f"Create{logical_id(spec)}Table", own_table, existing_table]},
            "logs:CreateLogStream": own_log_group,
            "logs:PutLogEvents": own_log_group,
            "sqs:SendMessage": QUEUE_ARN,
        }
    # No other role or policy in the deployed stack grants anything.
    roles = package.of_type(package.cfn, "AWS::IAM::Role")
    assert sorted(roles) == sorted(f["Properties"]["Role"]["Fn::GetAtt"][0] for f in package.functions.values())
    assert package.of_type(package.cfn, "AWS::IAM::Policy") == {}
    assert package.of_type(package.cfn, "AWS::IAM::ManagedPolicy") == {}


def test_the_api_role_only_reads_the_tables_and_their_indexes(package):
    statements = role_statements(package, package.functions[API_FUNCTION])
    assert all(s["Effect"] == "Allow" for s in statements)
    grants = {action: s["Resource"] for s in statements for action in as_list(s["Action"])}
    own_log_group = {"Fn::GetAtt": [f"{API_FUNCTION}LogGroup", "Arn"]}
    assert grants.pop("logs:CreateLogStream") == grants.pop("logs:PutLogEvents") == own_log_group
    assert set(grants) == {"dynamodb:GetItem", "dynamodb:Query"}
    for spec in tables.ALL:
        base = logical_id(spec)
        existing = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Existing%sTableName}" % base
        assert grants["dynamodb:Query"] == grants["dynamodb:GetItem"]
        assert {"Fn::If": [f"Create{base}Table", {"Fn::GetAtt": [f"{base}Table", "Arn"]}, {"Fn::Sub": existing}]} in (
            grants["dynamodb:Query"]
        )
        assert {"Fn::If": [f"Create{base}Table", {"Fn::Sub": f"${{{base}Table.Arn}}/index/*"},
                           {"Fn::Sub": existing + "/index/*"}]} in grants["dynamodb:Query"]
    assert len(grants["dynamodb:Query"]) == 2 * len(tables.ALL)


def test_log_groups_have_the_deploy_tool_retention(package):
    for name, function in package.functions.items():
        group = package.sam["Resources"][f"{name}LogGroup"]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == deploy.LOG_RETENTION_DAYS
        function_name = function["Properties"]["FunctionName"]["Fn::Sub"]
        assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/{function_name}"}


@pytest.mark.parametrize("form", ["sam", "cfn"])
def test_cfn_lint_finds_nothing(package, form):
    from cfnlint.api import lint_file

    path = package.sam_path if form == "sam" else package.cfn_path
    matches = lint_file(path)
    assert [f"{m.rule.id} {m.message}" for m in matches] == []


def test_checkov_passes_offline_with_reasons_for_every_skip(package):
    if not CHECKOV.exists():
        message = f"checkov is not installed at {CHECKOV}: run `make test` (it installs .venv-checkov)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    result = subprocess.run(
        [str(CHECKOV), "--skip-download", "--framework", "cloudformation", "--output", "json",
         "-f", str(package.sam_path), "-f", str(package.cfn_path)],
        capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
    )
    report = json.loads(result.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    scanned = {Path(c["file_path"]).name for c in results["passed_checks"]}
    assert scanned == {package.sam_path.name, package.cfn_path.name}
    for check in results["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]


# --- `chalice deploy`'s own policies ----------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_chalice_deploy_policies_name_exactly_the_stage_resources(stage):
    plan = deploy.stage_plan(stage)
    config = deploy.chalice_config(stage)
    for handler in HANDLERS:
        policy_file = config.scope(chalice_stage=stage, function_name=handler).iam_policy_file
        assert policy_file, f"{handler} has no iam_policy_file for stage {stage}: it would get policy-{stage}.json"
        statements = json.loads((ROOT / ".chalice" / policy_file).read_text())["Statement"]
        grants = {action: as_list(s["Resource"]) for s in statements for action in as_list(s["Action"])}
        log_group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{plan.app_name}-{stage}-{handler}:*"
        assert grants == {
            "dynamodb:PutItem": [f"arn:aws:dynamodb:*:*:table/{plan.table_names[spec_of_handler(handler)]}"],
            "logs:CreateLogStream": [log_group],
            "logs:PutLogEvents": [log_group],
            "sqs:SendMessage": [f"arn:aws:sqs:*:*:{plan.queue_name}"],
        }


# --- Terraform ----------------------------------------------------------------------------------


def test_terraform_package_builds_and_lacks_what_docs_deploy_md_says(tmp_path):
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    run_chalice("package", "--pkg-format", "terraform", "--stage", "dev", str(tmp_path / "tf"),
                env=env, capture_output=True, text=True, timeout=300)
    resources = json.loads((tmp_path / "tf" / "chalice.tf.json").read_text())["resource"]
    assert sorted(resources["aws_lambda_function"]) == sorted([*HANDLERS, "api_handler"])
    # tools/deploy.py's steps find Terraform's functions (and chalice deploy's) by these names.
    plan = deploy.stage_plan("dev")
    assert sorted(f["function_name"] for f in resources["aws_lambda_function"].values()) == sorted(
        [*plan.function_names, plan.api_function_name]
    )
    patterns = [json.loads(rule["event_pattern"]) for rule in resources["aws_cloudwatch_event_rule"].values()]
    assert sorted(patterns, key=json.dumps) == sorted((h.event_pattern for h in HANDLERS.values()), key=json.dumps)
    # What docs/deploy.md tells Terraform users to add themselves:
    for missing in ("aws_dynamodb_table", "aws_sqs_queue", "aws_lambda_function_event_invoke_config",
                    "aws_cloudwatch_metric_alarm"):
        assert missing not in resources
    assert all("dead_letter_config" not in t for t in resources["aws_cloudwatch_event_target"].values())
