"""The benchmark's own logic: the capacity model, the streams, the gap's parts, the questions'
workload and ground truth (fast).

Against DynamoDB Local: the item-size rules at the 1 KB boundary, where a
byte decides the bill; the index model (keys only and INCLUDE); the read
index's units per lifecycle; and the questions section at a small scale.
"""
import io
import json
import random
import time
import uuid
from datetime import date, timedelta

import pytest

from bench import capacity, cost, history, questions, streams
from bench.capacity import Capture, IndexKeys, Units, index_keys, item_size, number_size, read_units, write_units
from bench.cost import Delivery, gap
from chalicelib.tables import PHASE_INDEX, READ_INDEX, TASKS
from tools.replay import DEFAULT_EVENTS, load_events, recent_events


@pytest.mark.parametrize("text, size", [
    ("0", 1), ("1", 2), ("99", 2), ("100", 2), ("101", 3), ("12345", 4), ("1763913600", 5), ("1790000000", 3),
    ("1.1", 3), ("0.3", 2), ("0.001", 2), ("12345.678", 6), ("3.14159", 5), ("1E+10", 2), ("1.5E-7", 2),
    ("-1", 3), ("-1.1", 4), ("-0.001", 3), ("9" * 38, 20), ("-" + "9" * 38, 21), ("0010", 2), ("1.10", 3),
])
def test_a_numbers_size_is_its_base_100_digit_pairs_plus_1_and_1_more_when_negative(text, size):
    # Each figure probed on DynamoDB Local; the guide's rule ("about 1 byte per 2 significant
    # digits, plus 1") agrees for integers only.
    assert number_size(text) == size


def test_item_size_follows_the_documented_rules():
    item = {
        "k": {"S": "héllo"},  # 1 + 6 (é is 2 bytes)
        "b": {"BOOL": True},  # 1 + 1
        "n": {"NULL": True},  # 1 + 1
        "m": {"M": {"ab": {"S": "x"}, "c": {"N": "12"}}},  # 1 + 3 + (2 + 1 + 1) + (1 + 2 + 1)
        "l": {"L": [{"S": "xy"}, {"L": []}]},  # 1 + 3 + (2 + 1) + (3 + 1)
        "s": {"SS": ["a", "bc"]},  # 1 + 3
        "bin": {"B": "AAEC"},  # 3 + 3 raw bytes (base64 text in a request body)
    }
    assert item_size(item) == 7 + 2 + 2 + 12 + 11 + 4 + 6
    assert item_size(None) == 0


def test_write_and_read_units():
    assert [write_units(n) for n in (0, 1, 1024, 1025, 2048, 2049)] == [1, 1, 1, 2, 2, 3]
    assert read_units(0, consistent=False) == 0.5  # a key not found still costs the minimum
    assert read_units(4096, consistent=False) == 0.5 and read_units(4097, consistent=False) == 1.0
    assert read_units(4097, consistent=True) == 2.0


def test_weighted_units_and_dollars_use_the_price_ratio():
    units = Units(write_table=2, write_index=1, read=0.5)
    assert capacity.READ_WEIGHT == pytest.approx(0.2)
    assert units.weighted == pytest.approx(3.1)
    assert units.dollars * 1e6 == pytest.approx(3 * 0.625 + 0.5 * 0.125)


INDEX = IndexKeys("clusterArn-cw_phase-index", "clusterArn", "cw_phase")
INFO = capacity.TableInfo("taskArn", (INDEX,))
LISTING = index_keys(READ_INDEX)  # projects group and cw_stop_code
LISTING_INFO = capacity.TableInfo("taskArn", (LISTING,))


def _item(phase=None, cluster="c", **extra):
    item = {"taskArn": {"S": "t"}, "clusterArn": {"S": cluster}, **extra}
    if phase is not None:
        item["cw_phase"] = {"S": phase}
    return item


@pytest.mark.parametrize("old, new, units", [
    (None, _item("open"), 1),  # created: one entry put
    (_item("open"), _item("open", lastStatus={"S": "RUNNING"}), 0),  # keys-only: nothing the index holds changed
    (_item("open"), _item("finished"), 2),  # the key changed: delete and put
    (_item("open"), _item(None), 1),  # lost its index key: delete
    (None, _item(None), 0),  # never in the index
    (_item("open"), _item("open", cluster="d"), 2),
])
def test_index_writes(old, new, units):
    assert Capture._index_writes(INFO, old, new) == units


