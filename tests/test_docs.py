"""What the docs tell users to run must work: docs/deploy.md's Terraform block is valid HCL and
defines the tables as chalicelib.tables does; docs/local-and-api.md's awscurl examples URL-encode
their query values, as SigV4 needs to sign what API Gateway checks.
"""
import re
import shlex
from typing import Any, Dict, List
from urllib.parse import unquote, urlsplit

import hcl2
import pytest

from chalicelib import tables
from chalicelib.tables import EXPIRES_AT
from tools.stage import ROOT, stage_plan

DEPLOY_MD = (ROOT / "docs" / "deploy.md").read_text()
LOCAL_AND_API_MD = (ROOT / "docs" / "local-and-api.md").read_text()
# A block on one line: a type, its labels, and braces (an argument's object value has "=" before its brace).
ONE_LINE_BLOCK = re.compile(r'^\s*[A-Za-z_][\w-]*(?:\s+"[^"]*")*\s*\{(.*)\}\s*$')
ARGUMENT = re.compile(r'(?<![=!<>])\b[A-Za-z_][\w-]*\s*=(?!=)')


def code_blocks(markdown: str, language: str) -> List[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, re.S)


def one_line_block_problems(text: str) -> List[str]:
    """HCL allows a block on one line only with at most one argument and no nested block;
    python-hcl2 parses more, Terraform refuses it."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = ONE_LINE_BLOCK.match(line)
        if match and (len(ARGUMENT.findall(match.group(1))) > 1 or "{" in match.group(1)):
            problems.append(f"line {number}: {line.strip()}")
    return problems


def test_the_one_line_block_check_knows_the_rule():
    assert one_line_block_problems('  attribute { name = "taskArn"  type = "S" }') != []
    assert one_line_block_problems('  lifecycle { prevent_destroy = true }') == []
    assert one_line_block_problems('  dimensions = { QueueName = "q", Other = "x" }') == []
    assert one_line_block_problems('  destination_config { on_failure { destination = "x" } }') != []


def value(text: Any, local: Dict[str, str]) -> Any:
    """An HCL string as Terraform sees it: unquoted, ${local.x} put in."""
    if isinstance(text, str):
        text = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
        return re.sub(r"\$\{local\.(\w+)\}", lambda m: local[m.group(1)], text)
    return text


def test_the_terraform_block_is_valid_hcl_and_defines_the_tables_of_chalicelib():
    [block] = code_blocks(DEPLOY_MD, "hcl")
    assert one_line_block_problems(block) == []
    parsed = hcl2.loads(block)
    local = {name: value(text, {}) for entry in parsed["locals"] for name, text in entry.items() if name != "__is_block__"}
    found = {}
    for resource in parsed["resource"]:
        for kind, named in resource.items():
            if value(kind, local) == "aws_dynamodb_table":
                for body in named.values():
                    found[value(body["hash_key"], local)] = body
    plan = stage_plan("dev")
    assert local["ecs_state"] == plan.deployment
    assert set(found) == {spec.key for spec in tables.ALL}
    for spec in tables.ALL:
        body, request = found[spec.key], spec.create_table_request(plan.table_names[spec])
        assert value(body["name"], local) == request["TableName"]
        assert value(body["billing_mode"], local) == request["BillingMode"]
        assert sorted((value(a["name"], local), value(a["type"], local)) for a in body["attribute"]) == sorted(
            (a["AttributeName"], a["AttributeType"]) for a in request["AttributeDefinitions"]
        )
        assert [
            {"IndexName": value(i["name"], local),
             "KeySchema": [{"AttributeName": value(i["hash_key"], local), "KeyType": "HASH"},
                           {"AttributeName": value(i["range_key"], local), "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": value(i["projection_type"], local),
                            **({"NonKeyAttributes": [value(a, local) for a in i["non_key_attributes"]]}
                               if "non_key_attributes" in i else {})}}
            for i in body["global_secondary_index"]
        ] == request["GlobalSecondaryIndexes"]
        [ttl] = body["ttl"]
        assert (value(ttl["attribute_name"], local), ttl["enabled"]) == (EXPIRES_AT, True)
        assert [b["enabled"] for b in body["point_in_time_recovery"] + body["server_side_encryption"]] == [True, True]
        assert {value(k, local): value(v, local) for k, v in body["tags"].items()} == {
            "ecs-state:deployment": plan.deployment
        }


# -- awscurl ------------------------------------------------------------------------------------


def shell_variables(markdown: str) -> Dict[str, str]:
    """NAME=value assignments in the doc's console blocks (the examples' own variables)."""
    found = {}
    for block in code_blocks(markdown, "console"):
        for line in block.splitlines():
            match = re.match(r"^\$ ([A-Z_]+)=(\S+)$", line.strip())
            if match:
                found[match.group(1)] = match.group(2)
    return found


def awscurl_urls(markdown: str) -> List[str]:
    variables = shell_variables(markdown)
    urls = []
    for block in code_blocks(markdown, "console"):
        for command in re.findall(r"\$ (awscurl .*?)(?:\n(?!\s)|\Z)", block.replace("\\\n", " "), re.S):
            [url] = [word for word in shlex.split(command) if "://" in word]
            urls.append(re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), url))
    return urls


def test_the_awscurl_examples_url_encode_their_query_values():
    urls = awscurl_urls(LOCAL_AND_API_MD)
    assert len(urls) >= 2
    for url in urls:
        parts = urlsplit(url)
        assert ":" not in parts.path.replace("https:", ""), url
        for pair in parts.query.split("&"):
            name, _, encoded = pair.partition("=")
            assert "$" not in encoded, f"{url}: {name} is not a value the doc defines"
            assert re.fullmatch(r"(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*", encoded), f"{url}: {name}={encoded} is not URL-encoded"
            if name == "cluster":
                assert re.fullmatch(r"arn:aws:ecs:[a-z0-9-]+:\d{12}:cluster/[\w-]+", unquote(encoded)), url


@pytest.mark.parametrize("raw", ["cluster=arn:aws:ecs:us-east-1:111122223333:cluster/web", "cluster=$CLUSTER"])
def test_the_awscurl_check_catches_a_raw_arn(raw):
    markdown = f"```console\n$ CLUSTER=arn:aws:ecs:us-east-1:111122223333:cluster/web\n$ awscurl \"https://x/api/tasks?{raw}\"\n```\n"
    [url] = awscurl_urls(markdown)
    query = urlsplit(url).query.partition("=")[2]
    assert not re.fullmatch(r"(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*", query)
