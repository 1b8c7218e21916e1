"""The version-conditional write, on moto and on Amazon's DynamoDB Local."""
from decimal import Decimal

import pytest

from chalicelib.config import from_environment
from chalicelib.errors import InvalidEvent, StoredItemConflict
from chalicelib.store import StateStore, StoredVersion
from chalicelib.store.state_store import UNPROCESSED_ATTEMPTS
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.helpers import (
    container_instance_event,
    count_requests,
    expected_item,
    record,
    stored_item,
    table_name,
    task_event,
)


def test_outcomes_follow_the_stored_version(dynamodb):
    results = [record(task_event(v))["outcome"] for v in (3, 3, 2, 5, 4, 5)]
    assert results == ["created", "duplicate", "stale", "updated", "stale", "duplicate"]
    assert stored_item(dynamodb, TASKS, task_event(0)["detail"]["taskArn"])["version"] == 5


def test_summary_names_key_version_and_the_stored_version(dynamodb):
    arn = task_event(1)["detail"]["taskArn"]
    assert record(task_event(4)) == {
        "outcome": "created", "kind": "task", "key": arn, "version": 4, "stored_version": None,
    }
    assert record(task_event(7))["stored_version"] == 4  # the version it replaced
    assert record(task_event(6))["stored_version"] == 7  # the version that kept it out


def test_item_holds_every_detail_field_verbatim_plus_cw_metadata(dynamodb):
    event = task_event(2, status="RUNNING", overrides={"containerOverrides": [{"name": "web", "cpu": 0.25}]})
    record(event)
    item = stored_item(dynamodb, TASKS, event["detail"]["taskArn"])
    expected = expected_item(event)
    expected["overrides"] = {"containerOverrides": [{"name": "web", "cpu": Decimal("0.25")}]}
    assert item == expected


def test_floats_are_stored_as_the_decimal_json_wrote(dynamodb):
    event = container_instance_event(1, remainingResources=[{"name": "X", "type": "DOUBLE", "doubleValue": 0.3}])
    record(event)
    item = stored_item(dynamodb, CONTAINER_INSTANCES, event["detail"]["containerInstanceArn"])
    assert item["registeredResources"][1]["doubleValue"] == Decimal("1.1")
    assert item["remainingResources"][0]["doubleValue"] == Decimal("0.3")
    assert item["registeredResources"][2]["longValue"] == 8053063680


def test_a_newer_version_replaces_fields_it_no_longer_has(dynamodb):
    record(task_event(1, stoppedReason="old"))
    newer = task_event(2)
    record(newer)
    assert "stoppedReason" not in stored_item(dynamodb, TASKS, newer["detail"]["taskArn"])


def test_tables_are_separate_per_kind(dynamodb):
    task, instance = task_event(9), container_instance_event(1)
    assert record(task)["outcome"] == "created"
    assert record(instance)["outcome"] == "created"
    assert stored_item(dynamodb, TASKS, instance["detail"]["containerInstanceArn"]) is None
    assert stored_item(dynamodb, CONTAINER_INSTANCES, instance["detail"]["containerInstanceArn"])["version"] == 1


# At most one request per event; none only when this process's high-water mark
# already answers it (a duplicate or stale version of a key it saw stored).
@pytest.mark.parametrize("versions, requests", [((1,), 1), ((1, 2), 2), ((2, 2), 1), ((2, 1), 1), ((2, 1, 3), 2)])
def test_every_event_costs_at_most_one_request(dynamodb, versions, requests):
    counts = count_requests(dynamodb)
    for version in versions:
        record(task_event(version))
    assert counts == {"PutItem": requests}


@pytest.mark.parametrize("versions", [(1,), (1, 2), (2, 2), (2, 1)])
def test_without_high_water_marks_every_event_costs_exactly_one_request(dynamodb, configure, versions):
    configure(high_water_entries=0)
    counts = count_requests(dynamodb)
    for version in versions:
        record(task_event(version))
    assert counts == {"PutItem": len(versions)}


def test_an_oversized_item_is_refused_before_any_request(dynamodb):
    counts = count_requests(dynamodb)
    with pytest.raises(InvalidEvent, match="400|409600"):
        record(task_event(1, stoppedReason="x" * 410_000))
    assert counts == {}