def test_the_model_reads_the_index_specs():
    assert index_keys(PHASE_INDEX) == INDEX
    assert LISTING == IndexKeys(READ_INDEX.name, "cw_listing", "cw_listing_key", ("group", "cw_stop_code"))


def _listed(key, **extra):
    return {"taskArn": {"S": "t"}, "cw_listing": {"S": "all"}, "cw_listing_key": {"S": key}, "group": {"S": "service:web"},
            **extra}


@pytest.mark.parametrize("old, new, units", [
    (None, _listed("c\x1fopen\x1fservice:web"), 1),  # created
    (_listed("c\x1fopen\x1fservice:web"), _listed("c\x1fopen\x1fservice:web", lastStatus={"S": "RUNNING"}), 0),
    (_listed("c\x1fopen\x1fservice:web"), _listed("c\x1fopen\x1fservice:web", cw_stop_code={"S": "UserInitiated"}), 1),
    (_listed("c\x1fopen\x1fservice:web"), _listed("c\x1ffinished\x1f2026", cw_stop_code={"S": "UserInitiated"}), 2),
    (None, _listed("k", group={"S": "g" * 1000}), 2),  # an entry over 1 KB: 2 units
])
def test_index_writes_with_projected_attributes(old, new, units):
    assert Capture._index_writes(LISTING_INFO, old, new) == units


def test_a_set_update_is_applied_for_the_model():
    request = {"UpdateExpression": "SET #m = :m, #e = :e", "ExpressionAttributeNames": {"#m": "a", "#e": "b"},
               "ExpressionAttributeValues": {":m": {"S": "x"}, ":e": {"N": "1"}}}
    assert capacity._apply_set({"k": {"S": "v"}}, request) == {"k": {"S": "v"}, "a": {"S": "x"}, "b": {"N": "1"}}
    assert capacity._apply_set({}, {"UpdateExpression": "ADD n :one"}) is None


# -- streams -------------------------------------------------------------------------------------


def test_sample_events_move_by_whole_days_to_yesterday_keeping_their_size():
    today = date(2030, 1, 15)
    moved, original = recent_events(today=today), load_events(DEFAULT_EVENTS)
    assert [len(json.dumps(e)) for e in moved] == [len(json.dumps(e)) for e in original]
    assert max(e["time"][:10] for e in moved) == str(today - timedelta(days=1))
    assert {e["time"][10:] for e in moved} == {e["time"][10:] for e in original}


def test_the_lifecycle_has_eight_versions_one_per_state():
    lifecycle = streams.eight_state_lifecycle()
    assert [e["detail"]["lastStatus"] for e in lifecycle] == list(streams.TASK_STATES)
    assert [e["detail"]["version"] for e in lifecycle] == list(range(1, 9))
    deprovisioning = lifecycle[6]["detail"]
    assert "stoppedAt" not in deprovisioning and "executionStoppedAt" in deprovisioning
    assert lifecycle[5]["detail"]["updatedAt"] < deprovisioning["updatedAt"] < lifecycle[7]["detail"]["updatedAt"]


def test_the_realistic_order_swaps_and_repeats_exact_counts_and_keeps_each_task_in_order():
    tasks = streams.task_lifecycles(40)
    order, counts = streams.mostly_in_order(tasks, 0.02, 0.01, random.Random(3))
    assert counts == {"swapped_pairs": 6, "repeated_versions": 3, "consecutive_pairs": 280, "versions": 320}
    assert len(order) == 323
    inversions = 0
    for task in tasks:
        arn = task[0]["detail"]["taskArn"]
        versions = [e["detail"]["version"] for e in order if e["detail"]["taskArn"] == arn]
        assert sorted(set(versions)) == list(range(1, 9))
        inversions += sum(a > b for a, b in zip(versions, versions[1:]))
    assert inversions == 6


