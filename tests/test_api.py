"""Every route through chalice.test.Client's http, on Amazon's DynamoDB Local."""
import base64
import json
from urllib.parse import quote, urlencode

import pytest
from chalice import IAMAuthorizer

from chalicelib import runtime
from chalicelib.api import reads as api
from chalicelib.api.events_route import MAX_EVENTS_PER_REQUEST
from chalicelib.api.reads import MAX_LIMIT
from chalicelib.config import READ_INDEX_ENV
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.apps import client_for, load_app
from tests.helpers import (
    ACCOUNT,
    container_instance_event,
    count_requests,
    expected_item,
    stored_item,
    table_name,
    task_event,
)
from tools.replay import expected_state, recent_events, write_recent_event_files

WEB_PROD = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/web-prod"
BATCH_EC2 = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/batch-ec2"
TEST_CLUSTER = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/test-cluster"
READ_ROUTES = ["/tasks", "/tasks/{id}", "/container-instances", "/container-instances/{id}", "/clusters"]


@pytest.fixture(scope="module")
def local_app():
    return load_app(events_route=True)


@pytest.fixture
def http(dynamodb_local, local_app):
    return client_for(local_app).http


def get(http, path, **params):
    return http.get(f"{path}?{urlencode(params)}" if params else path)


def post_events(http, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post("/events", headers={"Content-Type": content_type}, body=data)


def message(response):
    return response.json_body["Message"]


def expected_keys(kind, cluster, status=None):
    """The keys the events in events/ leave in ``cluster`` (with ``status``), at their latest versions."""
    status_field = "lastStatus" if kind == "task" else "status"
    return {
        key
        for (event_kind, key), event in expected_state(recent_events()).items()
        if event_kind == kind
        and event["detail"]["clusterArn"] == cluster
        and (status is None or event["detail"][status_field] == status)
    }


@pytest.fixture
def recorded(http, tmp_path):
    """Every event in events/, dated yesterday, posted file by file as the docs show."""
    for path in write_recent_event_files(tmp_path):
        response = post_events(http, path.read_bytes())
        assert response.status_code == 200, response.body
    return http


def all_pages(http, path, **params):
    items, pages, token = [], 0, None
    while True:
        response = get(http, path, **params, **({"next": token} if token else {}))
        assert response.status_code == 200, response.body
        items.extend(response.json_body["items"])
        pages += 1
        token = response.json_body["next"]
        if token is None:
            return items, pages


# -- listing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, kind, key, cluster",
    [("/tasks", "task", "taskArn", WEB_PROD), ("/tasks", "task", "taskArn", BATCH_EC2),
     ("/container-instances", "container_instance", "containerInstanceArn", BATCH_EC2)],
)
def test_a_cluster_lists_the_latest_state_of_its_items(recorded, path, kind, key, cluster):
    assert expected_keys(kind, cluster)
    response = get(recorded, path, cluster=cluster)
    assert response.status_code == 200
    items = response.json_body["items"]
    assert {item[key] for item in items} == expected_keys(kind, cluster)
    assert response.json_body["next"] is None
    table = TASKS if kind == "task" else CONTAINER_INSTANCES
    for item in items:
        assert item["version"] == int(stored_item(runtime.current().dynamodb(), table, item[key])["version"])


@pytest.mark.parametrize("status", ["STOPPED", "RUNNING"])
def test_status_filters_tasks_by_last_status(recorded, status):
    expected = expected_keys("task", WEB_PROD, status)
    assert expected and expected != expected_keys("task", WEB_PROD)
    items = get(recorded, "/tasks", cluster=WEB_PROD, status=status).json_body["items"]
    assert {item["taskArn"] for item in items} == expected
    assert all(item["lastStatus"] == status for item in items)


def test_status_filters_container_instances_by_status(recorded):
    expected = expected_keys("container_instance", BATCH_EC2, "DRAINING")
    assert expected
    items = get(recorded, "/container-instances", cluster=BATCH_EC2, status="DRAINING").json_body["items"]
    assert {item["containerInstanceArn"] for item in items} == expected
    # An earlier version was ACTIVE: the index follows the latest one.
    assert get(recorded, "/container-instances", cluster=BATCH_EC2, status="ACTIVE").json_body["items"] == []


