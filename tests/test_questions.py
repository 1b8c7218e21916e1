"""The questions people keep ecs-state for, asked of the read routes on DynamoDB Local and checked
against the truth of the events recorded: by service, by time, by stop code, by cluster name."""
import time
from urllib.parse import urlencode

import pytest

from chalicelib import runtime
from chalicelib.api import reads
from chalicelib.model.clock import parse_moment
from chalicelib.tables import PHASE_INDEX, TASKS
from tests.apps import client_for, load_app
from tests.helpers import ACCOUNT, container_instance_event, count_requests, iso, record, task_event

MINUTE, HOUR, DAY = 60, 3600, 86_400
OOM = "OutOfMemoryError: Container killed due to memory usage"


def cluster_arn(name, account=ACCOUNT):
    return f"arn:aws:ecs:us-east-1:{account}:cluster/{name}"


def task(cluster, number, group, status, stopped_ago=None, stop_code="EssentialContainerExited", oom=False,
         version=3, account=ACCOUNT):
    """A task's event at ``version``: running, or stopped ``stopped_ago`` seconds before now."""
    arn = f"arn:aws:ecs:us-east-1:{account}:task/{cluster}/{number:032x}"
    detail = {"taskArn": arn, "clusterArn": cluster_arn(cluster, account), "group": group, "lastStatus": status,
              "containers": [{"name": "app", "lastStatus": status}]}
    if status == "STOPPED":
        detail.update(desiredStatus="STOPPED", stopCode=stop_code, stoppedReason=f"stopped: {stop_code}",
                      stoppedAt=iso(time.time() - stopped_ago),
                      containers=[{"name": "app", "lastStatus": "STOPPED", "exitCode": 137 if oom else 1,
                                   **({"reason": OOM} if oom else {})},
                                  {"name": "sidecar", "lastStatus": "STOPPED", "exitCode": 0}])
    return task_event(version + (5 if status == "STOPPED" else 0), **detail)


def workload():
    """Two clusters; in prod-a the services web, worker and batch and standalone family:cron tasks,
    running and stopped from minutes to days ago, some killed for memory."""
    events, number = [], 0
    plan = [
        ("prod-a", "service:web", "RUNNING", None, 4), ("prod-a", "service:web", "PENDING", None, 2),
        ("prod-a", "service:web", "STOPPED", 20 * MINUTE, 2), ("prod-a", "service:web", "STOPPED", 3 * DAY, 3),
        ("prod-a", "service:worker", "RUNNING", None, 3),
        ("prod-a", "service:worker", "STOPPED", 5 * MINUTE, 2), ("prod-a", "service:worker", "STOPPED", 50 * MINUTE, 3),
        ("prod-a", "service:worker", "STOPPED", 90 * MINUTE, 3), ("prod-a", "service:worker", "STOPPED", 2 * DAY, 4),
        ("prod-a", "service:batch", "STOPPED", 30 * MINUTE, 2), ("prod-a", "family:cron", "STOPPED", 40 * MINUTE, 3),
        ("prod-a", "family:cron", "RUNNING", None, 1),
        ("prod-b", "service:web", "RUNNING", None, 2), ("prod-b", "service:web", "STOPPED", 10 * MINUTE, 3),
    ]
    for cluster, group, status, ago, count in plan:
        for _ in range(count):
            number += 1
            oom = status == "STOPPED" and number % 3 == 0
            code = "TaskFailedToStart" if status == "STOPPED" and number % 5 == 0 else "EssentialContainerExited"
            # Each task's earlier state too, recorded after it: out of order, and refused as stale.
            events += [task(cluster, number, group, status, ago, code, oom),
                       task(cluster, number, group, "RUNNING", version=2)]
    return events


@pytest.fixture
def http(dynamodb_local):
    return client_for(load_app(events_route=False)).http


