"""What `chalice package` deploys per stage: the routes, their authorization, the API's role."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chalice.utils import to_cfn_resource_name

from chalicelib.config import EVENTS_ROUTE_ENV as EVENTS_ROUTE_VARIABLE
from chalicelib.tables import ALL
from tools.local_dynamodb import ROOT
from tools.stage import deployable_stages

CHALICE_DIR = ROOT / ".chalice"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
DEPLOYED_STAGES = deployable_stages(CONFIG["stages"])
READ_ROUTES = {"/tasks", "/tasks/{id}", "/container-instances", "/container-instances/{id}", "/clusters"}


@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    """stage -> its sam.json, each stage packaged once per session (the first run fetches wheels from PyPI)."""
    templates = {}

    def package(stage):
        if stage not in templates:
            out = tmp_path_factory.mktemp(f"package-{stage}")
            environment = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
            environment.pop(EVENTS_ROUTE_VARIABLE, None)
            subprocess.run(
                [str(Path(sys.executable).parent / "chalice"), "package", "--stage", stage, str(out)],
                cwd=ROOT, env=environment, check=True, capture_output=True, timeout=300,
            )
            templates[stage] = json.loads((out / "sam.json").read_text())
        return templates[stage]

    return package


def api_definition(template):
    return template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]


def role_policy(template, function):
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy,) = template["Resources"][role]["Properties"]["Policies"]
    return policy["PolicyDocument"]


def stage_tables(stage):
    variables = CONFIG["stages"][stage]["environment_variables"]
    return [variables[spec.name_env] for spec in ALL]


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_deployed_stages_have_the_read_routes_and_no_post_events(packaged, stage):
    paths = api_definition(packaged(stage))["paths"]
    assert set(paths) == READ_ROUTES
    assert all(set(methods) == {"get"} for methods in paths.values())


def test_the_local_stage_has_post_events(packaged):
    paths = api_definition(packaged("local"))["paths"]
    assert set(paths) == READ_ROUTES | {"/events"}
    assert set(paths["/events"]) == {"post"}


@pytest.mark.parametrize("stage", DEPLOYED_STAGES + ["local"])
def test_every_method_requires_sigv4_iam_authorization(packaged, stage):
    definition = api_definition(packaged(stage))
    assert definition["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    methods = [method for methods in definition["paths"].values() for method in methods.values()]
    assert methods and all(method["security"] == [{"sigv4": []}] for method in methods)


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_the_api_function_gets_the_stages_read_only_policy_and_the_writers_their_own(packaged, stage):
    # policy-<stage>.json is the stage's default, which only the API function uses: each
    # event handler names its own write policy in config.json (see tests/test_package.py).
    template = packaged(stage)
    api_policy = json.loads((CHALICE_DIR / f"policy-{stage}.json").read_text())
    assert role_policy(template, "APIHandler") == api_policy
    for handler in ("task_state_change", "container_instance_state_change"):
        policy_file = CONFIG["stages"][stage]["lambda_functions"][handler]["iam_policy_file"]
        own_policy = json.loads((CHALICE_DIR / policy_file).read_text())
        assert role_policy(template, to_cfn_resource_name(handler)) == own_policy != api_policy


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_the_api_policy_allows_only_reads_on_the_stages_tables_and_read_index(stage):
    # (tests/test_policies.py checks each statement exactly, and against the calls the API makes.)
    arn = "arn:*:{}:${{aws:RequestedRegion}}:${{aws:PrincipalAccount}}:{}"
    policy = json.loads((CHALICE_DIR / f"policy-{stage}.json").read_text())
    dynamodb = [s for s in policy["Statement"] if any(a.startswith("dynamodb:") for a in _list(s["Action"]))]
    assert [statement["Effect"] for statement in policy["Statement"]] == ["Allow"] * len(policy["Statement"])
    assert {action for s in dynamodb for action in _list(s["Action"])} == {
        "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"
    }
    expected = {arn.format("dynamodb", f"table/{name}{suffix}")
                for name in stage_tables(stage)
                for suffix in ("", "/index/cw_listing-cw_listing_key-index", "/index/clusterArn-cw_phase-index")}
    assert {resource for s in dynamodb for resource in _list(s["Resource"])} == expected
    others = [action for s in policy["Statement"] if s not in dynamodb for action in _list(s["Action"])]
    assert all(action.startswith("logs:") for action in others)
    log_resources = {resource for s in policy["Statement"] if s not in dynamodb for resource in _list(s["Resource"])}
    assert log_resources == {arn.format("logs", f"log-group:/aws/lambda/ecs-state-{stage}:*")}


def _list(value):
    return value if isinstance(value, list) else [value]
