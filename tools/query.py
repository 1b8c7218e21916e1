"""`make query STAGE=<stage> ARGS="..."`: the recorded state, read from a terminal as the read API answers it.

    make query STAGE=prod ARGS="tasks --cluster prod-a --service worker --status stopped --since 1h"
    make query STAGE=prod ARGS="tasks --cluster prod-a --stop-code EssentialContainerExited --since today --all-pages"
    make query STAGE=prod ARGS="tasks get 9d8a6c0e2f1b4a3c8e7d6f5a4b3c2d1e --cluster prod-a"
    make query STAGE=prod ARGS="container-instances --cluster batch-ec2 --status draining --output json"
    make query STAGE=prod ARGS="clusters"

It runs the read routes' own code (chalicelib/api/reads.py: ReadApi.list_items,
get_item and list_clusters, through the Runtime built from the stage's settings,
as `make reconcile` builds its own), with your AWS credentials and region: no
HTTP, no API Gateway. Each option goes over as the string the route's query
parameter would be (--stop-code is stopCode), so what is accepted and refused,
and the message saying why, are the routes'. Times too: ISO 8601 with its zone,
a date (UTC), `today`, or a time ago (30m, 1h, 2d, 1w).

A cluster name (--cluster prod-a) means the cluster of that name in your account
(STS GetCallerIdentity) and region, as the ECS CLI takes it. Where DynamoDB is on
this machine (AWS_ENDPOINT_URL_DYNAMODB on loopback: DynamoDB Local, `make local`
with STAGE=local), no STS call is made and a name means the one recorded cluster
of that name, in any account or region; --cluster-names chooses either way
explicitly. An ARN is taken as it is, and needs no STS call.

Prints a table (a task's containers on the lines under it), or with --output json
the items. One page at a time (--limit, default 50), the next one's token on
stderr; --all-pages reads them all. Exits 0 with an answer (an empty listing
included), 1 when the item or the named cluster is not recorded or AWS refused
(credentials, permissions), 2 on a bad argument (the routes' 400), 3 when the
read API could not answer (its 501 or 503; a 503 may pass on retry).
Your credentials need what docs/local-and-api.md ("The policy `make query`
needs") grants.
"""
import argparse
import ipaddress
import json
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from chalice import BadRequestError, NotFoundError, Response

from chalicelib.api.reads import (
    CLUSTER_PARAMETERS,
    GET_PARAMETERS,
    INSTANCE_LIST_PARAMETERS,
    TASK_LIST_PARAMETERS,
    ReadApi,
)
from chalicelib.config import Config, from_environment
from chalicelib.errors import ConfigError, InvalidEvent, aws_error_code, aws_error_message
from chalicelib.model.clock import parse_time
from chalicelib.runtime import Runtime
from chalicelib.tables import ALL, CONTAINER_INSTANCES, EXPIRES_AT, LISTING, LISTING_KEY, STOP_CODE, TASKS, TableSpec
from tools.stage import DeployError, aws_caller, chalice_config, cli

# Exit statuses: answered; not recorded (404), or refused by AWS; a bad argument (400); not answered (501, 503).
ANSWERED, NOT_FOUND, REFUSED, BAD_ARGUMENT, NOT_ANSWERED = 0, 1, 1, 2, 3
# --cluster-names: a name in the caller's account and region, or among the recorded clusters.
ACCOUNT, RECORDED = "account", "recorded"
WIDTH = 120  # what a table line fits in (not with --wide)
GAP = "  "
SHORT_ID = 12  # a task or instance ID as the table shows it (ECS's are 32 hex digits): --wide shows it whole
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # nothing recorded may move the terminal's cursor or colours
NOUNS = {TASKS.kind: "task", CONTAINER_INSTANCES.kind: "container instance"}