def test_streams_expected_outcomes_and_latest_versions():
    realistic, shuffled, instances = streams.build(10, 0.05, 0.05, 0.3, 3, 12, seed=5)
    assert realistic.outcome_counts()["created"] == 10 and len(realistic.latest) == 10
    assert set(realistic.latest.values()) == {8}
    assert len(shuffled.deliveries) == 80 + 24
    assert instances.table.kind == "container_instance" and set(instances.latest.values()) == {12}
    statuses = [e["detail"]["status"] for e in instances.deliveries
                if e["detail"]["containerInstanceArn"] == next(iter(instances.latest))]
    assert statuses[-1] == "INACTIVE" and statuses.count("ACTIVE") >= 9


# -- the gap between ours and the docs example ------------------------------------------------------


def test_the_gaps_parts_add_up_to_ours_less_the_docs_example():
    ours = [Delivery("created", Units(2, 1), Units(), 1, 0, 2000, None),
            Delivery("updated", Units(3, 0), Units(), 1, 0, 2100, 2000),
            Delivery("stale", Units(3, 0), Units(), 1, 1, 1900, 2100)]
    docs = [Delivery("created", Units(2, 0, 0.5), Units(), 2, 0, 1950, None),
            Delivery("updated", Units(2, 0, 0.5), Units(), 2, 0, 2030, 1950),
            Delivery("stale", Units(0, 0, 0.5), Units(), 1, 0, None, None)]
    result = gap(ours, docs)
    ours_total = sum(d.billed.weighted for d in ours) / 3
    docs_total = sum(d.billed.weighted for d in docs) / 3
    assert result["total"] == pytest.approx(ours_total - docs_total)
    assert result["parts"]["index"] == pytest.approx(1 / 3)
    assert result["parts"]["item_size"] == pytest.approx(1 / 3)
    assert result["parts"]["refused"] == pytest.approx(1.0)
    assert result["writes_over_a_boundary"] == 1 and result["bytes_over_the_boundary"]["max"] == 2100 - 2048


# -- against DynamoDB Local ----------------------------------------------------------------------------


