"""A stage's policy files, as `chalice deploy` (and Terraform) builds the roles from them: which
file each function's role comes from, what it must allow with the stage's settings, and what
it lacks.

The files are hand-written for one stage's settings (tools/policies.py's list):
its table and queue names, and its read index. Without the index the reconciler
finds ghosts by scanning the tables (Scan on them, not Query on the index), so a
stage turning the index off needs a statement its file lacks. `make deploy`
refuses such a stage before it changes anything, naming the statements to add
(policy_gaps). resources.json needs none of this: its roles follow its ReadIndex
parameter.
"""
import json
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional

from chalicelib import tables
from chalicelib.tables import TableSpec
from tools.policies import API, EVENT, QUERIED_INDEXES, RECONCILE, as_list, as_statements, grants
from tools.stage import DeployError, StagePlan, chalice_config, handler_names

# Every ARN of the policy files: the account and region of the call, any partition (docs/deploy.md).
POLICY_ARN = "arn:*:{service}:${{aws:RequestedRegion}}:${{aws:PrincipalAccount}}:{resource}"
# What policy_gaps asks about: a request in this account and region, on resources of this name.
SAMPLE = {"${aws:RequestedRegion}": "us-east-1", "${aws:PrincipalAccount}": "123456789012"}
SAMPLE_NAME = "sample-7f3a"


def policy_arn(service: str, resource: str) -> str:
    return POLICY_ARN.format(service=service, resource=resource)


class Function(NamedTuple):
    kind: str  # EVENT, API or RECONCILE
    name: str  # as `chalice deploy` names it
    policy_file: Optional[str]  # the file in .chalice/ Chalice builds its role from; None: no such file
    own_table: Optional[TableSpec]  # an event function's table


def stage_functions(plan: StagePlan) -> List[Function]:
    """The stage's functions, each with the policy file its role is built from."""
    config = chalice_config(plan.stage, plan.project_dir)
    event_handlers, [reconcile] = handler_names()
    specs = {f"{spec.kind}_state_change": spec for spec in tables.ALL}
    handlers = [(EVENT, handler, name, specs[handler])
                for handler, name in zip(event_handlers, plan.event_function_names)]
    handlers += [(RECONCILE, reconcile, plan.reconcile_function_name, None),
                 (API, "api_handler", plan.api_function_name, None)]  # Chalice's name for the API's function
    return [Function(kind, name, _policy_file(config.scope(chalice_stage=plan.stage, function_name=handler), plan.stage),
                     spec) for kind, handler, name, spec in handlers]


def _policy_file(config: Any, stage: str) -> Optional[str]:
    """As Chalice chooses it (chalice.deploy.appgraph): the function's iam_policy_file, else the stage's."""
    if config.autogen_policy or not config.manage_iam_role:
        return None
    return config.iam_policy_file or f"policy-{stage}.json"


def required_statements(plan: StagePlan, function: Function) -> List[Dict[str, Any]]:
    """What ``function``'s policy file must allow, in the files' form: exactly the calls its code makes
    with the stage's settings, on the stage's own resources."""
    resources = {
        "own-table": policy_arn("dynamodb", f"table/{plan.table_names[function.own_table]}") if function.own_table else None,
        "tables": [policy_arn("dynamodb", f"table/{name}") for name in plan.table_names.values()],
        "index": [policy_arn("dynamodb", f"table/{name}/index/{index}")
                  for index in QUERIED_INDEXES for name in plan.table_names.values()],
        "own-log-group": policy_arn("logs", f"log-group:/aws/lambda/{function.name}:*"),
        "queue": policy_arn("sqs", plan.queue_name),
        "any": "*",
        "clusters": policy_arn("ecs", "cluster/*"),
        "tasks": policy_arn("ecs", "task/*"),
        "container-instances": policy_arn("ecs", "container-instance/*"),
    }
    in_clusters = {"ArnLike": {"ecs:cluster": resources["clusters"]}}
    return as_statements(grants(function.kind, plan.item_rules.read_index), resources.__getitem__,
                         lambda condition: in_clusters)


