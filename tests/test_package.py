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
from tests.helpers import legacy_index_definition
from tools import deploy, policies
from tools.local_dynamodb import TIME_TO_LIVE
from tools.stage import ROOT, deployable_stages, run_chalice, stage_plan

IN_CI = os.environ.get("CI", "").lower() == "true"
STAGES = sorted(deployable_stages(json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]))
MERGE_TEMPLATE = json.loads((ROOT / "resources.json").read_text())
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
CHECKOV_TIMEOUT_SECONDS = 300  # offline it takes ~10 s; a hang (e.g. waiting on the network) fails the test
QUEUE_ARN = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
# Chalice names a handler's resources after it, CamelCased: task_state_change -> TaskStateChange.
HANDLERS = {source.name: source for source in app.event_sources if hasattr(source, "event_pattern")}
RECONCILE = "Reconcile"  # the scheduled function
API_FUNCTION = "APIHandler"  # Chalice's one function behind every route
KEEP_LEGACY_INDEX = ("no", "yes", "status-index")  # resources.json's KeepLegacyIndex
PARAMETER_VALUES = [{"ReadIndex": read_index, "KeepLegacyIndex": keep}
                    for read_index in ("enabled", "disabled") for keep in KEEP_LEGACY_INDEX]


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


def resolved(node: Any, template: Dict[str, Any], parameters: Dict[str, str]) -> Any:
    """``node`` as CloudFormation makes it for these parameter values (defaults for the others):
    Fn::If decided, AWS::NoValue dropped, and the conditions' Refs to parameters read."""
    values = {name: p.get("Default") for name, p in template["Parameters"].items()} | parameters

    def condition(expression: Any) -> bool:
        [(function, arguments)] = expression.items()
        if function == "Condition":
            return condition(template["Conditions"][arguments])
        if function == "Fn::Equals":
            left, right = (values[a["Ref"]] if isinstance(a, dict) else a for a in arguments)
            return left == right
        if function == "Fn::Not":
            return not condition(arguments[0])
        if function == "Fn::And":
            return all(condition(a) for a in arguments)
        if function == "Fn::Or":
            return any(condition(a) for a in arguments)
        raise AssertionError(function)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if "Fn::If" in value:
                name, then, otherwise = value["Fn::If"]
                return walk(then if condition(template["Conditions"][name]) else otherwise)
            return {key: inner for key, inner in ((key, walk(inner)) for key, inner in value.items()) if inner != NO_VALUE}
        if isinstance(value, list):
            return [inner for inner in map(walk, value) if inner != NO_VALUE]
        return value

    return walk(node)


NO_VALUE = {"Ref": "AWS::NoValue"}


def kept_index(spec: TableSpec, keep: str) -> "Dict[str, Any] | None":
    """The index of an earlier version KeepLegacyIndex keeps: the previous read index (yes), or the
    status index before it (status-index)."""
    return {"no": None, "yes": tables.PHASE_INDEX.definition(), "status-index": legacy_index_definition(spec)}[keep]


def template_tables(parameters: Dict[str, str]) -> Dict[TableSpec, Dict[str, Any]]:
    """Each table's properties as the packaged stack makes them for ``parameters``."""
    return {spec: resolved(MERGE_TEMPLATE["Resources"][f"{logical_id(spec)}Table"]["Properties"], MERGE_TEMPLATE,
                           parameters) for spec in tables.ALL}


