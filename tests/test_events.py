"""Parsing, validation and item building: no DynamoDB involved."""
import time
from decimal import Decimal

import pytest

from chalicelib.errors import InvalidEvent, ItemTooLarge
from chalicelib.model.attributes import MAX_ITEM_BYTES, MAX_NESTED_CONTAINERS
from chalicelib.model.changes import MAX_VERSION
from chalicelib.model.lifecycle import DELIVERY_HORIZON_SECONDS, ItemRules
from chalicelib.reconcile.snapshots import parse_snapshot
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.helpers import DAY, EVENT_TIME, HOUR, container_instance_event, iso, task_event
from tests.helpers import parse as parse_event


def nested(depth):
    """``depth`` maps, one inside the other."""
    value = "leaf"
    for _ in range(depth):
        value = {"inner": value}
    return value


def test_a_task_event_becomes_a_change_for_the_task_table():
    event = task_event(7)
    change = parse_event(event)
    assert (change.table, change.key, change.version) == (TASKS, event["detail"]["taskArn"], 7)


def test_a_container_instance_event_becomes_a_change_for_its_table():
    event = container_instance_event(3)
    change = parse_event(event)
    assert (change.table, change.key) == (CONTAINER_INSTANCES, event["detail"]["containerInstanceArn"])


def test_the_item_is_the_detail_verbatim_plus_cw_metadata():
    event = task_event(2, status="RUNNING")
    item = parse_event(event).item
    assert item["cw_version"] == {"S": "0"}
    assert "cw_id" not in item  # the log line names the event instead
    assert item["cw_time"] == {"S": event["time"]}
    assert item["status"] == {"S": "RUNNING"}  # not renamed, unlike the docs example meant to
    assert item["version"] == {"N": "2"}
    assert item["containers"] == {
        "L": [{"M": {"name": {"S": "web"}, "lastStatus": {"S": "RUNNING"}, "networkInterfaces": {"L": []}}}]
    }
    assert item["cw_source"] == {"S": "event"}
    assert item["cw_phase"] == {"S": "open"}
    assert item["cw_listing_key"] == {"S": f"{event['detail']['clusterArn']}\x1fopen\x1f"}  # no group: ""
    assert set(item) == set(event["detail"]) | {"cw_version", "cw_time", "cw_source", "cw_phase", "cw_listing",
                                                "cw_listing_key"}


def test_missing_envelope_metadata_is_left_out_not_a_crash():
    event = task_event(1)
    del event["id"], event["time"], event["version"]
    change = parse_event(event)
    assert not {"cw_time", "cw_version"} & set(change.item)
    assert abs(change.observed_at - time.time()) < 60  # no time: as new as can be, never "too old"


@pytest.mark.parametrize("value", ["yesterday", "2026-11-05T07:58:44", 1763712000, None])
def test_an_envelope_time_that_is_not_an_iso_time_with_a_zone_is_refused(value):
    with pytest.raises(InvalidEvent) as refused:
        parse_event({**task_event(1), "time": value})
    assert refused.value.field == "time"


RULES = ItemRules(read_index=True, retention_seconds=20 * DAY)  # over the delivery horizon: it counts


@pytest.mark.parametrize(
    "make_event, status, phase",
    [(task_event, {"lastStatus": "RUNNING"}, "open"), (task_event, {"lastStatus": "DEPROVISIONING"}, "open"),
     (task_event, {"lastStatus": "STOPPED"}, "finished"), (container_instance_event, {"status": "DRAINING"}, "open"),
     (container_instance_event, {"status": "INACTIVE"}, "finished")],
)
def test_the_phase_follows_the_status_and_only_finished_items_expire(make_event, status, phase):
    item = parse_event(make_event(3, **status), RULES).item
    assert item["cw_phase"] == {"S": phase}
    assert ("cw_expires_at" in item) == (phase == "finished")


def test_a_stopped_task_expires_the_retention_plus_an_hour_after_its_own_stoppedAt():
    stopped_at = EVENT_TIME - 10 * 60
    event = task_event(8, lastStatus="STOPPED", stoppedAt=iso(stopped_at + 0.75))  # delivered later:
    item = parse_event(event, RULES).item  # the task's own time counts
    assert item["cw_expires_at"] == {"N": str(int(stopped_at) + 20 * DAY + HOUR)}