def policy_gaps(plan: StagePlan) -> Dict[str, List[Dict[str, Any]]]:
    """What the stage's policy files do not allow of the calls its functions make with its settings:
    the statements to add, by file (in .chalice/). Empty: every call is allowed."""
    gaps: Dict[str, List[Dict[str, Any]]] = {}
    for function in stage_functions(plan):
        if function.policy_file is None:
            continue  # a role Chalice generates, or one made elsewhere (iam_role_arn): nothing to read
        try:
            path = plan.project_dir / ".chalice" / function.policy_file
            granted = as_list(json.loads(path.read_text())["Statement"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DeployError(f".chalice/{function.policy_file} ({function.name}) cannot be read: {error}") from None
        missing = [statement for statement in required_statements(plan, function) if not _allowed(granted, statement)]
        if missing:
            gaps.setdefault(function.policy_file, []).extend(missing)
    return gaps


def _allowed(granted: List[Dict[str, Any]], required: Mapping[str, Any]) -> bool:
    """Whether ``granted`` lets each action of ``required`` through on a resource of each of its
    patterns, for a request carrying the condition keys ``required`` names."""
    context = {key: _sample(value) for block in required.get("Condition", {}).values() for key, value in block.items()}
    return all(allows(granted, action, _sample(resource), context, SAMPLE)
               for action in as_list(required["Action"]) for resource in as_list(required["Resource"]))


def _sample(pattern: str) -> str:
    """A value ``pattern`` matches: in SAMPLE's account and region, of the aws partition."""
    for variable, value in SAMPLE.items():
        pattern = pattern.replace(variable, value)
    if pattern.startswith("arn:*:"):
        pattern = "arn:aws:" + pattern[len("arn:*:"):]
    return pattern.replace("*", SAMPLE_NAME).replace("?", "x")


def allows(statements: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, str],
           variables: Mapping[str, str]) -> bool:
    """IAM's answer for a request, as far as ecs-state's policies go: some Allow statement and no Deny
    statement matches ``action`` on ``resource`` with the request's condition keys ``context``, the
    policy variables taking ``variables``' values. Wildcards (* and ?) as IAM reads them, an ARN segment
    by segment; the operators ArnLike, ArnEquals, StringLike and StringEquals. A statement with
    anything else (NotAction, NotResource, another operator) is taken as matching nothing."""
    effects = {statement.get("Effect") for statement in statements
               if _matches(statement, action, resource, context, variables)}
    return "Allow" in effects and "Deny" not in effects


def _matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str],
             variables: Mapping[str, str]) -> bool:
    if "Action" not in statement or "Resource" not in statement:
        return False
    return (any(_like(pattern, action, case=False) for pattern in as_list(statement["Action"]))
            and any(_arn_like(_substituted(pattern, variables), resource) for pattern in as_list(statement["Resource"]))
            and all(_condition(operator, block, context, variables)
                    for operator, block in statement.get("Condition", {}).items()))


def _condition(operator: str, block: Mapping[str, Any], context: Mapping[str, str], variables: Mapping[str, str]) -> bool:
    match = {"ArnLike": _arn_like, "ArnEquals": _arn_like, "StringLike": _like,
             "StringEquals": lambda expected, value: expected == value}.get(operator)
    return match is not None and all(
        key in context and any(match(_substituted(value, variables), context[key]) for value in as_list(values))
        for key, values in block.items()
    )


def _substituted(pattern: str, variables: Mapping[str, str]) -> str:
    for variable, value in variables.items():
        pattern = pattern.replace(variable, value)
    return pattern


def _arn_like(pattern: str, value: str) -> bool:
    """ARNs match segment by segment (a wildcard never spans the colons between them)."""
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) == len(value_parts) == 6 and pattern_parts[0] == "arn":
        return all(_like(p, v) for p, v in zip(pattern_parts, value_parts))
    return _like(pattern, value)


def _like(pattern: str, value: str, case: bool = True) -> bool:
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None