def test_an_unknown_cluster_lists_nothing(recorded):
    response = get(recorded, "/tasks", cluster=f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/nothing-here")
    assert response.json_body == {"items": [], "next": None}


def test_listing_a_table_without_the_index_says_which_index_is_missing(http, dynamodb_local, configure):
    # Like the docs example's own ECSTaskState before `make deploy` adds the index: its key only.
    dynamodb_local.create_table(**TASKS.create_table_request("no-index-tasks", read_index=False))
    configure(task_table="no-index-tasks")
    response = get(http, "/tasks", cluster=WEB_PROD)
    assert response.status_code == 503
    assert f"has no usable index {TASKS.read_index.name}" in message(response)


def test_a_stage_without_the_read_index_answers_listings_501_and_still_gets_items(recorded, configure):
    configure(read_index=False)
    requests = count_requests(runtime.current().dynamodb())
    response = get(recorded, "/tasks", cluster=WEB_PROD)
    assert response.status_code == 501
    assert message(response).startswith(f"listing needs the read index, which this stage turns off ({READ_INDEX_ENV}")
    assert requests == {}
    arn = next(iter(expected_keys("task", WEB_PROD)))
    assert recorded.get(f"/tasks/{quote(arn, safe='')}").status_code == 200


@pytest.mark.parametrize("limit, status", [(1, None), (3, None), (7, None), (8, None), (2, "RUNNING")])
def test_pages_cover_the_listing_once_and_end_with_no_token(http, limit, status):
    for number in range(7):
        post_events(http, task_event(1, task_id=f"{number:032x}", lastStatus="RUNNING" if number % 2 else "PENDING"))
    items, pages = all_pages(http, "/tasks", cluster=TEST_CLUSTER, limit=limit, **({"status": status} if status else {}))
    expected = 7 if status is None else 3
    assert len(items) == expected
    assert len({item["taskArn"] for item in items}) == expected
    assert pages == max(1, -(-expected // limit))  # no empty last page


def test_the_default_page_holds_fifty(http):
    for number in range(51):
        post_events(http, task_event(1, task_id=f"{number:032x}"))
    first = get(http, "/tasks", cluster=TEST_CLUSTER).json_body
    assert len(first["items"]) == 50
    second = get(http, "/tasks", cluster=TEST_CLUSTER, next=first["next"]).json_body
    assert len(second["items"]) == 1 and second["next"] is None


def _token_of(http, **params):
    for number in range(3):
        post_events(http, task_event(1, task_id=f"{number:032x}"))
    token = get(http, "/tasks", cluster=TEST_CLUSTER, limit=1, **params).json_body["next"]
    assert token
    return token


def _tampered(token, **changes):
    key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    key.update(changes)
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda token: "not-a-token",
        lambda token: "!!!",
        lambda token: token[:-3],
        lambda token: base64.urlsafe_b64encode(b"[1, 2]").decode(),
        lambda token: _tampered(token, clusterArn=WEB_PROD),
        lambda token: _tampered(token, taskArn=5),
        lambda token: _tampered(token, extra="x"),
        lambda token: _tampered(token, lastStatus=""),
    ],
    ids=["garbage", "not-base64", "truncated", "not-a-key", "other-cluster", "number", "extra-field", "empty"],
)
def test_a_tampered_token_is_refused(http, make_bad):
    bad = make_bad(_token_of(http))
    response = get(http, "/tasks", cluster=TEST_CLUSTER, limit=1, next=bad)
    assert response.status_code == 400
    assert message(response).startswith("next: is not a token from this listing")


def test_a_token_only_continues_its_own_listing(http):
    token = _token_of(http)
    assert get(http, "/tasks", cluster=TEST_CLUSTER, status="STOPPED", next=token).status_code == 400
    assert get(http, "/container-instances", cluster=TEST_CLUSTER, next=token).status_code == 400
    assert get(http, "/tasks", cluster=TEST_CLUSTER, next=token).status_code == 200


@pytest.mark.parametrize(
    "params, named",
    [
        ({}, "cluster: is required"),
        ({"cluster": f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/web-prod/abc"}, "cluster: must be a cluster name or ARN"),
        ({"cluster": ""}, "cluster: must be a cluster name or ARN"),
        ({"cluster": WEB_PROD, "limit": "0"}, "limit: must be an integer from 1 to 100"),
        ({"cluster": WEB_PROD, "limit": str(MAX_LIMIT + 1)}, "limit: must be an integer"),
        ({"cluster": WEB_PROD, "limit": "-1"}, "limit: must be an integer"),
        ({"cluster": WEB_PROD, "limit": "ten"}, "limit: must be an integer"),
        ({"cluster": WEB_PROD, "limit": ""}, "limit: must be an integer"),
        ({"cluster": WEB_PROD, "status": ""}, "status: must be an ECS status"),
        ({"cluster": WEB_PROD, "status": "RUNNING OR 1=1"}, "status: must be an ECS status"),
        ({"cluster": WEB_PROD, "clustr": WEB_PROD}, "clustr: is not a parameter here"),
    ],
)
@pytest.mark.parametrize("path", ["/tasks", "/container-instances"])
def test_bad_list_parameters_get_400_naming_them_and_no_request(http, path, params, named):
    requests = count_requests(runtime.current().dynamodb())
    response = get(http, path, **params)
    assert response.status_code == 400
    assert message(response).startswith(named)
    assert requests == {}


def test_a_repeated_parameter_is_refused(http):
    response = http.get(f"/tasks?cluster={quote(WEB_PROD)}&cluster={quote(BATCH_EC2)}")
    assert response.status_code == 400
    assert message(response) == "cluster: is given more than once"


# -- one item ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, table, event",
    [("/tasks", TASKS, task_event(3)), ("/container-instances", CONTAINER_INSTANCES, container_instance_event(2))],
    ids=["task", "container-instance"],
)
def test_an_item_is_found_by_its_url_encoded_arn_or_by_id_and_cluster(http, path, table, event):
    post_events(http, event)
    arn = event["detail"][table.key]
    by_arn = http.get(f"{path}/{quote(arn, safe='')}")
    by_id = get(http, f"{path}/{arn.rsplit('/', 1)[-1]}", cluster=TEST_CLUSTER)
    assert by_arn.status_code == by_id.status_code == 200
    assert by_arn.json_body == by_id.json_body
    assert by_arn.json_body[table.key] == arn and by_arn.json_body["version"] == event["detail"]["version"]


def test_the_stored_fields_come_back_with_numbers_as_json_numbers(http):
    event = container_instance_event(5)
    post_events(http, event)
    response = http.get(f"/container-instances/{quote(event['detail']['containerInstanceArn'], safe='')}")
    expected = expected_item(event)
    # All but the read index's keys, which repeat the cluster, phase and group, joined by U+001F.
    assert response.json_body == {name: value for name, value in expected.items()
                                  if name not in ("cw_listing", "cw_listing_key")}
    with_keys = http.get(f"/container-instances/{quote(event['detail']['containerInstanceArn'], safe='')}"
                         "?fields=cw_listing_key")
    assert with_keys.json_body["cw_listing_key"] == expected["cw_listing_key"]
    text = response.body.decode()
    assert '"version":5' in text and '"integerValue":2048' in text and '"doubleValue":1.1' in text
    assert '"longValue":8053063680' in text


def test_an_unknown_id_is_404(http):
    arn = task_event(1, task_id="f" * 32)["detail"]["taskArn"]
    assert http.get(f"/tasks/{quote(arn, safe='')}").status_code == 404
    response = get(http, "/container-instances/" + "e" * 32, cluster=TEST_CLUSTER)
    assert response.status_code == 404
    assert "is not recorded" in message(response)


@pytest.mark.parametrize(
    "ident, params, named",
    [
        ("0123456789abcdef", {}, "cluster: is required with a task ID"),
        ("0123456789abcdef", {"cluster": "test cluster"}, "cluster: must be a cluster name or ARN"),
        (quote(task_event(1)["detail"]["taskArn"], safe=""), {"cluster": TEST_CLUSTER}, "cluster: only goes with"),
        (quote(container_instance_event(1)["detail"]["containerInstanceArn"], safe=""), {}, "id: is not a task ARN"),
        (quote("arn:aws:ecs:us-east-1:1:task/c/" + "x" * 2048, safe=""), {}, "id: is not a task ARN"),
        ("bad%20id", {"cluster": TEST_CLUSTER}, "id: must be a task ID or a URL-encoded task ARN"),
        ("0123", {"cluster": TEST_CLUSTER, "status": "RUNNING"}, "status: is not a parameter here"),
    ],
)
def test_bad_ids_and_parameters_get_400_naming_them(http, ident, params, named):
    requests = count_requests(runtime.current().dynamodb())
    response = get(http, f"/tasks/{ident}", **params)
    assert response.status_code == 400
    assert message(response).startswith(named)
    assert requests == {}


# -- reads are queries of the index and reads by key, never a scan ------------


def test_reads_are_queries_and_gets_never_scans(recorded):
    requests = count_requests(runtime.current().dynamodb())
    all_pages(recorded, "/tasks", cluster=WEB_PROD, limit=1)
    get(recorded, "/tasks", cluster=WEB_PROD, status="STOPPED")
    get(recorded, "/container-instances", cluster=BATCH_EC2)
    arn = next(iter(expected_keys("task", WEB_PROD)))
    recorded.get(f"/tasks/{quote(arn, safe='')}")
    assert set(requests) == {"Query", "BatchGetItem", "GetItem"}
    assert requests["GetItem"] == 1


# -- what DynamoDB did not return, did not answer, or answered slowly --------------


def _missed_by_reads(client, key):
    """Make every BatchGetItem leave out ``key``'s item, as an eventually consistent read of an item
    just written may, or one TTL deleted before the index caught up."""

    def drop(parsed, **kwargs):
        for items in parsed.get("Responses", {}).values():
            items[:] = [item for item in items if key not in {value.get("S") for value in item.values()}]

    client.meta.events.register("after-call.dynamodb.BatchGetItem", drop)


@pytest.mark.parametrize("limit", [1, 2, 3, 6])
def test_paging_never_skips_a_key_after_one_whose_item_a_read_missed(http, limit):
    arns = []
    for number in range(7):
        event = task_event(1, task_id=f"{number:032x}")
        post_events(http, event)
        arns.append(event["detail"]["taskArn"])
    missed = arns[1]
    _missed_by_reads(runtime.current().dynamodb(), missed)
    items, pages = all_pages(http, "/tasks", cluster=TEST_CLUSTER, limit=limit)
    assert sorted(item["taskArn"] for item in items) == sorted(set(arns) - {missed})  # each once, none skipped
    assert pages == -(-6 // limit)


def _failing_client(monkeypatch, operation, error):
    """Make the app's DynamoDB client raise ``error`` on ``operation``."""
    def fail(**kwargs):
        raise error

    monkeypatch.setattr(runtime.current().dynamodb(), operation, fail)


def _client_error(code, status):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "slow down"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "Query")


BUSY = [
    _client_error("ProvisionedThroughputExceededException", 400),
    _client_error("ThrottlingException", 400),
    _client_error("InternalServerError", 500),
    _client_error("ServiceUnavailable", 503),
]


def _timeout():
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    return [ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), ConnectTimeoutError(endpoint_url="http://127.0.0.1:1")]


def _error_id(error):
    from botocore.exceptions import ClientError

    return error.response["Error"]["Code"] if isinstance(error, ClientError) else type(error).__name__


@pytest.mark.parametrize("error", BUSY + _timeout(), ids=_error_id)
@pytest.mark.parametrize("route, operation", [("list", "query"), ("get", "get_item")])
def test_throttling_timeouts_and_dynamodb_failures_answer_503_with_retry_after_and_are_logged(
        http, monkeypatch, capsys, error, route, operation):
    from tests.helpers import logs_and_metrics

    _failing_client(monkeypatch, operation, error)
    with logs_and_metrics(capsys, monkeypatch) as lines:
        if route == "list":
            response = get(http, "/tasks", cluster=TEST_CLUSTER)
        else:
            response = get(http, "/tasks/" + "a" * 32, cluster=TEST_CLUSTER)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert message(response).endswith("retry")
    assert [line["status"] for line in lines if line.get("message") == "read not answered"] == [503]


def test_a_refusal_that_is_ecs_states_own_fault_is_still_a_500(http, monkeypatch):
    _failing_client(monkeypatch, "query", _client_error("AccessDeniedException", 400))
    assert get(http, "/tasks", cluster=TEST_CLUSTER).status_code == 500


class SlowDynamoDB:
    """Every DynamoDB request of the app takes ``seconds`` on the listing's clock (moved, not slept)."""

    def __init__(self, configure, seconds):
        self.now = 0.0
        configure(monotonic=lambda: self.now)

        def slow(**kwargs):
            self.now += seconds

        runtime.current().dynamodb().meta.events.register("before-send.dynamodb", slow)


def test_a_slow_dynamodb_ends_the_page_early_with_a_token_and_nothing_is_skipped(http, monkeypatch, configure):
    for number in range(12):
        post_events(http, task_event(1, task_id=f"{number:032x}", lastStatus="RUNNING" if number % 3 == 0 else "PENDING"))
    monkeypatch.setattr(api, "MAX_LIMIT", 2)  # a status listing reads 2 keys a request: many requests
    SlowDynamoDB(configure, seconds=1.0)
    monkeypatch.setattr(api, "LISTING_BUDGET_SECONDS", 2.5)
    items, pages = all_pages(http, "/tasks", cluster=TEST_CLUSTER, status="RUNNING", limit=2)
    assert sorted(item["taskArn"][-2:] for item in items) == ["00", "03", "06", "09"]
    assert pages > 2  # the budget, not the limit, ended some pages


def test_a_dynamodb_too_slow_to_list_anything_answers_503_with_retry_after(http, configure):
    post_events(http, task_event(1))
    SlowDynamoDB(configure, seconds=30.0)
    response = get(http, "/tasks", cluster=TEST_CLUSTER)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert message(response) == f"DynamoDB answered too slowly to list anything within {api.LISTING_BUDGET_SECONDS:g} s: retry"


def test_a_page_stops_short_of_what_lambda_may_answer(http, monkeypatch):
    padding = "x" * 2000
    for number in range(9):
        post_events(http, task_event(1, task_id=f"{number:032x}", padding=padding))
    one = get(http, "/tasks/" + "0" * 32, cluster=TEST_CLUSTER).body
    monkeypatch.setattr(api, "MAX_PAGE_BYTES", int(len(one) * 2.5))  # two such items, not three
    items, pages = all_pages(http, "/tasks", cluster=TEST_CLUSTER, limit=10)
    assert len({item["taskArn"] for item in items}) == len(items) == 9
    assert pages == 5


def test_a_key_the_index_lists_twice_is_read_and_listed_once(http):
    """An item that moves from the open to the finished phase while a listing goes through the
    index can be listed in both; BatchGetItem refuses a key given twice (a 400 for a valid request)."""
    for number in range(3):
        post_events(http, task_event(1, task_id=f"{number:032x}"))

    def twice(parsed, **kwargs):
        parsed["Items"] = parsed.get("Items", []) + parsed.get("Items", [])[:1]

    runtime.current().dynamodb().meta.events.register("after-call.dynamodb.Query", twice)
    response = get(http, "/tasks", cluster=TEST_CLUSTER)
    assert response.status_code == 200, response.body
    assert len(response.json_body["items"]) == 3


# -- what is written can be read: one definition of an ARN ------------------------

SAMPLES_ACCOUNT = "0123456789"  # the aws-samples stopped-task event's account: 10 digits, not 12
SAMPLES_CLUSTER = f"arn:aws:ecs:us-east-1:{SAMPLES_ACCOUNT}:cluster/default"


def test_a_task_with_a_ten_digit_account_is_read_back_and_listed_under_its_cluster(http):
    arn = f"arn:aws:ecs:us-east-1:{SAMPLES_ACCOUNT}:task/default/" + "b" * 32
    event = task_event(2, taskArn=arn, clusterArn=SAMPLES_CLUSTER, lastStatus="STOPPED")
    assert post_events(http, event).json_body["outcome"] == "created"
    by_arn = http.get(f"/tasks/{quote(arn, safe='')}")
    by_id = get(http, "/tasks/" + "b" * 32, cluster=SAMPLES_CLUSTER)
    assert by_arn.status_code == by_id.status_code == 200 and by_arn.json_body == by_id.json_body
    listed = get(http, "/tasks", cluster=SAMPLES_CLUSTER).json_body
    assert [item["taskArn"] for item in listed["items"]] == [arn] and listed["next"] is None


def test_any_key_the_writer_takes_can_be_got_by_its_exact_arn(http):
    arn = "arn:aws:ecs:us-east-1:111122223333:task/odd cluster/ünïcode"  # not ECS's form, but stored
    post_events(http, task_event(1, taskArn=arn))
    response = http.get(f"/tasks/{quote(arn, safe='')}")
    assert response.status_code == 200 and response.json_body["taskArn"] == arn


@pytest.mark.parametrize("status", ["running", "Running", "RUNNING"])
def test_a_status_is_matched_in_any_case(http, status):
    post_events(http, task_event(1, task_id="1" * 32, lastStatus="RUNNING"))
    post_events(http, task_event(1, task_id="2" * 32, lastStatus="PENDING"))
    items = get(http, "/tasks", cluster=TEST_CLUSTER, status=status).json_body["items"]
    assert [item["taskArn"].rsplit("/", 1)[-1] for item in items] == ["1" * 32]


def test_an_old_format_task_is_found_by_id_and_cluster_and_a_miss_says_what_to_try(http):
    old_arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/" + "c" * 32  # ARNs before the cluster was in them
    post_events(http, task_event(3, taskArn=old_arn))
    found = get(http, "/tasks/" + "c" * 32, cluster=TEST_CLUSTER)
    assert found.status_code == 200 and found.json_body["taskArn"] == old_arn
    missing = get(http, "/tasks/" + "d" * 32, cluster=TEST_CLUSTER)
    assert missing.status_code == 404
    assert "get it by its whole URL-encoded ARN" in message(missing)
    assert f"task/test-cluster/{'d' * 32}" in message(missing) and f"task/{'d' * 32}" in message(missing)


# -- POST /events ------------------------------------------------------------------


def test_one_event_answers_one_outcome_and_is_stored(http):
    event = task_event(2)
    response = post_events(http, event)
    assert response.status_code == 200
    assert response.json_body == {
        "outcome": "created", "kind": "task", "key": event["detail"]["taskArn"], "version": 2, "stored_version": None,
    }
    assert stored_item(runtime.current().dynamodb(), TASKS, event["detail"]["taskArn"])["version"] == 2


def test_an_array_answers_each_outcome_in_order(http):
    response = post_events(http, [task_event(2), task_event(2), task_event(1), task_event(3), container_instance_event(1)])
    assert [result["outcome"] for result in response.json_body] == ["created", "duplicate", "stale", "updated", "created"]


def test_form_encoded_bodies_are_read_as_json_as_curl_data_sends_them(http):
    response = post_events(http, [task_event(1)], content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and response.json_body[0]["outcome"] == "created"


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"version": "seven"}, "events[1].detail.version: must be an integer"),
        ({"clusterArn": 5}, "events[1].detail.clusterArn: must be a string, got int"),
        ({"lastStatus": ""}, "events[1].detail.lastStatus: must not be empty"),
        ({"cw_id": "x"}, "events[1].detail.cw_id: the cw_ prefix is reserved"),
    ],
)
def test_one_bad_event_refuses_the_whole_array_before_any_write(http, bad, named):
    events = [task_event(1, task_id="a" * 32), task_event(2, task_id="b" * 32), task_event(1, task_id="c" * 32)]
    events[1]["detail"].update(bad)
    requests = count_requests(runtime.current().dynamodb())
    response = post_events(http, events)
    assert response.status_code == 400
    assert message(response).startswith(named)
    assert requests == {}