@pytest.fixture
def truth(http):
    events = workload()
    for event in events:
        record(event)
    latest = {}
    for event in events:
        detail = event["detail"]
        if detail["taskArn"] not in latest or latest[detail["taskArn"]]["version"] < detail["version"]:
            latest[detail["taskArn"]] = detail
    return list(latest.values())


def get(http, path, **params):
    response = http.get(f"{path}?{urlencode(params)}" if params else path)
    assert response.status_code == 200, response.body
    return response.json_body


def every_page(http, path, **params):
    items, token = [], None
    while True:
        body = get(http, path, **params, **({"next": token} if token else {}))
        items += body["items"]
        token = body["next"]
        if token is None:
            return items


def stopped_at(item):
    return parse_moment(item["stoppedAt"], 0)


def keys(items):
    return sorted(item["taskArn"] for item in items)


def test_running_tasks_of_a_service_in_a_cluster_named_by_name(http, truth):
    expected = [t for t in truth if t["clusterArn"] == cluster_arn("prod-a") and t["group"] == "service:web"
                and t["lastStatus"] == "RUNNING"]
    assert expected
    items = get(http, "/tasks", cluster="prod-a", service="web", status="running")["items"]
    assert keys(items) == keys(expected)
    get(http, "/tasks", cluster=cluster_arn("prod-a"), service="web")  # the previous index's probe, once
    requests = count_requests(runtime.current().dynamodb())
    assert keys(get(http, "/tasks", cluster=cluster_arn("prod-a"), service="web", status="RUNNING")["items"]) == \
        keys(expected)
    assert sum(requests.values()) <= 3 and requests == {"Query": 1, "BatchGetItem": 1}


def test_a_services_tasks_stopped_in_the_last_hour_newest_first_with_their_reasons(http, truth):
    now = time.time()
    expected = [t for t in truth if t["clusterArn"] == cluster_arn("prod-a") and t["group"] == "service:worker"
                and t["lastStatus"] == "STOPPED" and stopped_at(t) >= now - HOUR]
    assert len(expected) == 5
    get(http, "/tasks", cluster=cluster_arn("prod-a"), service="worker")  # the previous index's probe, once
    requests = count_requests(runtime.current().dynamodb())
    items = get(http, "/tasks", cluster=cluster_arn("prod-a"), service="worker", since="1h",
                fields="stoppedAt,stoppedReason,containers")["items"]
    assert requests == {"Query": 1, "BatchGetItem": 1}
    assert keys(items) == keys(expected)
    assert [stopped_at(item) for item in items] == sorted((stopped_at(item) for item in items), reverse=True)
    assert all(set(item) == {"taskArn", "stoppedAt", "stoppedReason", "containers"} for item in items)
    assert all(container["exitCode"] in (0, 1, 137) for item in items for container in item["containers"])


def test_a_finished_listing_pages_newest_first_and_a_window_includes_its_ends(http, truth):
    finished = sorted((t for t in truth if t["clusterArn"] == cluster_arn("prod-a") and t["lastStatus"] == "STOPPED"),
                      key=stopped_at, reverse=True)
    items = every_page(http, "/tasks", cluster=cluster_arn("prod-a"), status="STOPPED", limit=2)
    assert [stopped_at(item) for item in items] == [stopped_at(t) for t in finished]  # (ties in any order)
    assert keys(items) == keys(finished)
    newest, oldest = finished[0], finished[-1]
    window = get(http, "/tasks", cluster=cluster_arn("prod-a"), since=newest["stoppedAt"],
                 until=newest["stoppedAt"])["items"]
    assert newest["taskArn"] in keys(window) and all(stopped_at(item) == stopped_at(newest) for item in window)
    older = every_page(http, "/tasks", cluster=cluster_arn("prod-a"), until=oldest["stoppedAt"])
    assert keys(older) == keys(t for t in finished if stopped_at(t) == stopped_at(oldest))