def test_the_model_agrees_with_dynamodb_local_at_the_1_kb_boundary(dynamodb_local_endpoint, monkeypatch):
    import boto3

    from tools.local_dynamodb import local_environment

    for name, value in local_environment(dynamodb_local_endpoint).items():
        monkeypatch.setenv(name, value)
    client = boto3.session.Session().client("dynamodb")
    table = f"bench-size-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, KeySchema=[{"AttributeName": "taskArn", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "taskArn", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    capture = Capture()
    capture.attach(client)
    capture.know_table(table, "taskArn")
    base = {"taskArn": {"S": "t"}, "version": {"N": "1"}, "m": {"M": {"a": {"N": "-12345.678"}, "b": {"L": [
        {"BOOL": True}, {"NULL": True}, {"S": "héllo"}, {"N": "1.1"}]}}}}
    try:
        for size in (1024, 1025, 2048, 2049):
            client.delete_item(TableName=table, Key={"taskArn": {"S": "t"}})
            capture._stored[table].clear()
            pad = size - item_size({**base, "pad": {"S": ""}})
            client.put_item(TableName=table, Item={**base, "pad": {"S": "x" * pad}})
            request = capture.requests[-1]
            assert request.written_bytes == size
            assert request.reported == request.model == Units(write_units(size))
        with pytest.raises(client.exceptions.ConditionalCheckFailedException):
            client.put_item(TableName=table, Item=base, ConditionExpression="version > :v",
                            ExpressionAttributeValues={":v": {"N": "1"}}, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        refused = capture.requests[-1]
        assert refused.reported is None  # DynamoDB Local reports nothing for a refused write
        assert refused.model == Units(3) and refused.stored_bytes == 2049  # the stored item's size
    finally:
        client.delete_table(TableName=table)


def _local_client(endpoint, monkeypatch):
    import boto3

    from tools.local_dynamodb import local_environment

    for name, value in local_environment(endpoint).items():
        monkeypatch.setenv(name, value)
    return boto3.session.Session().client("dynamodb")


def _table_with_read_index(client):
    """A fresh task table with the read index, and a capture that knows it."""
    from tools.local_dynamodb import create_tables

    table = f"bench-{uuid.uuid4().hex[:8]}"
    create_tables(client, {TASKS: table}, read_index=True)
    capture = Capture()
    capture.attach(client)
    capture.know_table(table, "taskArn", [LISTING])
    return table, capture


def test_the_query_model_agrees_with_dynamodb_local_but_for_an_empty_query(dynamodb_local_endpoint, monkeypatch):
    client = _local_client(dynamodb_local_endpoint, monkeypatch)
    table, capture = _table_with_read_index(client)
    cluster = "arn:aws:ecs:us-east-1:111122223333:cluster/c"
    try:
        for count in (0, 1, 30, 60):  # entries of about 200 bytes (keys and group): 0 to 3 times 4 KB
            prefix = f"{cluster}{count}\x1fopen\x1f"
            for number in range(count):
                client.put_item(TableName=table, Item={
                    "taskArn": {"S": f"{cluster}/{count}-{number:032x}"}, "cw_listing": {"S": "all"},
                    "cw_listing_key": {"S": prefix + "service:web"}, "group": {"S": "service:web"}, "version": {"N": "1"}})
            client.query(TableName=table, IndexName=READ_INDEX.name,
                         KeyConditionExpression="cw_listing = :all AND begins_with(cw_listing_key, :prefix)",
                         ExpressionAttributeValues={":all": {"S": "all"}, ":prefix": {"S": prefix}})
            query = capture.requests[-1]
            assert query.operation == "Query" and query.response_bytes > 0
            if count:
                assert query.model == query.reported
            else:  # production charges an empty query the minimum; DynamoDB Local reports 0
                assert (query.model, query.local_model) == (Units(read=0.5), Units(read=0.0))
        # Billed for whole entries (the group projected too), however few attributes it asks back.
        client.query(TableName=table, IndexName=READ_INDEX.name, ProjectionExpression="taskArn, cw_listing_key",
                     KeyConditionExpression="cw_listing = :all", ExpressionAttributeValues={":all": {"S": "all"}})
        projected = capture.requests[-1]
        assert projected.model == projected.reported
        assert projected.model.read > read_units(sum(map(item_size, client.query(
            TableName=table, IndexName=READ_INDEX.name, ProjectionExpression="taskArn, cw_listing_key",
            KeyConditionExpression="cw_listing = :all", ExpressionAttributeValues={":all": {"S": "all"}})["Items"])), False)
        client.query(TableName=table, IndexName=READ_INDEX.name, KeyConditionExpression="cw_listing = :all",
                     FilterExpression="#g = :g", ExpressionAttributeNames={"#g": "group"},
                     ExpressionAttributeValues={":all": {"S": "all"}, ":g": {"S": "service:worker"}})
        filtered = capture.requests[-1]  # billed for what it read, not what it returned: the report is used
        assert filtered.model is None and filtered.reported.read > 0.5 and filtered.billed == filtered.reported
    finally:
        client.delete_table(TableName=table)


def test_the_include_index_model_agrees_with_dynamodb_local(dynamodb_local_endpoint, monkeypatch):
    """An entry created (1), a projected attribute changed (1), a change the index does not hold (0),
    the key moved (2), an entry over 1 KB (2): as DynamoDB Local reports them."""
    client = _local_client(dynamodb_local_endpoint, monkeypatch)
    table, capture = _table_with_read_index(client)
    open_key, finished_key = "c\x1fopen\x1fservice:web", "c\x1ffinished\x1f2026-11-05T07:58:44.000Z"
    items = [
        (_listed(open_key), 1),
        (_listed(open_key, cw_stop_code={"S": "UserInitiated"}), 1),
        (_listed(open_key, cw_stop_code={"S": "UserInitiated"}, lastStatus={"S": "STOPPING"}), 0),
        (_listed(finished_key, cw_stop_code={"S": "UserInitiated"}), 2),
        (_listed(finished_key, group={"S": "family:" + "x" * 1000}), 2),
    ]
    try:
        for item, units in items:
            client.put_item(TableName=table, Item=item)
            request = capture.requests[-1]
            assert request.model.write_index == units
            assert request.reported == request.model
    finally:
        client.delete_table(TableName=table)


def test_the_read_index_costs_3_write_units_per_lifecycle(dynamodb_local):
    from chalicelib import runtime

    capture = Capture()
    capture.attach(runtime.current().dynamodb())
    result = cost.lifecycle_index(capture, dynamodb_local, lambda event: runtime.current().record(event)["outcome"],
                                  io.StringIO(), lifecycles=2)
    assert result["wrong_answers"] == 0 and result["wrong_final_items"] == 0
    units = {state: figures["index_reported"] for state, figures in result["by_state"].items()}
    assert units == {"PROVISIONING": 1, "PENDING": 0, "ACTIVATING": 0, "RUNNING": 0, "DEACTIVATING": 0,
                     "STOPPING": 0, "DEPROVISIONING": 0, "STOPPED": 2}  # created; moved (delete and put)
    assert result["per_lifecycle_reported"] == result["per_lifecycle_billed"] == 3
    assert 100 < result["entry_bytes_min"] <= result["entry_bytes_max"] < 1024


# -- the questions' workload and answers --------------------------------------------------------


def test_the_question_workload_is_relative_to_now_and_its_tasks_stop_as_ecs_stops_them():
    now = time.time()
    work = history.build(now, lifecycles=40, finished=60, days=13, seed=3)
    times = [history.parse_time(e["time"], "time") for e in work.deliveries]
    assert max(times) <= now and min(times) > now - 14 * 86_400
    assert len(work.final) == 100 and work.expected_outcomes.count("created") == 100
    for detail in work.final.values():
        if detail["lastStatus"] == "STOPPED":
            assert now - 13 * 86_400 <= history.stopped_at(detail) <= now
    by_task = {}
    for event in work.deliveries:
        by_task.setdefault(event["detail"]["taskArn"], {})[event["detail"]["lastStatus"]] = event["detail"]
    lifecycle = next(states for states in by_task.values() if len(states) == 8)
    assert "stopCode" not in lifecycle["RUNNING"] and "stopCode" in lifecycle["DEACTIVATING"]
    assert "stoppedAt" not in lifecycle["DEPROVISIONING"] and "stoppedAt" in lifecycle["STOPPED"]
    assert {d["clusterArn"].rsplit("/", 1)[-1] for d in work.final.values()} == set(history.CLUSTERS)


def test_the_ground_truth_answers_from_the_final_versions():
    now = time.time()
    asked = history.question_time(now)
    assert asked < now and history.midnight(asked + 120) - asked == 60  # a minute before midnight
    work = history.build(asked, lifecycles=60, finished=200, seed=4)
    truth = history.truth(work, asked)
    busy = history.cluster_arn(history.BUSY)
    final = work.final
    assert all(final[k]["group"] == "service:web" and final[k]["lastStatus"] == "RUNNING" and final[k]["clusterArn"] == busy
               for k in truth["service_running"])
    assert all(asked - 3600 <= history.stopped_at(final[k]) for k in truth["stopped_last_hour"])
    assert set(truth["stopped_last_hour"]) <= set(truth["all_stopped"])
    oom = [k for keys in truth["oom_today"].values() for k in keys]
    assert oom and all(history.is_oom(final[k]) and final[k]["stopCode"] == "EssentialContainerExited" for k in oom)
    assert truth["one_task"]["taskArn"] in truth["all_stopped"]


def test_oom_is_a_reason_or_exit_code_137():
    assert history.is_oom({"containers": [{"exitCode": 0}, {"exitCode": 137}]})
    assert history.is_oom({"containers": [{"reason": "OutOfMemoryError: Container killed due to memory usage"}]})
    assert not history.is_oom({"containers": [{"exitCode": 1, "reason": "Essential container in task exited"}]})
    assert not history.is_oom({})


def test_the_questions_section_at_a_small_scale(dynamodb_local):
    """The whole section: recorded by the recorder, asked of the read API, checked against the truth."""
    log = io.StringIO()
    result = questions.measure(Capture(), dynamodb_local, lifecycles=24, finished=120, days=13, swap_rate=0.05,
                               repeat_rate=0.05, seed=2, log=log)
    assert questions.checks(result) == {name: True for name in questions.checks(result)}
    asked = result["questions"]
    assert all(q["right"] for q in asked.values())
    assert asked["all_stopped"]["found"] == asked["all_stopped"]["expected"] > 100  # more than one page
    assert asked["all_stopped"]["cost"]["api_calls"] >= 2
    assert asked["one_task"]["cost"]["requests"] == 1
    assert asked["oom_today"]["cost"]["operations"]["Query"] >= 5 + 3  # GET /clusters: 2 + 1 per cluster
    assert result["cold_probe"]["errors"] == 1
    out = io.StringIO()
    questions.print_section(result, out)
    assert "(b) worker tasks stopped in the last hour" in out.getvalue()