@pytest.mark.parametrize("stopped_at", [..., "garbled", 12])
def test_without_a_usable_stoppedAt_a_stopped_task_expires_from_the_events_time(stopped_at):
    event = task_event(8, lastStatus="STOPPED", stoppedAt=stopped_at)
    if stopped_at is ...:
        del event["detail"]["stoppedAt"]
    item = parse_event(event, RULES).item
    assert item["cw_expires_at"] == {"N": str(int(EVENT_TIME) + 20 * DAY + HOUR)}


def test_a_deregistered_instance_expires_from_when_its_state_was_seen():
    event = container_instance_event(4, status="INACTIVE")
    item = parse_event(event, RULES).item
    assert item["cw_expires_at"] == {"N": str(int(EVENT_TIME) + 20 * DAY + HOUR)}


@pytest.mark.parametrize("retention_days", [2, 14, 16])
def test_under_the_delivery_horizon_an_item_stays_the_horizon_plus_an_hour(retention_days):
    """So no event young enough to create an item can outlive it, whatever the retention was or becomes."""
    rules = ItemRules(read_index=True, retention_seconds=retention_days * DAY)
    item = parse_event(task_event(8, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME)), rules).item
    assert DELIVERY_HORIZON_SECONDS == 16 * DAY
    assert item["cw_expires_at"] == {"N": str(int(EVENT_TIME) + 16 * DAY + HOUR)}


def test_without_the_read_index_no_phase_is_written():
    item = parse_event(task_event(3, lastStatus="STOPPED"), RULES._replace(read_index=False)).item
    assert "cw_phase" not in item and "cw_expires_at" in item


def test_a_snapshot_is_stored_like_its_event_but_for_where_it_came_from():
    event = task_event(5, lastStatus="STOPPED", stoppedAt=iso(EVENT_TIME))
    taken_at = EVENT_TIME + 20 * 60 + 1.25
    from_event = parse_event(event, RULES)
    from_api = parse_snapshot(TASKS, event["detail"], taken_at, RULES)
    assert (from_api.table, from_api.key, from_api.version) == (from_event.table, from_event.key, 5)
    assert from_api.observed_at == taken_at
    metadata = {"cw_version", "cw_time", "cw_source"}
    assert {k: v for k, v in from_api.item.items() if k not in metadata} == {
        k: v for k, v in from_event.item.items() if k not in metadata
    }
    assert from_api.item["cw_source"] == {"S": "reconcile"}
    assert from_api.item["cw_time"] == {"S": iso(EVENT_TIME + 20 * 60 + 1.25)}
    assert from_api.item["cw_time"]["S"].endswith(".25Z")  # to the millisecond, trailing zeros dropped
    assert from_api.item["cw_version"] == {"S": "0"}


def test_a_snapshot_is_validated_like_an_event():
    with pytest.raises(InvalidEvent, match="detail.version"):
        parse_snapshot(TASKS, {**task_event(1)["detail"], "version": "1"}, time.time(), RULES)


@pytest.mark.parametrize(
    "value, stored",
    [
        (1.1, "1.1"),
        (0.3, "0.3"),
        (1e16, "1e+16"),
        (-2.5e-7, "-2.5e-07"),
        (8053063680, "8053063680"),
        (10**37, str(10**37)),
        (-(10**40), str(-(10**40))),  # one significant digit: DynamoDB stores it exactly
        (True, None),
    ],
)
def test_numbers_are_written_as_json_wrote_them(value, stored):
    attribute = parse_event(task_event(1, extra=value)).item["extra"]
    assert attribute == ({"N": stored} if stored is not None else {"BOOL": True})
    if stored is not None:
        assert Decimal(stored) == Decimal(repr(value))


def test_null_and_empty_values_are_kept():
    item = parse_event(task_event(1, a=None, b="", c=[], d={})).item
    assert (item["a"], item["b"], item["c"], item["d"]) == ({"NULL": True}, {"S": ""}, {"L": []}, {"M": {}})


def test_nesting_up_to_dynamodbs_limit_is_accepted():
    parse_event(task_event(1, deep=nested(MAX_NESTED_CONTAINERS)))


def test_the_item_size_is_estimated_from_its_contents():
    small = parse_event(task_event(1)).size
    assert parse_event(task_event(1, stoppedReason="x" * 1000)).size == small + len("stoppedReason") + 1000


