"""Deployment settings: stages, least-privilege policies, and what ships in the zip."""
import json
from pathlib import Path

from chalicelib import config as settings
from chalicelib import tables
from tools.local_dynamodb import LOCAL_RETENTION_DAYS

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



DEPLOYED_STAGES = ("dev", "prod")
STAGE_SETTINGS = ("ECS_STATE_READ_INDEX", "ECS_STATE_RETENTION_DAYS", "ECS_STATE_RECONCILE_MINUTES")


def test_each_deployed_stage_writes_its_settings_out_and_they_are_valid():
    for stage in DEPLOYED_STAGES:
        variables = CONFIG["stages"][stage]["environment_variables"]
        assert set(STAGE_SETTINGS) | {settings.DEAD_LETTER_QUEUE_ENV} <= set(variables), stage
        assert variables[settings.DEAD_LETTER_QUEUE_ENV] == f"ecs-state-{stage}-dead-letters"
        settings.from_environment(variables)  # a bad value raises, naming its variable


def test_the_local_stage_keeps_items_as_long_as_the_local_runs_do():
    """What a local run stores never expires while one looks at it (make run sets the same)."""
    variables = CONFIG["stages"]["local"]["environment_variables"]
    assert variables["ECS_STATE_RETENTION_DAYS"] == str(LOCAL_RETENTION_DAYS)
    assert set(STAGE_SETTINGS) <= set(variables)
    assert settings.DEAD_LETTER_QUEUE_ENV not in variables  # events that cannot be stored just fail locally


def test_reconcile_has_its_own_policy_and_the_time_a_pass_needs():
    from chalicelib.reconcile.passes import STOP_MARGIN_SECONDS
    from tools.stage import chalice_config

    for stage in DEPLOYED_STAGES:
        config = chalice_config(stage)
        reconcile = config.scope(chalice_stage=stage, function_name="reconcile")
        assert reconcile.iam_policy_file == f"policy-{stage}-reconcile.json"
        assert reconcile.lambda_timeout == 300 > STOP_MARGIN_SECONDS
        for handler in ("task_state_change", "container_instance_state_change"):
            assert config.scope(chalice_stage=stage, function_name=handler).lambda_timeout == CONFIG["lambda_timeout"]