def test_memory_kills_today_across_clusters(http, truth):
    since = time.time() - 6 * HOUR  # "today", without depending on the hour the test runs
    expected = [t for t in truth if t["lastStatus"] == "STOPPED" and stopped_at(t) >= since
                and any(c.get("reason") == OOM for c in t["containers"])]
    assert {t["clusterArn"] for t in expected} == {cluster_arn("prod-a"), cluster_arn("prod-b")}
    clusters = get(http, "/clusters")
    assert clusters == {"clusters": [{"clusterArn": cluster_arn(name), "clusterName": name}
                                     for name in ("prod-a", "prod-b")], "next": None}
    killed = []
    for cluster in clusters["clusters"]:
        items = every_page(http, "/tasks", cluster=cluster["clusterArn"], since=iso(since), fields="containers")
        killed += [item for item in items if any(c.get("reason") == OOM for c in item["containers"])]
    assert keys(killed) == keys(expected)


def test_one_task_by_its_id_and_its_clusters_name(http, truth):
    wanted = truth[0]
    ident = wanted["taskArn"].rsplit("/", 1)[1]
    assert get(http, f"/tasks/{ident}", cluster="prod-a")["taskArn"] == wanted["taskArn"]
    answer = get(http, f"/tasks/{ident}", cluster="prod-a", fields="lastStatus")
    assert answer == {"taskArn": wanted["taskArn"], "lastStatus": wanted["lastStatus"]}


def test_a_name_is_taken_in_the_stages_own_account_and_region(dynamodb_local, truth):
    api = runtime.current().read_api()
    elsewhere = "arn:aws:ecs:eu-west-1:999999999999"
    page = api.list_items(TASKS, {"cluster": "prod-a"}, home=elsewhere)
    assert page == {"items": [], "next": None}  # that account's prod-a has none recorded
    page = api.list_items(TASKS, {"cluster": "prod-a", "limit": "100"}, home=f"arn:aws:ecs:us-east-1:{ACCOUNT}")
    assert keys(page["items"]) == keys(t for t in truth if t["clusterArn"] == cluster_arn("prod-a"))


def test_a_name_two_recorded_clusters_share_is_refused_naming_both(http, truth):
    record(task("prod-a", 999, "service:web", "RUNNING", account="999999999999"))
    response = http.get("/tasks?cluster=prod-a")
    assert response.status_code == 400
    assert cluster_arn("prod-a") in response.json_body["Message"]
    assert cluster_arn("prod-a", "999999999999") in response.json_body["Message"]
    assert http.get("/tasks?cluster=prod-z").status_code == 404


def test_stop_code_and_group_filters(http, truth):
    expected = [t for t in truth if t["clusterArn"] == cluster_arn("prod-a") and t["lastStatus"] == "STOPPED"
                and t["stopCode"] == "TaskFailedToStart"]
    assert expected
    assert keys(every_page(http, "/tasks", cluster=cluster_arn("prod-a"), stopCode="TaskFailedToStart")) == \
        keys(expected)
    cron = [t for t in truth if t["group"] == "family:cron"]
    assert keys(every_page(http, "/tasks", cluster=cluster_arn("prod-a"), group="family:cron")) == keys(cron)


def test_a_rare_group_is_found_through_many_index_pages(http, truth, monkeypatch):
    monkeypatch.setattr(reads, "FILTERED_PAGE_ENTRIES", 2)
    monkeypatch.setattr(reads, "MAX_INDEX_PAGES", 2)
    expected = [t for t in truth if t["group"] == "service:batch"]
    items, pages, token = [], 0, None
    while True:
        body = get(http, "/tasks", cluster=cluster_arn("prod-a"), group="service:batch",
                   **({"next": token} if token else {}))
        items, pages, token = items + body["items"], pages + 1, body["next"]
        if token is None:
            break
    assert keys(items) == keys(expected) and pages > 2  # pages with nothing found yet say where to go on