def test_a_bad_single_event_names_its_field(http):
    response = post_events(http, {**task_event(1), "source": "aws.ec2"})
    assert response.status_code == 400
    assert message(response) == "source: must be 'aws.ecs', got 'aws.ec2'"


@pytest.mark.parametrize(
    "body, named",
    [
        (b"", "body: is not JSON"),
        (b"{not json", "body: is not JSON"),
        (b"\xff\xfe", "body: is not JSON"),
        (b"[" * 100_000, "body: is not JSON"),
        (b"[]", "body: the array holds no events"),
        (b"42", "body: must be an event (a JSON object) or an array of events, got int"),
        (b"[42]", "events[0].event: must be a JSON object, got int"),
        (json.dumps([task_event(1)] * (MAX_EVENTS_PER_REQUEST + 1)).encode(), f"body: holds {MAX_EVENTS_PER_REQUEST + 1} events"),
    ],
    ids=["empty", "broken", "not-utf8", "deep", "empty-array", "number", "array-of-number", "too-many"],
)
def test_bad_bodies_get_400_and_no_request(http, body, named):
    requests = count_requests(runtime.current().dynamodb())
    response = post_events(http, body)
    assert response.status_code == 400
    assert message(response).startswith(named)
    assert requests == {}


def test_a_conflicting_stored_item_stops_with_409_and_lists_what_was_recorded(http):
    conflicting = task_event(1, task_id="d" * 32)
    runtime.current().dynamodb().put_item(
        TableName=table_name(TASKS),
        Item={"taskArn": {"S": conflicting["detail"]["taskArn"]}, "version": {"S": "seven"}},
    )
    response = post_events(http, [task_event(1), conflicting, task_event(2)])
    assert response.status_code == 409
    assert message(response).startswith("events[1]: taskArn")
    assert [result["outcome"] for result in response.json_body["recorded"]] == ["created"]