PARAMETER_HELP = {
    "cluster": "a cluster name or ARN (required to list, and with an ID)",
    "service": "only the tasks of this service (short for --group service:NAME)",
    "group": "only the tasks of this group, e.g. family:cron",
    "status": "only those in this status, any case: running, stopped; active, draining, inactive",
    "since": "finished at or after this time: 30m, 1h, 2d, 1w ago, today, a date (UTC midnight), "
             "or ISO 8601 with its zone; implies the finished status",
    "until": "finished at or before this time (as --since)",
    "stopCode": "only the tasks stopped with this stopCode, e.g. EssentialContainerExited, TaskFailedToStart",
    "fields": "only these top-level attributes, comma-separated (the key always comes too); "
              "the table then shows them as they are",
    "limit": "items per page, 1 to 100 (default 50; clusters: 100)",
    "next": "the token printed after a page: the page that follows it",
}

METAVARS = {"service": "NAME", "since": "TIME", "until": "TIME", "stopCode": "CODE", "fields": "A,B,...",
            "limit": "N", "next": "TOKEN"}


def option(parameter: str) -> str:
    """A route parameter's option: stopCode -> --stop-code."""
    return "--" + re.sub(r"[A-Z]", lambda upper: "-" + upper.group().lower(), parameter)


def parameter_of(flag: str) -> str:
    """An option's route parameter: --stop-code -> stopCode."""
    return re.sub(r"-([a-z])", lambda lower: lower.group(1).upper(), flag.removeprefix("--"))


def dest(parameter: str) -> str:
    return f"param_{parameter}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="make query ARGS=...", description=__doc__.split("\n\n")[0],
        epilog="e.g. tasks --cluster prod-a --service worker --status stopped --since 1h. "
               "`tasks --help` etc. list each one's options. See README.md, \"Read the state\".")
    top.add_argument("--stage", required=True, help="a stage of .chalice/config.json (its tables and settings)")
    for table in ALL:
        top.add_argument(f"--{table.kind.replace('_', '-')}-table", dest=table.kind, metavar="NAME",
                         help=f"read this {NOUNS[table.kind]} table instead of the stage's")
    top.add_argument("--cluster-names", choices=(ACCOUNT, RECORDED),
                     help="a cluster name is in your account and region (STS), or is the recorded cluster of that "
                     "name; default: account, or recorded where DynamoDB is on loopback")
    kinds = top.add_subparsers(dest="kind", required=True, metavar="{tasks,container-instances,clusters}")
    for table, name, parameters in ((TASKS, "tasks", TASK_LIST_PARAMETERS),
                                    (CONTAINER_INSTANCES, "container-instances", INSTANCE_LIST_PARAMETERS)):
        noun = NOUNS[table.kind]
        listing = kinds.add_parser(name, help=f"list a cluster's {noun}s, or `{name} get ID` one of them",
                                   description=f"List a cluster's {noun}s: unfinished ones first, then finished "
                                   f"ones, newest first. Or get one: {name} get ID --cluster C (or {name} get ARN).")
        _parameters(listing, parameters)
        _output_options(listing, listing=True)
        actions = listing.add_subparsers(dest="action", metavar="get")
        get = actions.add_parser("get", help=f"one {noun}, by its ID and --cluster, or by its ARN")
        get.add_argument("id", metavar="ID", help=f"the {noun}'s ID (with --cluster) or ARN")
        _parameters(get, GET_PARAMETERS, suppress=True)
        _output_options(get, listing=False, suppress=True)
        listing.set_defaults(table=table, action=None)
    clusters = kinds.add_parser("clusters", help="the clusters with recorded tasks or container instances")
    _parameters(clusters, CLUSTER_PARAMETERS)
    _output_options(clusters, listing=True)
    clusters.set_defaults(table=None, action=None)
    return top


