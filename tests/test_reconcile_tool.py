"""`make reconcile`: one pass from a workstation, on moto (STS, DynamoDB) and the fake ECS API
(tests/fake_ecs.py), which the real botocore client reaches through AWS_ENDPOINT_URL_ECS."""
import json
import os

import boto3
import pytest
from moto import mock_aws

from chalicelib import tables
from chalicelib.config import RETENTION_DAYS_ENV
from chalicelib.runtime import Runtime
from tests.fake_ecs import FakeECS
from tools import reconcile
from tools.local_dynamodb import create_tables
from tools.stage import DeployError

STAGE_TABLES = {tables.TASKS: "ecs-state-dev-tasks", tables.CONTAINER_INSTANCES: "ecs-state-dev-container-instances"}


@pytest.fixture
def ecs(monkeypatch):
    """moto for STS and DynamoDB, the dev stage's tables, a cluster with a task and an instance in ECS."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the changes below stay in this test
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "TASK_TABLE_NAME",
                 "CONTAINER_INSTANCE_TABLE_NAME", RETENTION_DAYS_ENV):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    with FakeECS() as fake, mock_aws():
        fake.add_cluster("web")
        fake.add_task("web", version=4)
        fake.add_container_instance("web")
        os.environ["AWS_ENDPOINT_URL_ECS"] = fake.endpoint  # (the tool's Runtime makes its clients on first use)
        create_tables(boto3.client("dynamodb"), STAGE_TABLES, read_index=True)
        yield fake


def test_a_pass_says_where_it_runs_then_prints_its_summary(ecs, capsys, monkeypatch):
    built = []  # the Runtime the tool runs its pass with

    class RecordedRuntime(Runtime):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(reconcile, "Runtime", RecordedRuntime)
    assert reconcile.main(["--stage", "dev"]) == 0

    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first == ("reconcile pass, stage dev: account 123456789012 as arn:aws:sts::123456789012:user/moto, "
                     "region us-east-1, tables ecs-state-dev-tasks, ecs-state-dev-container-instances")
    summary = json.loads(out[out.index("\n{") + 1:])
    assert (summary["written"], summary["complete"], summary["errors"]) == ({"created": 2, "updated": 0}, True, [])
    items = boto3.client("dynamodb").scan(TableName="ecs-state-dev-tasks")["Items"]  # the stage's own table
    assert [item["cw_source"]["S"] for item in items] == ["reconcile"]
    assert "cw_expires_at" not in items[0] and items[0]["cw_phase"] == {"S": "open"}  # the stage's read index
    assert os.environ["ECS_STATE_RETENTION_DAYS"] == "16"  # the stage's environment, loaded through Chalice
    [process] = built  # and the settings its Runtime was built from
    assert process.config.retention_seconds == 16 * 86_400 and process.config.task_table == "ecs-state-dev-tasks"


def test_a_failed_pass_exits_non_zero(ecs, capsys):
    ecs.fail(1, operation="ListTasks", code="AccessDeniedException", status=400, message="not allowed")

    assert reconcile.main(["--stage", "dev"]) == 1

    captured = capsys.readouterr()
    assert '"complete": false' in captured.out
    assert "error: the pass failed: arn:aws:ecs:us-east-1:111122223333:cluster/web: " in captured.err
    assert "AccessDeniedException" in captured.err


def test_a_pass_out_of_budget_exits_non_zero(ecs, capsys):
    assert reconcile.main(["--stage", "dev", "--budget-seconds", "1e-9"]) == 1
    assert "error: the pass did not finish within its budget" in capsys.readouterr().err


@pytest.mark.parametrize("argv, problem", [
    (["--stage", "dev", "--budget-seconds", "0"], "--budget-seconds must be above 0"),
    (["--stage", "dev", "--budget-seconds", "soon"], "invalid float value"),
    ([], "the following arguments are required: --stage"),
])
def test_arguments_are_checked(argv, problem, capsys):
    with pytest.raises(SystemExit):
        reconcile.main(argv)
    assert problem in capsys.readouterr().err


def test_the_local_stage_and_a_missing_region_are_refused(ecs):
    with pytest.raises(DeployError, match="'local' is for chalice local only"):
        reconcile.main(["--stage", "local"])
    os.environ.pop("AWS_DEFAULT_REGION")
    os.environ.pop("AWS_REGION", None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    with pytest.raises(DeployError, match="no AWS region"):
        reconcile.main(["--stage", "dev"])
