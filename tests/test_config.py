"""Deployment settings: stages, least-privilege policies, and what ships in the zip."""
import json
from pathlib import Path

import pytest

from chalicelib import tables

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())


def stage_tables(stage):
    variables = CONFIG["stages"][stage]["environment_variables"]
    return {spec: variables[spec.name_env] for spec in tables.ALL}


def test_stages_dev_and_prod_have_their_own_tables():
    assert {"dev", "prod"} <= set(CONFIG["stages"])
    assert set(stage_tables("dev").values()).isdisjoint(stage_tables("prod").values())
    assert CONFIG["app_name"] == "ecs-state"
    assert CONFIG["autogen_policy"] is False
    assert CONFIG["lambda_timeout"] <= 60 and CONFIG["lambda_memory_size"] >= 128


def test_prod_uses_the_docs_example_tables():
    assert set(stage_tables("prod").values()) == {spec.default_name for spec in tables.ALL}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_policy_allows_only_putitem_on_the_stages_two_tables_plus_logs(stage):
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    dynamodb = [s for s in policy["Statement"] if any(a.startswith("dynamodb:") for a in _list(s["Action"]))]
    assert len(dynamodb) == 1
    assert _list(dynamodb[0]["Action"]) == ["dynamodb:PutItem"]
    assert sorted(_list(dynamodb[0]["Resource"])) == sorted(
        f"arn:aws:dynamodb:*:*:table/{name}" for name in stage_tables(stage).values()
    )
    others = [s for s in policy["Statement"] if s is not dynamodb[0]]
    for statement in others:
        assert all(action.startswith("logs:") for action in _list(statement["Action"]))
        assert all(f"/aws/lambda/ecs-state-{stage}-" in resource for resource in _list(statement["Resource"]))
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])


def test_only_powertools_ships_in_the_zip_and_it_is_pinned():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == ["aws-lambda-powertools==3.37.0"]


def _list(value):
    return value if isinstance(value, list) else [value]