def _parameters(command: argparse.ArgumentParser, parameters: Sequence[str], suppress: bool = False) -> None:
    """One option per route parameter, kept as the string given: the read API checks it. ``suppress``
    (get, under a listing's options): given before `get`, an option is not overwritten by get's default."""
    for parameter in parameters:
        command.add_argument(option(parameter), dest=dest(parameter), metavar=METAVARS.get(parameter, parameter.upper()),
                             help=PARAMETER_HELP[parameter], **({"default": argparse.SUPPRESS} if suppress else {}))


def _output_options(command: argparse.ArgumentParser, listing: bool, suppress: bool = False) -> None:
    defaults: Dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    command.add_argument("--output", choices=("table", "json"), help="table (default) or json",
                         **(defaults or {"default": "table"}))
    command.add_argument("--wide", action="store_true", help=f"whole IDs and texts: lines may exceed {WIDTH} columns",
                         **defaults)
    if listing:
        command.add_argument("--all-pages", action="store_true", help="read every page, not only the first")


class Question(NamedTuple):
    """What to ask the read API: a listing or one item of ``table`` (None: the clusters)."""

    table: Optional[TableSpec]
    ident: Optional[str]  # get ID
    params: Dict[str, str]  # the route's query parameters
    all_pages: bool
    fields_given: bool  # --fields: the table shows those attributes, as they are

    @property
    def cluster_name(self) -> Optional[str]:
        """The cluster as a name, which needs the caller's account and region; None: none, or an ARN."""
        cluster = self.params.get("cluster")
        return None if cluster is None or cluster.startswith("arn:") else cluster


def question(args: argparse.Namespace, top: argparse.ArgumentParser) -> Question:
    params = {name[len("param_"):]: value for name, value in vars(args).items()
              if name.startswith("param_") and value is not None}
    if args.action == "get":
        extra = sorted(option(name) for name in params if name not in GET_PARAMETERS)
        if extra or args.all_pages:
            top.error(f"{', '.join(extra or ['--all-pages'])}: only with a listing, not with get")
        return Question(args.table, args.id, params, False, "fields" in params)
    given = "fields" in params
    if args.output == "table" and args.table is not None and not given:
        params["fields"] = ",".join(TABLE_FIELDS[args.table.kind])  # what the table shows, no more
    return Question(args.table, None, params, args.all_pages, given)


def stage_settings(stage: str) -> Tuple[Mapping[str, str], Config]:
    """The stage's variables and settings (its tables, read index), as its functions read them; the
    local stage's too (`make local`'s tables, on its loopback DynamoDB)."""
    environment = dict(chalice_config(stage, deployable_only=False).environment_variables)
    try:
        return environment, from_environment(environment)
    except ConfigError as error:
        raise DeployError(f"stage {stage!r}: {error}") from None