BAD_EVENTS = [
    # (description, how to spoil a valid event, field named, words in the problem)
    ("not an object", lambda e: ["a", "list"], "event", "JSON object"),
    ("wrong source", lambda e: {**e, "source": "aws.ec2"}, "source", "'aws.ecs'"),
    ("missing source", lambda e: {k: v for k, v in e.items() if k != "source"}, "source", "None"),
    ("unsupported detail-type", lambda e: {**e, "detail-type": "ECS Service Action"}, "detail-type", "ECS Task State Change"),
    ("detail-type not a string", lambda e: {**e, "detail-type": ["x"]}, "detail-type", "['x']"),
    ("detail missing", lambda e: {k: v for k, v in e.items() if k != "detail"}, "detail", "missing"),
    ("detail not an object", lambda e: {**e, "detail": "RUNNING"}, "detail", "got str"),
    ("detail null", lambda e: {**e, "detail": None}, "detail", "got null"),
    ("key missing", lambda e: _detail(e, taskArn=...), "detail.taskArn", "missing"),
    ("key empty", lambda e: _detail(e, taskArn=""), "detail.taskArn", "empty"),
    ("key not a string", lambda e: _detail(e, taskArn=12), "detail.taskArn", "string"),
    ("key too long", lambda e: _detail(e, taskArn="a" * 2049), "detail.taskArn", "2048"),
    ("key not unicode", lambda e: _detail(e, taskArn="arn\ud800"), "detail.taskArn", "Unicode"),
    ("version missing", lambda e: _detail(e, version=...), "detail.version", "missing"),
    ("version a string", lambda e: _detail(e, version="3"), "detail.version", "integer"),
    ("version a float", lambda e: _detail(e, version=3.0), "detail.version", "integer"),
    ("version a bool", lambda e: _detail(e, version=True), "detail.version", "integer"),
    ("version null", lambda e: _detail(e, version=None), "detail.version", "integer"),
    ("version negative", lambda e: _detail(e, version=-1), "detail.version", "negative"),
    ("version too big", lambda e: _detail(e, version=MAX_VERSION + 1), "detail.version", "38-digit"),
    ("NaN", lambda e: _detail(e, cpu=float("nan")), "detail.cpu", "NaN"),
    ("Infinity deep inside", lambda e: _detail(e, containers=[{"cpu": float("inf")}]), "detail.containers[0].cpu", "Infinity"),
    ("number too large", lambda e: _detail(e, memory=1e200), "detail.memory", "range"),
    ("number too small", lambda e: _detail(e, memory=1e-200), "detail.memory", "range"),
    ("int too large", lambda e: _detail(e, memory=10**126), "detail.memory", "range"),
    ("too many digits", lambda e: _detail(e, memory=10**38 + 1), "detail.memory", "38 significant"),
    ("nesting too deep", lambda e: _detail(e, deep=nested(MAX_NESTED_CONTAINERS + 1)), "detail.deep" + ".inner" * MAX_NESTED_CONTAINERS, "31"),
    ("empty map key", lambda e: _detail(e, overrides={"": 1}), "detail.overrides.", "non-empty"),
    ("empty attribute name", lambda e: _detail(e, **{"": 1}), "detail.", "non-empty"),
    ("lone surrogate value", lambda e: _detail(e, group="\udcff"), "detail.group", "Unicode"),
    ("not a JSON value", lambda e: _detail(e, cpu=object()), "detail.cpu", "not a JSON value"),
    ("reserved cw_ field", lambda e: _detail(e, cw_id="forged"), "detail.cw_id", "reserved"),
]


def _detail(event, **changes):
    detail = dict(event["detail"])
    for name, value in changes.items():
        if value is ...:
            detail.pop(name)
        else:
            detail[name] = value
    return {**event, "detail": detail}


@pytest.mark.parametrize("spoil, field, words", [case[1:] for case in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS])
def test_bad_input_gets_a_typed_error_naming_the_field(spoil, field, words):
    with pytest.raises(InvalidEvent) as raised:
        parse_event(spoil(task_event(1)))
    assert isinstance(raised.value, ValueError)
    assert raised.value.field == field
    assert words in raised.value.problem
    assert str(raised.value).startswith(f"{field}: ")


def test_an_item_over_400_kb_is_refused_with_its_size():
    with pytest.raises(ItemTooLarge, match=str(MAX_ITEM_BYTES)):
        parse_event(task_event(1, attachments=["x" * 1024] * 400))