@pytest.mark.parametrize("parameters", PARAMETER_VALUES, ids=lambda p: "-".join(p.values()))
def test_merge_template_tables_agree_with_the_table_definitions(parameters):
    """Whatever create_table_request holds (keys, attributes, billing, the read index) is in resources.json,
    for each ReadIndex; KeepLegacyIndex=yes / status-index keeps exactly the index an earlier ecs-state made."""
    found = {name for name, r in MERGE_TEMPLATE["Resources"].items() if r.get("Type") == "AWS::DynamoDB::Table"}
    assert found == {f"{logical_id(spec)}Table" for spec in tables.ALL}
    for spec, properties in template_tables(parameters).items():
        request = spec.create_table_request("any-name", read_index=parameters["ReadIndex"] == "enabled")
        legacy = kept_index(spec, parameters["KeepLegacyIndex"])
        if legacy is not None:
            request["GlobalSecondaryIndexes"] = request.get("GlobalSecondaryIndexes", []) + [legacy]
            request["AttributeDefinitions"] += [
                {"AttributeName": key["AttributeName"], "AttributeType": "S"} for key in legacy["KeySchema"]
            ]
        definitions = {json.dumps(a, sort_keys=True) for a in request.pop("AttributeDefinitions")}
        assert {json.dumps(a, sort_keys=True) for a in properties["AttributeDefinitions"]} == definitions
        assert len(properties["AttributeDefinitions"]) == len(definitions)  # DynamoDB refuses an unused definition
        for key, value in request.items():
            if key != "TableName":
                assert properties.get(key) == value, f"{logical_id(spec)}Table {key} differs from chalicelib.tables"
        assert "GlobalSecondaryIndexes" in request or "GlobalSecondaryIndexes" not in properties
        assert properties["TimeToLiveSpecification"] == TIME_TO_LIVE
        assert properties["Tags"] == [{"Key": "ecs-state:deployment", "Value": {"Ref": "AWS::StackName"}}]


def index_names(properties: Dict[str, Any]) -> "set[str]":
    return {index["IndexName"] for index in properties.get("GlobalSecondaryIndexes", [])}


# The tables an earlier version's stack has: the previous one's (the read index before READ_INDEX),
# and the one before it (keyed by status), each with ReadIndex on.
EARLIER_STACKS = {
    "previous": lambda spec: {tables.PHASE_INDEX.name},
    "before the previous": lambda spec: {spec.legacy_index},
}


@pytest.mark.parametrize("made_by, keep", [("previous", "yes"), ("before the previous", "status-index")])
def test_a_stack_of_an_earlier_version_upgrades_in_two_updates_of_one_index_each(made_by, keep):
    """CloudFormation creates or deletes at most one global secondary index per table per update: update 1
    (KeepLegacyIndex=yes, or status-index for a stack made before the previous version) adds the read index
    and keeps the old one, update 2 drops it. Another value (no included: a single update) would change two
    or more at once: CloudFormation refuses that update and rolls it back, the tables unchanged."""
    for spec in tables.ALL:
        before = EARLIER_STACKS[made_by](spec)
        update_1 = index_names(template_tables({"KeepLegacyIndex": keep})[spec])
        update_2 = index_names(template_tables({"KeepLegacyIndex": "no"})[spec])
        assert update_1 == before | {tables.READ_INDEX.name}
        assert update_2 == {tables.READ_INDEX.name}
        assert len(update_1 ^ before) == len(update_2 ^ update_1) == 1
        for wrong in set(KEEP_LEGACY_INDEX) - {keep}:
            assert len(index_names(template_tables({"KeepLegacyIndex": wrong})[spec]) ^ before) > 1, wrong
        assert spec.legacy_indexes == (spec.legacy_index, tables.PHASE_INDEX.name)  # what make migrate drops


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
    assert alarm.pop("AlarmActions") == alarm.pop("OKActions")  # as make deploy NOTIFY= sets them
    expected = deploy.alarm_settings("queue")
    del expected["Dimensions"]
    assert alarm == expected
    for handler in HANDLERS:
        config = resources[f"{to_cfn_resource_name(handler)}InvokeConfig"]["Properties"]
        assert {key: config[key] for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds")} == {
            key: value for key, value in deploy.event_invoke_config("arn").items() if key != "DestinationConfig"
        }
    config = dict(resources[f"{RECONCILE}InvokeConfig"]["Properties"])
    assert (config.pop("FunctionName"), config.pop("Qualifier")) == ({"Ref": RECONCILE}, "$LATEST")
    assert config == deploy.RECONCILE_INVOKE_CONFIG  # no destination: the next pass follows