def on_loopback(endpoint: Optional[str]) -> bool:
    """Whether a DynamoDB endpoint is on this machine (DynamoDB Local, make local's)."""
    host = urlsplit(endpoint or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def home(process: Runtime, names: Optional[str]) -> Optional[str]:
    """arn:<partition>:ecs:<region>:<account>, the caller's, where a cluster name is taken; None: a
    name is looked up among the recorded clusters (``names`` RECORDED, or by default on loopback)."""
    client = process.dynamodb()
    if (names or (RECORDED if on_loopback(client.meta.endpoint_url) else ACCOUNT)) == RECORDED:
        return None
    _, identity = aws_caller()
    partition = identity["Arn"].split(":")[1]
    return f"arn:{partition}:ecs:{client.meta.region_name}:{identity['Account']}"


def ask(api: ReadApi, asked: Question, where: Optional[str]) -> Tuple[Any, Optional[str]]:
    """The read API's answer (items, an item, or a Response it could not answer with) and the token
    of the page after it (None: none follows, or all pages were read)."""
    if asked.table is not None and asked.ident is not None:
        return api.get_item(asked.table, asked.ident, asked.params, where), None
    found: List[Any] = []
    params = dict(asked.params)
    while True:
        if asked.table is None:
            answer = api.list_clusters(params)
        else:
            answer = api.list_items(asked.table, params, where)
        if isinstance(answer, Response):
            return answer, None
        found += answer["clusters" if asked.table is None else "items"]
        token = answer["next"]
        if token is None or not asked.all_pages:
            return found, token
        params["next"] = token


def main(argv: Optional[List[str]] = None) -> int:
    out, err = sys.stdout, sys.stderr
    top = parser()
    args = top.parse_args(argv)
    asked = question(args, top)
    environment, config = stage_settings(args.stage)
    config = config.with_tables({table: getattr(args, table.kind) for table in ALL if getattr(args, table.kind)})
    # boto3's own variables of the stage (the local stage's endpoint, credentials, region), where yours set none.
    for name, value in environment.items():
        if name.startswith("AWS_"):
            os.environ.setdefault(name, value)
    session = boto3.session.Session()  # where the clients will look, and with what
    if not session.region_name:
        raise DeployError("no AWS region: set AWS_DEFAULT_REGION (boto3 does not read AWS_REGION), or a region in your profile")
    if session.get_credentials() is None:  # (the read API would take it for DynamoDB not answering)
        raise DeployError("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    process = Runtime(config)  # the stage's settings and tables, as its functions read them
    try:
        where = home(process, args.cluster_names) if asked.cluster_name is not None else None
        answer, token = ask(process.read_api(), asked, where)
    except BadRequestError as error:
        print(f"error: {error}", file=err)
        return BAD_ARGUMENT
    except NotFoundError as error:
        print(f"error: {error}", file=err)
        if asked.ident is not None and re.fullmatch(r"[0-9a-f]{1,31}", asked.ident):
            print(f"(the table shows IDs cut to {SHORT_ID} characters: --wide or --output json shows them whole)",
                  file=err)
        return NOT_FOUND
    except (ClientError, BotoCoreError) as error:
        print(f"error: {refusal(error, process)}", file=err)
        return REFUSED
    if isinstance(answer, Response):
        body = answer.body if isinstance(answer.body, dict) else {}
        retry = answer.headers.get("Retry-After")
        print(f"error: {answer.status_code} {body.get('Code', '')}: {body.get('Message', answer.body)}"
              + (f" (retry in {retry} s)" if retry else ""), file=err)
        return NOT_ANSWERED
    if args.output == "json":
        print(json.dumps(answer, indent=2), file=out)
    else:
        for line in render(asked, answer, wide=args.wide):
            print(line, file=out)
    if isinstance(answer, list) and not answer and asked.table is not None:
        noun = NOUNS[asked.table.kind]
        print(f"no {noun} matched in cluster {asked.params.get('cluster')}"
              + (f" ({where}:cluster/{asked.cluster_name})" if where and asked.cluster_name else "")
              + f", table {config.table_name(asked.table)}; `clusters` lists the recorded ones", file=err)
    elif isinstance(answer, list) and not answer and "next" not in asked.params:
        print(f"no cluster has recorded items in tables {', '.join(config.table_name(table) for table in ALL)}",
              file=err)
    if token is not None:
        print(f"more follow: add --next {token} for the next page, or --all-pages for all", file=err)
    return ANSWERED


def refusal(error: Exception, process: Runtime) -> str:
    """What AWS refused or failed, and what to do about it."""
    code = aws_error_code(error)
    if code is None:
        return f"{type(error).__name__}: {error}"
    text = f"{code}: {aws_error_message(error)}"
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        text += (f" (tables {', '.join(process.config.table_name(table) for table in ALL)}: your credentials need "
                 "the policy in docs/local-and-api.md, \"The policy `make query` needs\")")
    return text


# -- tables ------------------------------------------------------------------------------------------

# What the tables show of an item (and read: the listing asks only for these).
TABLE_FIELDS = {
    TASKS.kind: ("group", "lastStatus", "stoppedAt", "stopCode", "stoppedReason", "containers"),
    CONTAINER_INSTANCES.kind: ("ec2InstanceId", "status", "agentConnected", "runningTasksCount",
                               "pendingTasksCount", "updatedAt", "cw_time", "statusReason"),
}


class Column(NamedTuple):
    header: str
    widest: Optional[int]  # None: the rest of the line (the last column)
    value: Callable[[Mapping[str, Any]], str]


def text(value: Any) -> str:
    """A value on one line: a string as it is, anything else as compact JSON; no control characters."""
    if value is None:
        return ""
    shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _CONTROL.sub(" ", shown).strip()


def cut(shown: str, width: Optional[int]) -> str:
    return shown if width is None or len(shown) <= width else shown[:max(width - 1, 0)] + "…"


def when(value: Any) -> str:
    """An ECS time (2026-11-22T09:58:12.345Z) as 2026-11-22 09:58:12, UTC; anything else as it is."""
    try:
        moment = parse_time(value, "time")
    except InvalidEvent:
        return text(value)
    return datetime.fromtimestamp(int(moment), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def short_id(arn: Any, wide: bool) -> str:
    """A task's or instance's ID, the last part of its ARN; the first SHORT_ID characters unless ``wide``."""
    ident = text(arn).rsplit("/", 1)[-1]
    return ident if wide else ident[:SHORT_ID]


def exit_of(container: Mapping[str, Any]) -> str:
    code = container.get("exitCode")
    return "no exit code" if code is None else f"exit {text(code)}"


def container_lines(task: Mapping[str, Any]) -> List[str]:
    """Each container of a finished task, and those of an unfinished one that exited or say why:
    name, exit code and reason."""
    containers = [c for c in task.get("containers") or [] if isinstance(c, dict)]
    if task.get("lastStatus") != "STOPPED":
        containers = [c for c in containers if c.get("exitCode") is not None or c.get("reason")]
    names = [text(c.get("name")) or "?" for c in containers]
    width = min(max((len(name) for name in names), default=0), 24)
    exits = [exit_of(c) for c in containers]
    exit_width = max((len(shown) for shown in exits), default=0)
    return [f"{cut(name, width):<{width}}{GAP}{shown:<{exit_width}}{GAP}{text(c.get('reason'))}".rstrip()
            for name, shown, c in zip(names, exits, containers)]


def columns_of(asked: Question, wide: bool) -> List[Column]:
    table = asked.table
    if table is None:
        return [Column("NAME", 40, lambda c: text(c["clusterName"])), Column("ARN", None, lambda c: text(c["clusterArn"]))]
    key = Column("TASK" if table is TASKS else "INSTANCE", None if wide else SHORT_ID,
                 lambda item: short_id(item.get(table.key), wide))
    if asked.fields_given:
        named = [name.strip() for name in asked.params["fields"].split(",") if name.strip() != table.key]
        return [key, *(Column(name, 40, lambda item, name=name: text(item.get(name))) for name in dict.fromkeys(named))]
    if table is TASKS:
        return [key, Column("GROUP", 28, lambda task: text(task.get("group"))),
                Column("STATUS", 14, lambda task: text(task.get("lastStatus"))),
                Column("STOPPED (UTC)", 19, lambda task: when(task.get("stoppedAt")) if task.get("stoppedAt") else ""),
                Column("STOP CODE", 26, lambda task: text(task.get("stopCode"))),
                Column("STOPPED REASON", None, lambda task: text(task.get("stoppedReason")))]
    return [key, Column("EC2 INSTANCE", 19, lambda item: text(item.get("ec2InstanceId"))),
            Column("STATUS", 19, lambda item: text(item.get("status"))),
            Column("AGENT", 5, lambda item: {True: "yes", False: "no"}.get(item.get("agentConnected"), "")),
            Column("RUNNING", 7, lambda item: text(item.get("runningTasksCount"))),
            Column("PENDING", 7, lambda item: text(item.get("pendingTasksCount"))),
            Column("UPDATED (UTC)", 19, lambda item: when(item.get("updatedAt") or item.get("cw_time"))),
            Column("STATUS REASON", None, lambda item: text(item.get("statusReason")))]


def render(asked: Question, answer: Any, wide: bool) -> List[str]:
    if asked.ident is not None:
        assert asked.table is not None
        return details(asked.table, answer, wide)
    columns = columns_of(asked, wide)
    rows = [[column.value(item) for column in columns] for item in answer]
    widths: List[Optional[int]] = []
    for n, column in enumerate(columns[:-1]):
        widest = max([len(column.header), *(len(row[n]) for row in rows)])
        widths.append(widest if wide or column.widest is None else min(widest, column.widest))
    used = sum(width or 0 for width in widths) + len(GAP) * len(widths)
    widths.append(None if wide else max(WIDTH - used, 12))
    lines = [line(columns, [column.header for column in columns], widths)]
    indent = (widths[0] or 0) + len(GAP)
    for item, row in zip(answer, rows):
        lines.append(line(columns, row, widths))
        if asked.table is TASKS and not asked.fields_given:
            lines += [" " * indent + cut(shown, None if wide else WIDTH - indent) for shown in container_lines(item)]
    return lines


def line(columns: Sequence[Column], cells: Sequence[str], widths: Sequence[Optional[int]]) -> str:
    shown = [cut(cell, width) for cell, width in zip(cells, widths)]
    return GAP.join(f"{cell:<{width}}" if width is not None and n < len(columns) - 1 else cell
                    for n, (cell, width) in enumerate(zip(shown, widths))).rstrip()


# What one item's view shows first; then its other attributes by name.
FIRST = ("taskArn", "containerInstanceArn", "clusterArn", "group", "ec2InstanceId", "lastStatus", "desiredStatus",
         "status", "statusReason", "stopCode", "stoppedReason", "createdAt", "startedAt", "stoppingAt", "stoppedAt",
         "registeredAt", "updatedAt", "agentConnected", "runningTasksCount", "pendingTasksCount", "launchType",
         "taskDefinitionArn", "startedBy", "version")
# The read index's own attributes: its keys and a copy of stopCode, nothing a person reads.
INDEX_ATTRIBUTES = (LISTING, LISTING_KEY, STOP_CODE)


def value_of(name: str, value: Any) -> str:
    """An attribute's value as the one item's view shows it: cw_expires_at with its date too."""
    if name == EXPIRES_AT and isinstance(value, (int, float)) and 0 <= value < 253_402_300_800:  # (year 9999)
        return f"{value} ({datetime.fromtimestamp(int(value), timezone.utc):%Y-%m-%d %H:%M:%S} UTC)"
    return text(value)


def details(table: TableSpec, item: Mapping[str, Any], wide: bool) -> List[str]:
    """One item: an attribute a line (those of several values, but its containers, left to --output json)."""
    names = [name for name in FIRST if name in item]
    names += sorted(name for name in item if name not in FIRST and name not in INDEX_ATTRIBUTES)
    scalar = [name for name in names if not isinstance(item[name], (dict, list))]
    width = max((len(name) for name in scalar), default=0)
    lines = [cut(f"{name:<{width}}{GAP}{value_of(name, item[name])}", None if wide else WIDTH) for name in scalar]
    if table is TASKS and isinstance(item.get("containers"), list):
        lines.append("containers")
        shown = dict(item, lastStatus="STOPPED")  # every container, whatever the task's status
        lines += [cut("  " + container, None if wide else WIDTH) for container in container_lines(shown)]
    structured = [name for name in names if name not in scalar and not (table is TASKS and name == "containers")]
    if structured:
        lines.append(f"(and {', '.join(structured)}: --output json shows them)")
    return lines


if __name__ == "__main__":
    # The read API logs a 503 as it does in Lambda; the message is on stderr here: stdout keeps the answer.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    cli(main)
