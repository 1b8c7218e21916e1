"""A stage of .chalice/config.json as the tools see it (deploy, destroy, migrate, reconcile).

Everything is read through Chalice's own config loading, so the tools and
`chalice deploy` agree on the stage's variables, names and functions.
"""
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, List, Mapping, Sequence, Tuple

from chalicelib import tables
from chalicelib.config import DEAD_LETTER_QUEUE_ENV, ENABLED, EVENTS_ROUTE_ENV, Config, from_environment
from chalicelib.errors import ConfigError
from chalicelib.model.lifecycle import ItemRules
from chalicelib.tables import TableSpec

ROOT = Path(__file__).resolve().parent.parent
# On every table ecs-state creates (tools/deploy.py, resources.json), valued with the
# deployment's name: <app>-<stage>, which is also the packaged stack's name. A table
# without it was made by someone else (the docs example, Terraform): ecs-state asks
# before changing it, and never deletes it.
DEPLOYMENT_TAG = "ecs-state:deployment"


class DeployError(RuntimeError):
    """The account holds something ecs-state cannot use or fix by itself."""


@dataclass(frozen=True)
class StagePlan:
    """What one stage is made of, all derived from .chalice/config.json and chalicelib.tables."""

    stage: str
    app_name: str
    environment: Mapping[str, str]  # the stage's environment_variables, as its functions get them
    table_names: Mapping[TableSpec, str]
    event_function_names: Tuple[str, ...]  # as `chalice deploy` names them: <app>-<stage>-<handler>
    reconcile_function_name: str
    api_function_name: str  # the read API's function: Chalice names it <app>-<stage>
    queue_name: str  # the dead-letter queue (ECS_STATE_DEAD_LETTER_QUEUE)
    project_dir: Path = ROOT  # where its .chalice/ (config.json, policy files) is

    @property
    def deployment(self) -> str:
        """<app>-<stage>: the value of DEPLOYMENT_TAG, and the packaged stack's name."""
        return f"{self.app_name}-{self.stage}"

    @property
    def alarm_name(self) -> str:
        return self.queue_name

    @property
    def function_names(self) -> Tuple[str, ...]:
        return (*self.event_function_names, self.reconcile_function_name, self.api_function_name)

    @property
    def log_group_names(self) -> List[str]:
        return [f"/aws/lambda/{function}" for function in self.function_names]

    @cached_property
    def config(self) -> Config:
        """The stage's settings, as its functions read them (parsed once per plan)."""
        return from_environment(self.environment)

    @property
    def item_rules(self) -> ItemRules:
        """The stage's read index and retention (a bad value raises ValueError naming its variable)."""
        return self.config.rules


def chalice_config(stage: str, project_dir: Path = ROOT, deployable_only: bool = True) -> Any:
    """Chalice's own view of the stage's configuration (refusing a stage config.json lacks, and
    unless ``deployable_only`` is False, one for chalice local only)."""
    from chalice.cli.factory import CLIFactory

    factory = CLIFactory(str(project_dir))
    stages = factory.load_project_config().get("stages", {})
    if stage not in stages:
        raise DeployError(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(sorted(stages))})")
    if deployable_only and stage not in deployable_stages(stages):
        raise DeployError(f"stage {stage!r} is for chalice local only: it enables POST /events")
    return factory.create_config_obj(chalice_stage_name=stage)


def deployable_stages(stages: Mapping[str, Any]) -> List[str]:
    """The stages of config.json that may be deployed: not those that turn on POST /events (local)."""
    return [
        name for name, stage in stages.items()
        if stage.get("environment_variables", {}).get(EVENTS_ROUTE_ENV) != ENABLED
    ]


def stage_plan(stage: str, project_dir: Path = ROOT) -> StagePlan:
    config = chalice_config(stage, project_dir)
    environment = dict(config.environment_variables)
    queue_name = environment.get(DEAD_LETTER_QUEUE_ENV, "")
    if not queue_name or queue_name.startswith("https://"):
        raise DeployError(
            f"stage {stage!r} must name its dead-letter queue in {DEAD_LETTER_QUEUE_ENV} "
            f"(e.g. {config.app_name}-{stage}-dead-letters), got {queue_name!r}"
        )
    event_handlers, [reconcile_handler] = handler_names()
    try:
        settings = from_environment(environment)
    except ConfigError as error:
        raise DeployError(f"stage {stage!r}: {error}") from None
    return StagePlan(
        stage=stage,
        app_name=config.app_name,
        environment=environment,
        table_names={spec: settings.table_name(spec) for spec in tables.ALL},
        event_function_names=tuple(f"{config.app_name}-{stage}-{handler}" for handler in event_handlers),
        reconcile_function_name=f"{config.app_name}-{stage}-{reconcile_handler}",
        api_function_name=f"{config.app_name}-{stage}",
        queue_name=queue_name,
        project_dir=project_dir,
    )


def handler_names() -> Tuple[List[str], List[str]]:
    """app.py's EventBridge event handlers and its scheduled ones (app.py makes no AWS call at import)."""
    from chalice.app import CloudWatchEventConfig, ScheduledEventConfig

    from app import app

    return (
        [source.name for source in app.event_sources if isinstance(source, CloudWatchEventConfig)],
        [source.name for source in app.event_sources if isinstance(source, ScheduledEventConfig)],
    )


def run_chalice(*args: str, **options: Any) -> subprocess.CompletedProcess:
    """Run this venv's chalice CLI in the project directory; its failure raises CalledProcessError."""
    chalice = Path(sys.executable).with_name("chalice")
    return subprocess.run([str(chalice), *args], cwd=ROOT, check=True, **options)


def report(changes: Sequence[str]) -> None:
    for change in changes or ["nothing to change"]:
        print(f"  - {change}")


def cli(main: Callable[[], int]) -> None:
    """Exit with main's status; a DeployError or a failed chalice step prints one line, not a traceback."""
    try:
        sys.exit(main())
    except DeployError as error:
        sys.exit(f"error: {error}")
    except subprocess.CalledProcessError as error:
        sys.exit(f"error: {' '.join(map(str, error.cmd))} failed with exit status {error.returncode}")


def aws_caller() -> Tuple[Any, Mapping[str, str]]:
    """A session on the caller's own credentials and region, and who that is (STS), for the tools
    that act on a stage's account; DeployError without a region."""
    import boto3

    session = boto3.session.Session()
    if not session.region_name:
        raise DeployError("no AWS region: set AWS_DEFAULT_REGION, or a region in your profile")
    return session, session.client("sts").get_caller_identity()
