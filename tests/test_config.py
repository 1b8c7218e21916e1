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


def import_app(**variables):
    """`import app` in a fresh interpreter with these variables added: (exit status, stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, **variables}
    done = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stderr


def test_importing_the_app_reads_only_the_schedule_and_the_routes():
    """Chalice loads a stage's variables before the import (chalice deploy, package, local), but its
    test client only while it invokes, and the tools import app.py from a shell: the import checks
    the two settings that shape the app, and leaves the rest to the first invocation."""
    status, err = import_app(**{settings.HIGH_WATER_ENTRIES_ENV: "ten", settings.RETENTION_DAYS_ENV: "1"})
    assert status == 0, err  # read on the first invocation, by the stage's function
    status, err = import_app(**{settings.RECONCILE_MINUTES_ENV: "4"})
    assert status != 0 and "ConfigError: ECS_STATE_RECONCILE_MINUTES must be from 5 to 1440, got 4" in err


def test_a_stage_plan_takes_the_stages_settings_whatever_the_shell_sets(monkeypatch):
    from tools.stage import stage_plan

    monkeypatch.setenv(settings.HIGH_WATER_ENTRIES_ENV, "ten")
    monkeypatch.setenv(settings.RETENTION_DAYS_ENV, "1")
    plan = stage_plan("dev")
    assert plan.config == settings.from_environment(plan.environment)
    assert plan.config.retention_seconds == 16 * 86_400