def test_clusters_page_and_cost_a_query_per_cluster_not_per_item(http, truth):
    pages, token, names = 0, None, []
    while True:
        body = get(http, "/clusters", limit=1, **({"next": token} if token else {}))
        names += [cluster["clusterName"] for cluster in body["clusters"]]
        pages, token = pages + 1, body["next"]
        if token is None:
            break
    assert names == ["prod-a", "prod-b"]
    requests = count_requests(runtime.current().dynamodb())
    get(http, "/clusters")
    # Tasks: one per cluster and one finding no more; container instances (none): one finding none.
    assert requests == {"Query": (2 + 1) + 1}


@pytest.mark.parametrize("params, named", [
    ({"since": "yesterday"}, "since: must be an ISO-8601 time"),
    ({"since": "2026-11-05T07:58:44"}, "since: must be an ISO-8601 time"),  # no zone
    ({"since": "1h", "until": "2h"}, "since: is later than until"),
    ({"status": "RUNNING", "since": "1h"}, "since: selects STOPPED tasks; status=RUNNING has none"),
    ({"status": "PENDING", "stopCode": "UserInitiated"}, "stopCode: selects STOPPED"),
    ({"stopCode": "Essential Container"}, "stopCode: must be an ECS stop code"),
    ({"service": "web", "group": "service:web"}, "service: is short for group=service:NAME"),
    ({"service": "a:b"}, "service: must be an ECS service name"),
    ({"group": "a\x1fb"}, "group: must be an ECS task group"),
    ({"fields": "taskArn,,lastStatus"}, "fields: must be up to 40"),
    ({"fields": ",".join(f"f{n}" for n in range(41))}, "fields: must be up to 40"),
])
def test_bad_filters_get_400_naming_them_and_no_request(http, params, named):
    requests = count_requests(runtime.current().dynamodb())
    response = http.get("/tasks?" + urlencode({"cluster": cluster_arn("prod-a"), **params}))
    assert response.status_code == 400
    assert response.json_body["Message"].startswith(named)
    assert requests == {}


def test_container_instances_take_no_task_filters(http):
    response = http.get("/container-instances?" + urlencode({"cluster": cluster_arn("prod-a"), "service": "web"}))
    assert response.status_code == 400 and response.json_body["Message"].startswith("service: is not a parameter")


def test_relative_and_calendar_times():
    now = 1_000_000_000.0 + 5 * HOUR  # 2001-09-09T06:46:40Z
    assert parse_moment("30m", now) == now - 30 * MINUTE
    assert parse_moment("2d", now) == now - 2 * DAY
    assert parse_moment("today", now) == now - now % DAY
    assert parse_moment("2001-09-09", now) == now - now % DAY
    assert parse_moment("2001-09-09T01:46:40Z", now) == now - 5 * HOUR
    assert parse_moment("2001-09-09T03:46:40+02:00", now) == now - 5 * HOUR
    assert parse_moment("1y", now) is None and parse_moment("-1h", now) is None


def test_while_a_stage_moves_listings_answer_from_the_previous_index(dynamodb_local, configure, truth):
    """A stage upgraded from the previous ecs-state keeps its index (clusterArn, cw_phase) until its
    items are backfilled: the listings answer from it, their filters applied to the items read."""
    client = runtime.current().dynamodb()
    moving = runtime.current().config.table_name(TASKS) + "-moving"
    request = TASKS.create_table_request(moving, read_index=False)
    request["AttributeDefinitions"] += [{"AttributeName": n, "AttributeType": "S"} for n in PHASE_INDEX.key_attributes]
    client.create_table(**request, GlobalSecondaryIndexes=[PHASE_INDEX.definition()])
    configure(task_table=moving)
    for event in workload():
        record(event)
    api = runtime.current().read_api()
    indexes = []
    client.meta.events.register("provide-client-params.dynamodb.Query",
                                lambda params, **kwargs: indexes.append(params["IndexName"]))
    page = api.list_items(TASKS, {"cluster": cluster_arn("prod-a"), "service": "worker", "since": "1h"})
    assert indexes == [PHASE_INDEX.name]
    assert keys(page["items"]) == keys(t for t in truth if t["clusterArn"] == cluster_arn("prod-a")
                                       and t["group"] == "service:worker" and t["lastStatus"] == "STOPPED"
                                       and stopped_at(t) >= time.time() - HOUR)