def test_the_first_pass_output_sends_what_make_deploy_sends():
    outputs = MERGE_TEMPLATE["Outputs"]
    assert outputs["ReconcileFunctionName"] == {"Value": {"Ref": RECONCILE}}
    command = outputs["FirstReconcilePass"]["Value"]["Fn::Sub"]
    assert command.startswith("aws lambda invoke --function-name ${Reconcile} --invocation-type Event ")
    payload = json.loads(command.split("--payload '", 1)[1].split("'", 1)[0])
    made = deploy.scheduled_event("${AWS::AccountId}", "${AWS::Region}", 0)
    assert set(payload) == set(made)
    assert {key: payload[key] for key in ("version", "detail-type", "source", "account", "region", "resources", "detail")} == {
        key: made[key] for key in ("version", "detail-type", "source", "account", "region", "resources", "detail")
    }


@pytest.mark.parametrize("parameters, actions", [
    ({}, []),
    ({"NotificationTopicArn": "arn:aws:sns:us-east-1:111122223333:ops"}, [{"Ref": "NotificationTopicArn"}]),
    ({"NotificationEmail": "ops@example.com"}, [{"Ref": "NotificationTopic"}]),
    ({"NotificationTopicArn": "arn:aws:sns:us-east-1:111122223333:ops", "NotificationEmail": "ops@example.com"},
     [{"Ref": "NotificationTopicArn"}, {"Ref": "NotificationTopic"}]),
])
def test_the_alarm_notifies_the_topic_or_the_email_given(parameters, actions):
    alarm = resolved(MERGE_TEMPLATE["Resources"]["DeadLetterQueueAlarm"]["Properties"], MERGE_TEMPLATE, parameters)
    assert alarm["AlarmActions"] == alarm["OKActions"] == actions
    topic = MERGE_TEMPLATE["Resources"]["NotificationTopic"]
    assert topic["Condition"] == "NotifiesEmail"
    assert topic["Properties"]["Subscription"] == [{"Endpoint": {"Ref": "NotificationEmail"}, "Protocol": "email"}]


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


def test_each_function_gets_the_table_names_index_setting_and_queue_by_ref(package):
    assert set(package.functions) == {to_cfn_resource_name(name) for name in HANDLERS} | {RECONCILE, API_FUNCTION}
    for function in package.functions.values():
        variables = function["Properties"]["Environment"]["Variables"]
        for spec in tables.ALL:
            assert variables[spec.name_env] == table_name_ref(spec)
        assert variables["ECS_STATE_READ_INDEX"] == {"Ref": "ReadIndex"}
        assert variables["ECS_STATE_DEAD_LETTER_QUEUE"] == {"Ref": "DeadLetterQueue"}  # its URL
        assert variables["POWERTOOLS_SERVICE_NAME"] == "ecs-state"  # Chalice's own variables stay
        assert variables["ECS_STATE_RETENTION_DAYS"] == "16"  # and the stage's settings