def test_a_dynamodb_failure_answers_502_and_lists_what_was_recorded(http):
    runtime.current().dynamodb().delete_table(TableName=table_name(CONTAINER_INSTANCES))
    response = post_events(http, [task_event(1), container_instance_event(1)])
    assert response.status_code == 502
    assert message(response).startswith("events[1]: DynamoDB failed")
    assert [result["kind"] for result in response.json_body["recorded"]] == ["task"]


# -- stage gating and authorization --------------------------------------------


def test_post_events_exists_only_where_the_stage_enables_it(dynamodb_local):
    without = client_for(load_app(events_route=False)).http
    response = without.post("/events", headers={"Content-Type": "application/json"}, body=json.dumps(task_event(1)).encode())
    assert response.status_code == 403  # API Gateway's answer for a route that does not exist
    assert stored_item(dynamodb_local, TASKS, task_event(1)["detail"]["taskArn"]) is None
    assert "/events" not in load_app(events_route=False).routes
    assert set(load_app(events_route=True).routes) == set(READ_ROUTES) | {"/events"}


@pytest.mark.parametrize("events_route", [False, True])
def test_every_route_requires_iam_authorization(events_route):
    app = load_app(events_route)
    entries = [entry for methods in app.routes.values() for entry in methods.values()]
    assert len(entries) == len(READ_ROUTES) + events_route
    assert all(isinstance(entry.authorizer, IAMAuthorizer) for entry in entries)