def test_an_item_just_under_the_limit_is_stored(dynamodb):
    event = task_event(1, stoppedReason="x" * 399_000)
    assert record(event)["outcome"] == "created"


def test_a_stored_item_with_a_non_numeric_version_is_not_overwritten_by_guess(dynamodb_local):
    # DynamoDB Local only: moto answers a string-versus-number comparison with a 500.
    arn = task_event(1)["detail"]["taskArn"]
    dynamodb_local.put_item(
        TableName=table_name(TASKS),
        Item={"taskArn": {"S": arn}, "version": {"S": "seven"}},
    )
    with pytest.raises(StoredItemConflict, match="not a number"):
        record(task_event(3))


def test_a_stored_item_without_a_version_is_replaced(dynamodb):
    arn = task_event(1)["detail"]["taskArn"]
    dynamodb.put_item(TableName=table_name(TASKS), Item={"taskArn": {"S": arn}})
    assert record(task_event(3))["outcome"] == "updated"


@pytest.mark.parametrize("detail", [{"extra": {"\ud800": 1}}, {"cw_\udfff": 1}, {"\ud800x": 1}])
def test_a_lone_surrogate_in_a_name_is_refused_with_a_loggable_field(moto_endpoint, use_endpoint, detail):
    # Regression: the field named the raw surrogate, so the "event rejected" log line failed to write.
    use_endpoint(moto_endpoint)
    with pytest.raises(InvalidEvent) as refused:
        record(task_event(1, **detail))
    assert "\\ud" in refused.value.field
    assert str(refused.value).encode("utf-8")


class Shedding:
    """A DynamoDB client whose BatchGetItem leaves the keys in ``shed`` (all: None) unprocessed on its
    first ``refusals`` calls, and answers the others with ``items`` (those of them it holds)."""

    def __init__(self, refusals, items, shed=None):
        self.refusals, self.items, self.shed, self.calls = refusals, items, shed, 0

    def batch_get_item(self, RequestItems):
        self.calls += 1
        ((table, request),) = RequestItems.items()
        keys = [key["taskArn"]["S"] for key in request["Keys"]]
        left = [key for key in keys if self.calls <= self.refusals and (self.shed is None or key in self.shed)]
        response = {"Responses": {table: [self.items[key] for key in keys if key in self.items and key not in left]}}
        if left:
            response["UnprocessedKeys"] = {table: {**request, "Keys": [{"taskArn": {"S": key}} for key in left]}}
        return response


# The stage's settings, but for the task table's name, "t" (what Shedding answers for).
SHEDDING_SETTINGS = from_environment({TASKS.name_env: "t"})


def test_batch_get_backs_off_and_reads_what_dynamodb_left_unprocessed():
    slept = []
    item = {"taskArn": {"S": "a"}, "version": {"N": "3"}}
    store = StateStore(Shedding(1, {"a": item}), SHEDDING_SETTINGS, sleep=slept.append)
    found, unprocessed = store.read_items(TASKS, ["a"])
    assert (found, unprocessed, len(slept)) == ({"a": item}, [], 1)
    store = StateStore(Shedding(99, {"a": item}), SHEDDING_SETTINGS, sleep=slept.append)
    found, unprocessed = store.read_items(TASKS, ["a"])
    assert (found, unprocessed) == ({}, ["a"])
    # A back-off between attempts, none after the last (it would only delay the answer).
    assert slept[1:] == sorted(slept[1:]) and len(slept) == 1 + UNPROCESSED_ATTEMPTS - 1


def test_stored_versions_name_the_keys_left_unread_apart_from_those_not_stored():
    """The reconciler writes a snapshot where nothing is stored, and defers the keys it could not read."""
    items = {key: {"taskArn": {"S": key}, "version": {"N": "3"}} for key in ("a", "b")}
    state = StateStore(Shedding(99, items, shed={"b"}), SHEDDING_SETTINGS, sleep=lambda seconds: None)
    assert state.stored_versions(TASKS, ["a", "b", "c"]) == ({"a": StoredVersion(3, None)}, ["b"])
