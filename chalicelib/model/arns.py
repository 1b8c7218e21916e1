"""ECS ARNs: one definition for what is written and what is read back.

The writer stores a task or container instance under whatever ARN its event
carries, as long as DynamoDB can key an item by it (``key_problem``), and
lists it under the ``clusterArn`` it carries. The read API takes the same
definition: any key the writer accepts can be got by its exact ARN, and any
clusterArn it accepts can be listed. The ECS structure of an ARN
(``parse``) is needed only to build one from an ID and its cluster; it takes
what ECS and its samples write (the aws-samples events carry 10-digit
accounts; real ones have 12), both task ARN formats (with the cluster, and the
old one without), and any partition.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple, Optional, Pattern

from chalicelib.model.attributes import Unstorable, utf8_length

MAX_KEY_BYTES = 2048  # DynamoDB's partition key limit
MAX_SORT_KEY_BYTES = 1024  # DynamoDB's sort key limit

_PREFIX = r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{1,12}"  # partition, region, account
_NAME = r"[A-Za-z0-9_-]{1,255}"  # a cluster name; an ID is of the same letters


# Compiled on first use: the event functions' cold starts never parse an ARN.
@lru_cache(maxsize=None)
def _pattern(name: str) -> Pattern[str]:
    if name == "arn":
        return re.compile(rf"({_PREFIX}):([a-z-]+)/(?:({_NAME})/)?({_NAME})", re.ASCII)
    return re.compile(_NAME, re.ASCII)


def is_name(text: str) -> bool:
    """Whether ``text`` is a cluster name or a resource ID as ECS writes them."""
    return _pattern("name").fullmatch(text) is not None


class EcsArn(NamedTuple):
    prefix: str  # arn:<partition>:ecs:<region>:<account>
    resource: str  # cluster, task, container-instance
    cluster: Optional[str]  # the cluster's name (None: a cluster's own ARN, or an old-format task ARN)
    ident: str  # the resource's ID (a cluster's: its name)

    @property
    def cluster_arn(self) -> Optional[str]:
        if self.resource == "cluster":
            return str(self)
        return f"{self.prefix}:cluster/{self.cluster}" if self.cluster else None

    def __str__(self) -> str:
        path = f"{self.cluster}/{self.ident}" if self.cluster else self.ident
        return f"{self.prefix}:{self.resource}/{path}"


def parse(text: str) -> Optional[EcsArn]:
    """The parts of an ECS ARN, or None for anything else."""
    match = _pattern("arn").fullmatch(text)
    if match is None:
        return None
    prefix, resource, cluster, ident = match.groups()
    if resource == "cluster" and cluster is not None:
        return None
    return EcsArn(prefix, resource, cluster, ident)


def key_problem(value: Any, max_bytes: int = MAX_KEY_BYTES) -> Optional[str]:
    """What keeps ``value`` from keying an item (or an index entry), or None if nothing does."""
    if not isinstance(value, str):
        return f"must be a string, got {'null' if value is None else type(value).__name__}"
    if not value:
        return "must not be empty"
    try:
        size = utf8_length(value)
    except Unstorable as error:
        return error.problem
    if size > max_bytes:
        return f"is {size} bytes; this DynamoDB key holds at most {max_bytes}"
    return None


def home_of(function_arn: Optional[str]) -> Optional[str]:
    """The ECS ARN prefix (arn:<partition>:ecs:<region>:<account>) of the account and region a Lambda
    function runs in, from its ARN; None without one (chalice local's context has none)."""
    parts = (function_arn or "").split(":")
    if len(parts) < 5 or parts[0] != "arn" or parts[2] != "lambda" or not parts[3] or not parts[4]:
        return None
    return f"arn:{parts[1]}:ecs:{parts[3]}:{parts[4]}"