def test_an_item_dynamodb_refuses_stops_with_400_and_lists_what_was_recorded(http, monkeypatch):
    # DynamoDB's own size count can refuse an item ecs-state's estimate let through.
    from chalicelib.errors import ItemTooLarge
    from chalicelib.store import StateStore

    put_if_newer = StateStore.put_if_newer

    def refuse_the_second(store, change):
        if change.version == 2:
            raise ItemTooLarge("detail", "DynamoDB refused the item: Item size has exceeded the maximum allowed size")
        return put_if_newer(store, change)

    monkeypatch.setattr(StateStore, "put_if_newer", refuse_the_second)
    response = post_events(http, [task_event(1), task_event(2)])
    assert response.status_code == 400
    assert message(response) == "events[1].detail: DynamoDB refused the item: Item size has exceeded the maximum allowed size"
    assert [result["version"] for result in response.json_body["recorded"]] == [1]


@pytest.mark.parametrize(
    "refusal, status, words",
    [
        ("The table does not have the specified index: clusterArn-cw_phase-index", 503, "has no usable index"),
        ("Cannot read from backfilling global secondary index: clusterArn-cw_phase-index", 503, "has no usable index"),
        ("The provided starting key is invalid: The provided key element does not match the schema", 400,
         "DynamoDB refused the request: The provided starting key is invalid"),
    ],
)
def test_what_dynamodb_refuses_is_named_by_its_cause(http, monkeypatch, refusal, status, words):
    from botocore.exceptions import ClientError

    def refuse(**request):
        raise ClientError({"Error": {"Code": "ValidationException", "Message": refusal}}, "Query")

    monkeypatch.setattr(runtime.current().dynamodb(), "query", refuse)
    response = get(http, "/tasks", cluster=WEB_PROD)
    assert response.status_code == status
    assert words in message(response)
    if status == 400:
        assert "index" not in message(response).split(":")[0]