# -- what a careful user tried --------------------------------------------------------


@pytest.mark.parametrize("params", [{"since": "999999w"}, {"until": "9999-12-31T23:59:59-01:00"},
                                    {"since": "0999-01-01"}, {"since": "0001-01-01T00:00:00Z"}])
def test_times_beyond_the_calendar_are_taken_as_its_ends(http, truth, params):
    finished = [t for t in truth if t["clusterArn"] == cluster_arn("prod-a") and t["lastStatus"] == "STOPPED"]
    assert keys(every_page(http, "/tasks", cluster=cluster_arn("prod-a"), **params)) == keys(finished)


def test_a_token_continues_only_the_listing_of_its_filters(http, truth):
    body = get(http, "/tasks", cluster=cluster_arn("prod-a"), service="web", status="STOPPED", limit=1)
    assert body["next"]
    for other in ({"service": "worker", "status": "STOPPED"}, {"service": "web", "stopCode": "TaskFailedToStart"},
                  {"service": "web"}):
        response = http.get("/tasks?" + urlencode({"cluster": cluster_arn("prod-a"), "limit": 1, **other,
                                                   "next": body["next"]}))
        assert response.status_code == 400, other
        assert response.json_body["Message"].startswith("next: is not a token from this listing")


def test_a_relative_since_that_moved_past_the_last_page_ends_the_listing(http, truth, configure):
    start = time.time()
    configure(now=lambda: start)
    body = get(http, "/tasks", cluster=cluster_arn("prod-a"), since="1h", limit=4)
    assert body["next"]
    configure(now=lambda: start + 2 * HOUR)  # every task on the next pages stopped before 1h ago now
    assert get(http, "/tasks", cluster=cluster_arn("prod-a"), since="1h", limit=4, next=body["next"]) == \
        {"items": [], "next": None}


def test_a_cluster_too_long_to_be_listed_is_refused_before_any_request(http):
    requests = count_requests(runtime.current().dynamodb())
    response = http.get("/tasks?" + urlencode({"cluster": "arn:aws:ecs:us-east-1:1:cluster/" + "c" * 1000}))
    assert response.status_code == 400 and response.json_body["Message"].startswith("cluster: is too long")
    assert requests == {}


def test_only_clusters_that_can_be_listed_are_listed(http, truth):
    record(task("odd", 900, "service:web", "RUNNING"))
    event = task("odd", 901, "service:web", "RUNNING")
    event["detail"]["clusterArn"] = "not an arn"
    record(event)
    names = [cluster["clusterName"] for cluster in get(http, "/clusters")["clusters"]]
    assert names == ["odd", "prod-a", "prod-b"]


def test_a_cluster_name_is_found_in_either_table(http, truth):
    record(container_instance_event(1, clusterArn=cluster_arn("instances-only")))
    assert get(http, "/tasks", cluster="instances-only") == {"items": [], "next": None}
    assert len(get(http, "/container-instances", cluster="instances-only")["items"]) == 1


def test_listings_answer_on_moto_as_on_dynamodb_local(dynamodb):
    """moto (make run, make local's embedded DynamoDB) refuses a query of a missing index otherwise
    than DynamoDB: as a missing resource. Neither may pass for a missing table."""
    record(task("prod-a", 1, "service:web", "RUNNING"))
    page = runtime.current().read_api().list_items(TASKS, {"cluster": cluster_arn("prod-a")})
    assert [item["group"] for item in page["items"]] == ["service:web"]