def test_reconcile_runs_on_the_stage_schedule_for_up_to_300_seconds(package):
    reconcile = package.functions[RECONCILE]["Properties"]
    assert reconcile["Timeout"] == 300
    assert reconcile["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-reconcile"}
    [event] = reconcile["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == "rate(15 minutes)"


def test_one_rule_per_detail_type_with_the_app_patterns(package):
    rules = package.of_type(package.cfn, "AWS::Events::Rule").values()
    patterns = [r["Properties"]["EventPattern"] for r in rules if "EventPattern" in r["Properties"]]
    assert sorted(patterns, key=json.dumps) == sorted(
        ({"source": ["aws.ecs"], "detail-type": [spec.detail_type]} for spec in tables.ALL), key=json.dumps
    )


def test_failed_invocations_go_to_the_queue(package):
    configs = package.of_type(package.sam, "AWS::Lambda::EventInvokeConfig")
    # The asynchronously invoked functions; API Gateway calls the API function synchronously.
    assert sorted(c["Properties"]["FunctionName"]["Ref"] for c in configs.values()) == sorted(
        [*(to_cfn_resource_name(name) for name in HANDLERS), RECONCILE]
    )
    for config in configs.values():
        properties = config["Properties"]
        assert properties["Qualifier"] == "$LATEST"
        if properties["FunctionName"]["Ref"] == RECONCILE:
            continue
        assert properties["DestinationConfig"] == {"OnFailure": {"Destination": QUEUE_ARN}}
        assert properties["MaximumRetryAttempts"] == deploy.EVENT_INVOKE_MAX_RETRY_ATTEMPTS
        assert properties["MaximumEventAgeInSeconds"] == deploy.EVENT_INVOKE_MAX_EVENT_AGE_SECONDS


def test_undeliverable_events_go_to_the_queue(package):
    rules = {name: rule for name, rule in package.of_type(package.cfn, "AWS::Events::Rule").items()
             if "EventPattern" in rule["Properties"]}
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


def role_statements(package: Package, function: Dict[str, Any], parameters: Dict[str, str]) -> List[Dict[str, Any]]:
    role = package.sam["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    documents = [policy["PolicyDocument"] for policy in role["Properties"]["Policies"]]
    return [s for document in resolved(documents, package.sam, parameters) for s in document["Statement"]]


def template_resources(spec: "TableSpec | None", function: str) -> Dict[str, Any]:
    """tools/policies.py's resources as the packaged stack names them: exact ARNs."""
    def table(spec: TableSpec) -> Dict[str, Any]:
        base = logical_id(spec)
        existing = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Existing%sTableName}" % base
        return {"Fn::If": [f"Create{base}Table", {"Fn::GetAtt": [f"{base}Table", "Arn"]}, {"Fn::Sub": existing}]}

    def index(spec: TableSpec, name: str) -> Dict[str, Any]:
        base = logical_id(spec)
        existing = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Existing%sTableName}" % base
        return {"Fn::If": [f"Create{base}Table", {"Fn::Sub": f"${{{base}Table.Arn}}/index/{name}"},
                           {"Fn::Sub": f"{existing}/index/{name}"}]}

    def ecs(resource: str) -> Dict[str, Any]:
        return {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:" + resource}

    return {
        "own-table": table(spec) if spec else None,
        "tables": [table(s) for s in tables.ALL],
        "index": [index(s, name) for name in policies.QUERIED_INDEXES for s in tables.ALL],
        "own-log-group": {"Fn::GetAtt": [f"{function}LogGroup", "Arn"]},
        "queue": QUEUE_ARN,
        "any": "*",
        "clusters": ecs("cluster/*"),
        "tasks": ecs("task/*"),
        "container-instances": ecs("container-instance/*"),
    }


EXISTING_TABLES = {"ExistingTaskTableName": "ECSTaskState", "ExistingContainerInstanceTableName": "ECSCtrInstanceState"}


@pytest.mark.parametrize("parameters", [{"ReadIndex": index, **tables_given} for index in ("enabled", "disabled")
                                        for tables_given in ({}, EXISTING_TABLES)], ids=str)
def test_each_role_grants_exactly_what_its_function_calls_on_the_stacks_resources(package, parameters):
    kinds = {to_cfn_resource_name(h): (policies.EVENT, spec_of_handler(h)) for h in HANDLERS}
    kinds |= {RECONCILE: (policies.RECONCILE, None), API_FUNCTION: (policies.API, None)}
    in_clusters = resolved({"ArnLike": {"ecs:cluster": template_resources(None, "")["clusters"]}}, package.sam, parameters)
    for name, (kind, spec) in kinds.items():
        statements = role_statements(package, package.functions[name], parameters)
        resources = resolved(template_resources(spec, name), package.sam, parameters)
        expected = policies.rendered(policies.grants(kind, parameters["ReadIndex"] == "enabled"),
                                     resources.__getitem__, lambda condition: in_clusters)
        assert policies.normalized(statements) == expected, name
    # No other role or policy in the deployed stack grants anything.
    roles = package.of_type(package.cfn, "AWS::IAM::Role")
    assert sorted(roles) == sorted(f["Properties"]["Role"]["Fn::GetAtt"][0] for f in package.functions.values())
    assert package.of_type(package.cfn, "AWS::IAM::Policy") == {}
    assert package.of_type(package.cfn, "AWS::IAM::ManagedPolicy") == {}


def test_log_groups_have_the_deploy_tool_retention(package):
    for name, function in package.functions.items():
        group = package.sam["Resources"][f"{name}LogGroup"]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == deploy.LOG_RETENTION_DAYS
        function_name = function["Properties"]["FunctionName"]["Fn::Sub"]
        assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/{function_name}"}


# cfn-lint's Lambda runtime lifecycle rules compare the runtime's end-of-support dates with today's:
# a test that checks them fails on a date, not on a change (the python3.11 runtime's dates are
# held to docs/deploy.md instead, below).
RUNTIME_LIFECYCLE_RULES = ["E2531", "E2533", "W2531"]


@pytest.mark.parametrize("form", ["sam", "cfn"])
def test_cfn_lint_finds_nothing(package, form):
    from cfnlint.api import ManualArgs, lint_file

    path = package.sam_path if form == "sam" else package.cfn_path
    matches = lint_file(path, ManualArgs(ignore_checks=RUNTIME_LIFECYCLE_RULES))
    assert [f"{m.rule.id} {m.message}" for m in matches] == []


def test_the_docs_give_the_end_of_support_dates_of_the_packaged_lambda_runtime(package):
    from importlib.resources import files

    lifecycle = json.loads((files("cfnlint") / "data" / "AdditionalSpecs" / "LmbdRuntimeLifecycle.json").read_text())
    [runtime] = {function["Properties"]["Runtime"] for function in package.functions.values()}
    dates = lifecycle[runtime]
    text = " ".join((ROOT / "docs" / "deploy.md").read_text().split())
    assert (f"AWS deprecates the `{runtime}` Lambda runtime on {dates['deprecated']}, blocks creating functions "
            f"on it from {dates['create-block']} and updating them from {dates['update-block']}") in text


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


# --- Terraform ----------------------------------------------------------------------------------


def test_terraform_package_builds_and_lacks_what_docs_deploy_md_says(tmp_path):
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    run_chalice("package", "--pkg-format", "terraform", "--stage", "dev", str(tmp_path / "tf"),
                env=env, capture_output=True, text=True, timeout=300)
    resources = json.loads((tmp_path / "tf" / "chalice.tf.json").read_text())["resource"]
    assert sorted(resources["aws_lambda_function"]) == sorted([*HANDLERS, "reconcile", "api_handler"])
    # tools/deploy.py's steps find Terraform's functions (and chalice deploy's) by these names.
    plan = stage_plan("dev")
    assert sorted(f["function_name"] for f in resources["aws_lambda_function"].values()) == sorted(plan.function_names)
    patterns = [json.loads(rule["event_pattern"]) for rule in resources["aws_cloudwatch_event_rule"].values()
                if "event_pattern" in rule]
    assert sorted(patterns, key=json.dumps) == sorted((h.event_pattern for h in HANDLERS.values()), key=json.dumps)
    # What docs/deploy.md tells Terraform users to add themselves:
    for missing in ("aws_dynamodb_table", "aws_sqs_queue", "aws_lambda_function_event_invoke_config",
                    "aws_cloudwatch_metric_alarm"):
        assert missing not in resources
    assert all("dead_letter_config" not in t for t in resources["aws_cloudwatch_event_target"].values())
