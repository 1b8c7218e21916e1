"""What each function's role may do: the one list that the policy files, resources.json
and the code's own calls are checked against (tests/test_policies.py, tests/test_package.py),
and that `make deploy` checks a stage's policy files against (tools/policy_files.py).

A grant names its resource abstractly ("own-table", "index", ...); each kind of
template renders it: the chalice deploy policy files with IAM policy variables
for the account and region, resources.json with exact ARNs.
"""
import json
import re
from typing import Any, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from chalicelib.tables import PHASE_INDEX, READ_INDEX

EVENT, API, RECONCILE = "event", "api", "reconcile"  # the three kinds of function
# The "index" resource: the indexes a listing queries, on each table. The readers use PHASE_INDEX,
# the read index before READ_INDEX, while a table has it (a stage moving to READ_INDEX keeps it
# until its items are backfilled), and ask for it in each new process to find out
# (StateStore.phase_index_pages: DynamoDB's "no such index" answer is how they learn it is gone):
# without this grant that question is refused (AccessDenied) and the listing fails, index or not.
QUERIED_INDEXES = (READ_INDEX.name, PHASE_INDEX.name)
IN_ACCOUNT_CLUSTERS = "in-account-clusters"  # the condition: ecs:cluster is one of this account's and region's clusters
LOG_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents"})


class Grant(NamedTuple):
    resource: str  # own-table, tables, index (QUERIED_INDEXES), own-log-group, queue, any, clusters, tasks, container-instances
    actions: FrozenSet[str]
    condition: Optional[str] = None


def grants(function: str, read_index: bool) -> List[Grant]:
    """The statements a function's role must hold, no more: exactly the calls its code makes."""
    own_logs = Grant("own-log-group", LOG_ACTIONS)
    if function == EVENT:
        return [
            Grant("own-table", frozenset({"dynamodb:PutItem"})),
            # The recorder sends an event that can never be stored to the queue itself (by name: GetQueueUrl).
            Grant("queue", frozenset({"sqs:GetQueueUrl", "sqs:SendMessage"})),
            own_logs,
        ]
    if function == API:
        if not read_index:  # the listings answer 501: only GET /.../{id} reads
            return [Grant("tables", frozenset({"dynamodb:GetItem"})), own_logs]
        return [
            Grant("tables", frozenset({"dynamodb:BatchGetItem", "dynamodb:GetItem"})),  # a listing reads its page by key
            Grant("index", frozenset({"dynamodb:Query"})),
            own_logs,
        ]
    if function == RECONCILE:
        # Without the read index, ghosts are found by scanning a slice of the tables per pass.
        ghosts = Grant("index", frozenset({"dynamodb:Query"})) if read_index else Grant("tables", frozenset({"dynamodb:Scan"}))
        return [
            Grant("any", frozenset({"ecs:ListClusters"})),  # no resource-level permissions
            Grant("any", frozenset({"ecs:ListTasks"}), IN_ACCOUNT_CLUSTERS),
            Grant("clusters", frozenset({"ecs:ListContainerInstances"})),
            Grant("tasks", frozenset({"ecs:DescribeTasks"}), IN_ACCOUNT_CLUSTERS),
            Grant("container-instances", frozenset({"ecs:DescribeContainerInstances"}), IN_ACCOUNT_CLUSTERS),
            Grant("tables", frozenset({"dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"})),
            ghosts,
            own_logs,
        ]
    raise ValueError(function)


def actions(function: str, read_index: bool) -> FrozenSet[str]:
    return frozenset(action for grant in grants(function, read_index) for action in grant.actions)


Statement = Tuple[FrozenSet[str], FrozenSet[str], str]


def normalized(statements: Iterable[Dict[str, Any]]) -> List[Statement]:
    """Statements as comparable (actions, resources, condition) triples; every one must Allow."""
    found = []
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        found.append((
            frozenset(as_list(statement["Action"])),
            frozenset(json.dumps(resource, sort_keys=True) for resource in as_list(statement["Resource"])),
            json.dumps(statement.get("Condition"), sort_keys=True),
        ))
    return sorted(found, key=repr)


def as_statements(grant_list: Iterable[Grant], render_resource: Any, render_condition: Any) -> List[Dict[str, Any]]:
    return [
        {"Effect": "Allow", "Action": sorted(grant.actions), "Resource": render_resource(grant.resource),
         **({"Condition": render_condition(grant.condition)} if grant.condition else {})}
        for grant in grant_list
    ]


def rendered(grant_list: Iterable[Grant], render_resource: Any, render_condition: Any) -> List[Statement]:
    return normalized(as_statements(grant_list, render_resource, render_condition))


def as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else [value]


def arn_positions(arn: str) -> Tuple[str, str]:
    """(region, account) of an ARN (arn:partition:service:region:account:resource), whose parts
    may be variables holding colons themselves: ${aws:RequestedRegion}, ${AWS::Region}."""
    parts = re.split(r":(?![^{]*\})", arn)  # the colons outside ${...}
    assert len(parts) >= 6 and parts[0] == "arn", f"not an ARN: {arn}"
    return parts[3], parts[4]

