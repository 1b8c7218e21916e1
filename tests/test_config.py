"""Deployment settings: stages, least-privilege policies, and what ships in the zip."""
import json
from pathlib import Path


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


def test_only_powertools_ships_in_the_zip_and_it_is_pinned():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == ["aws-lambda-powertools==3.37.0"]