def test_a_listing_by_status_bounds_its_reads_and_continues_where_it_stopped(http, monkeypatch):
    monkeypatch.setattr(api, "MAX_KEYS_READ_PER_REQUEST", 3)
    monkeypatch.setattr(api, "MAX_LIMIT", 2)  # index pages of 2 keys
    for number in range(9):
        post_events(http, task_event(1, task_id=f"{number:032x}", lastStatus="RUNNING" if number in (4, 8) else "PENDING"))
    items, pages = all_pages(http, "/tasks", cluster=TEST_CLUSTER, status="RUNNING", limit=2)
    assert sorted(item["taskArn"][-1] for item in items) == ["4", "8"]
    assert pages >= 3  # some pages stopped after their reads, with fewer items than the limit


def test_ghosts_and_expired_items_are_listed_and_got_as_stored(http):
    event = task_event(3)
    post_events(http, event)
    client = runtime.current().dynamodb()
    client.update_item(
        TableName=table_name(TASKS), Key={"taskArn": {"S": event["detail"]["taskArn"]}},
        UpdateExpression="SET cw_missing_since = :since, cw_expires_at = :past",
        ExpressionAttributeValues={":since": {"S": "2026-11-22T11:00:00Z"}, ":past": {"N": "1"}},
    )
    (listed,) = get(http, "/tasks", cluster=TEST_CLUSTER, status="RUNNING").json_body["items"]
    got = http.get(f"/tasks/{quote(event['detail']['taskArn'], safe='')}").json_body
    assert listed == got and got["cw_missing_since"] == "2026-11-22T11:00:00Z" and got["cw_expires_at"] == 1


def test_a_page_dynamodb_would_not_read_whole_answers_503_not_a_short_page(recorded, monkeypatch):
    client = runtime.current().dynamodb()

    def shedding(RequestItems):
        return {"Responses": {}, "UnprocessedKeys": RequestItems}  # DynamoDB under load reads nothing

    monkeypatch.setattr(client, "batch_get_item", shedding)
    response = get(recorded, "/tasks", cluster=WEB_PROD)
    assert response.status_code == 503 and "unread" in message(response)
