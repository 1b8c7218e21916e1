"""`make bench`'s questions section: what issue 15's questions cost through the read API.

The workload (bench/history.py: 3 clusters, 300 task lifecycles with
duplicates and swapped versions, then 3,000 tasks finished over 13 days) is
recorded through ecs-state's own recorder (the process's Runtime, read index
on, high-water marks on) into fresh tables of DynamoDB Local, so the items are
those production writes. Then each question is asked of the real read API
(``Runtime.read_api()``: what GET /tasks, /tasks/{id} and /clusters and
`make query` call), paging through ``next`` to the end, 100 items a page.
The read API's clock is pinned at a minute before today's UTC midnight, and
the workload's times are relative to that moment (bench/history.py,
``question_time``), so "today" is a whole day whatever the hour of the run.

(a) running tasks of service web: ``service=web&status=RUNNING``;
(b) worker tasks stopped in the last hour, with stop reason and exit codes:
    ``service=worker&since=1h&fields=stoppedAt,stopCode,stoppedReason,containers``;
(c) OOM kills today, across clusters: GET /clusters, then per cluster
    ``since=today&fields=containers,stopCode``, counting the tasks a container of
    which has an OutOfMemory reason or exit code 137;
(d) one task by its ID, the cluster by name (the stage's account and region);
(e) every stopped task of the busy cluster: ``status=STOPPED`` (the baseline).

Every request is counted by bench/capacity.py's capture, which asks DynamoDB
for ReturnConsumedCapacity=INDEXES (table and indexes; BatchGetItem's per
table list summed): requests, read units as DynamoDB Local reports them and as
DynamoDB bills them (the model's figure where it has one, bench/capacity.py),
and the bytes of DynamoDB's responses; also the bytes of the answers (the
JSON the routes return). Each answer is checked against bench/history.py's
ground truth: a wrong one fails the run.

A new Lambda container's first listing also asks for the previous read index
(chalicelib/store/state_store.py, phase_index_pages), which a table that has
moved to the new one answers with an error: that request is measured apart
(``cold_probe``), once, before the questions.
"""
import json
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple

from bench import history as histories
from bench.capacity import Capture, Request, index_keys
from bench.cost import print_rows, stored_versions
from bench.writers import EXPECTED_LABELS, OURS, settings_restored, use_tables
from chalicelib import runtime
from chalicelib.tables import ALL, TASKS

PAGE = "100"  # items a page: the most a listing gives
STOPPED_FIELDS = "stoppedAt,stopCode,stoppedReason,containers"
OOM_FIELDS = "containers,stopCode"
TARGETS = {
    "service_running_requests_max": 3,
    "stopped_last_hour_requests_max": 3,
    "stopped_last_hour_share_of_all_stopped_max": 0.10,
}
QUESTIONS = {
    "service_running": "(a) running tasks of service web",
    "stopped_last_hour": "(b) worker tasks stopped in the last hour, with reason and exit codes",
    "oom_today": "(c) OOM kills today, across clusters",
    "one_task": "(d) one task by ID, cluster by name",
    "all_stopped": "(e) every stopped task of the busy cluster",
}


def measure(capture: Capture, admin: Any, lifecycles: int, finished: int, days: float, swap_rate: float,
            repeat_rate: float, seed: int, log: TextIO) -> Dict[str, Any]:
    with settings_restored():
        return _measure(capture, admin, lifecycles, finished, days, swap_rate, repeat_rate, seed, log)


def _measure(capture: Capture, admin: Any, lifecycles: int, finished: int, days: float, swap_rate: float,
             repeat_rate: float, seed: int, log: TextIO) -> Dict[str, Any]:
    from tools.local_dynamodb import create_tables

    asked_at = histories.question_time(time.time())
    work = histories.build(asked_at, lifecycles, finished, days, swap_rate, repeat_rate, seed)
    names = {spec: f"questions-{spec.kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}" for spec in ALL}
    create_tables(admin, names, read_index=True)
    for spec, name in names.items():
        capture.know_table(name, spec.key, [index_keys(spec.read_index)])
    try:
        use_tables(names, marks=True, read_index=True)
        process = runtime.current()
        capture.attach(process.dynamodb())
        recorded = record(process, work, capture)
        stored = stored_versions(admin, names[TASKS], TASKS.key)
        recorded["wrong_final_items"] = sum(stored.get(key) != version for key, version in work.latest.items())
        print(f"  recorded {len(work.deliveries)} deliveries ({lifecycles} lifecycles, then {finished} finished tasks "
              f"over {days:g} days) in {recorded['seconds']:.1f} s", file=log, flush=True)
        api = process.replace(now=lambda: asked_at).read_api()
        results = ask_all(api, capture, histories.truth(work, asked_at), asked_at)
    finally:
        for name in names.values():
            admin.delete_table(TableName=name)
    results["workload"] = {**work.parameters, "deliveries": len(work.deliveries), "tasks": len(work.final),
                           **recorded}
    for name, question in results["questions"].items():
        cost = question["cost"]
        print(f"  {QUESTIONS[name]}: {question['found']} found ({'right' if question['right'] else 'WRONG'}), "
              f"{cost['requests']} requests, {cost['read_units_reported']:.1f} read units", file=log, flush=True)
    return results


def record(process: Any, work: histories.History, capture: Capture) -> Dict[str, Any]:
    """Every delivery through the process's recorder, one after another; its answers checked, its writes' units."""
    labels = EXPECTED_LABELS[OURS]
    mark = capture.mark()
    started = time.perf_counter()
    wrong = sum(process.record(event)["outcome"] != labels[expected]
                for event, expected in zip(work.deliveries, work.expected_outcomes))
    seconds = time.perf_counter() - started
    requests = capture.since(mark)
    return {
        "seconds": seconds,
        "wrong_answers": wrong,
        "requests": len(requests),
        "write_units_table": sum(r.billed.write_table for r in requests),
        "write_units_index": sum(r.billed.write_index for r in requests),
        "write_units_index_reported": sum(r.reported.write_index for r in requests if r.reported is not None),
    }


# -- asking ------------------------------------------------------------------------------------


class Asked:
    """One question's requests (from the capture), answers (as the routes return them) and time."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.mark = capture.mark()
        self.started = time.perf_counter()
        self.answer_bytes = 0
        self.pages = 0

    def answered(self, answer: Any) -> Any:
        """Count an answer of the read API; raise on one that is not a 200."""
        body = getattr(answer, "body", None)
        if body is not None and getattr(answer, "status_code", 200) != 200:
            raise RuntimeError(f"the read API answered {answer.status_code}: {body}")
        self.pages += 1
        self.answer_bytes += len(json.dumps(answer, separators=(",", ":")))
        return answer

    def cost(self) -> Dict[str, Any]:
        return cost_of(self.capture.since(self.mark), time.perf_counter() - self.started, self.answer_bytes,
                       self.pages)


def cost_of(requests: List[Request], seconds: float, answer_bytes: int, pages: int) -> Dict[str, Any]:
    operations: Dict[str, int] = {}
    for request in requests:
        operations[request.operation] = operations.get(request.operation, 0) + 1
    return {
        "requests": len(requests),
        "operations": operations,
        "errors": sum(request.error is not None for request in requests),
        "read_units_reported": sum(r.reported.read for r in requests if r.reported is not None),
        "read_units_billed": sum(r.billed.read for r in requests),
        "response_bytes": sum(r.response_bytes for r in requests),
        "answer_bytes": answer_bytes,
        "api_calls": pages,
        "seconds": seconds,
    }


def listing(api: Any, asked: Asked, params: Mapping[str, str]) -> List[Dict[str, Any]]:
    """Every item of a listing, page after page (``next``)."""
    items: List[Dict[str, Any]] = []
    token: Optional[str] = None
    while True:
        page = asked.answered(api.list_items(TASKS, {**params, **({"next": token} if token else {})},
                                             histories.ACCOUNT_HOME))
        items += page["items"]
        token = page["next"]
        if token is None:
            return items


def ask_all(api: Any, capture: Capture, truth: Mapping[str, Any], asked_at: float) -> Dict[str, Any]:
    busy = histories.BUSY
    probe = Asked(capture)
    probe.answered(api.list_items(TASKS, {"cluster": "staging", "status": "RUNNING", "limit": "1"},
                                  histories.ACCOUNT_HOME))
    cold_probe = probe.cost()
    questions: Dict[str, Dict[str, Any]] = {}

    def question(name: str, ask: Callable[[Asked], Tuple[Any, bool]]) -> None:
        asked = Asked(capture)
        found, right = ask(asked)
        questions[name] = {"cost": asked.cost(), "found": found, "expected": _expected(truth[name]), "right": right}

    def service_running(asked: Asked) -> Tuple[Any, bool]:
        items = listing(api, asked, {"cluster": busy, "service": histories.SERVICE_QUESTION, "status": "RUNNING",
                                     "limit": PAGE})
        keys = sorted(item[TASKS.key] for item in items)
        return len(keys), keys == truth["service_running"]

    def stopped_last_hour(asked: Asked) -> Tuple[Any, bool]:
        items = listing(api, asked, {"cluster": busy, "service": histories.STOPPED_QUESTION, "since": "1h",
                                     "fields": STOPPED_FIELDS, "limit": PAGE})
        keys = sorted(item[TASKS.key] for item in items)
        allowed = {TASKS.key, *STOPPED_FIELDS.split(",")}
        shaped = all(set(item) <= allowed and "stoppedReason" in item and
                     all("exitCode" in container for container in item["containers"]) for item in items)
        return len(keys), keys == truth["stopped_last_hour"] and shaped

    def oom_today(asked: Asked) -> Tuple[Any, bool]:
        clusters: List[str] = []
        token: Optional[str] = None
        while True:
            page = asked.answered(api.list_clusters({"next": token} if token else {}))
            clusters += [cluster["clusterArn"] for cluster in page["clusters"]]
            token = page["next"]
            if token is None:
                break
        found = {}
        for cluster in clusters:
            items = listing(api, asked, {"cluster": cluster, "since": "today", "fields": OOM_FIELDS, "limit": PAGE})
            found[cluster] = sorted(item[TASKS.key] for item in items if histories.is_oom(item))
        return sum(len(keys) for keys in found.values()), sorted(clusters) == truth["clusters"] and all(
            found.get(cluster, []) == keys for cluster, keys in truth["oom_today"].items())

    def one_task(asked: Asked) -> Tuple[Any, bool]:
        wanted = truth["one_task"]
        if wanted is None:
            return 0, True
        item = asked.answered(api.get_item(TASKS, wanted["taskArn"].rsplit("/", 1)[-1], {"cluster": busy},
                                           histories.ACCOUNT_HOME))
        return 1, item.get(TASKS.key) == wanted["taskArn"] and item.get("version") == wanted["version"]

    def all_stopped(asked: Asked) -> Tuple[Any, bool]:
        items = listing(api, asked, {"cluster": busy, "status": "STOPPED", "limit": PAGE})
        keys = sorted(item[TASKS.key] for item in items)
        return len(keys), keys == truth["all_stopped"]

    for name, ask in (("service_running", service_running), ("stopped_last_hour", stopped_last_hour),
                      ("oom_today", oom_today), ("one_task", one_task), ("all_stopped", all_stopped)):
        question(name, ask)
    return {"asked_at": asked_at, "cold_probe": cold_probe, "questions": questions,
            "targets": targets(questions)}


def _expected(answer: Any) -> int:
    if answer is None:
        return 0
    if isinstance(answer, dict) and "taskArn" in answer:
        return 1
    if isinstance(answer, dict):
        return sum(len(keys) for keys in answer.values())
    return len(answer)


def targets(questions: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    running = questions["service_running"]["cost"]
    stopped = questions["stopped_last_hour"]["cost"]
    baseline = questions["all_stopped"]["cost"]
    share = stopped["read_units_reported"] / baseline["read_units_reported"] if baseline["read_units_reported"] else 0.0
    return {
        "(a) running tasks of service web: <= 3 requests": {
            "value": running["requests"], "pass": running["requests"] <= TARGETS["service_running_requests_max"]},
        "(b) worker tasks stopped in the last hour: <= 3 requests": {
            "value": stopped["requests"], "pass": stopped["requests"] <= TARGETS["stopped_last_hour_requests_max"]},
        "(b) read units <= 10% of (e)'s, every stopped task": {
            "value": share, "pass": share <= TARGETS["stopped_last_hour_share_of_all_stopped_max"]},
    }


def checks(results: Mapping[str, Any]) -> Dict[str, bool]:
    workload = results["workload"]
    found = {
        "questions: recorded right, every answer = the ground truth": workload["wrong_answers"] == 0
        and workload["wrong_final_items"] == 0 and all(q["right"] for q in results["questions"].values()),
    }
    found.update({name: target["pass"] for name, target in results["targets"].items()})
    return found


# -- printing ------------------------------------------------------------------------------------


def print_section(results: Mapping[str, Any], out: TextIO) -> None:
    workload = results["workload"]
    print("", file=out)
    print(f"questions (read API, read index on): {workload['tasks']} tasks in 3 clusters, {workload['deliveries']} "
          f"deliveries recorded by ecs-state's recorder ({workload['lifecycles']} lifecycles, {workload['swapped_pairs']} "
          f"swapped pairs, {workload['repeated_versions']} versions repeated; then {workload['finished']} tasks finished "
          f"over {workload['days']:g} days); asked at 23:59 UTC, the workload's times relative to then", file=out)
    header = ["question", "found", "expected", "API calls", "requests", "read units", "billed", "DynamoDB bytes",
              "answer bytes", "s"]
    rows = []
    for name, question in results["questions"].items():
        cost = question["cost"]
        rows.append([QUESTIONS[name], str(question["found"]), str(question["expected"]), str(cost["api_calls"]),
                     str(cost["requests"]), f"{cost['read_units_reported']:.1f}", f"{cost['read_units_billed']:.1f}",
                     f"{cost['response_bytes']:,}", f"{cost['answer_bytes']:,}", f"{cost['seconds']:.2f}"])
    print_rows(header, rows, out)
    for name, question in results["questions"].items():
        operations = ", ".join(f"{operation} {count}" for operation, count in sorted(question["cost"]["operations"].items()))
        print(f"  {name}: {operations}", file=out)
    probe = results["cold_probe"]
    print(f"  a new container's first listing also asks for the previous index: {probe['errors']} request answered "
          f"with an error, once per container (not in the figures above)", file=out)
    print(f"  recording: {workload['requests']} requests, {workload['write_units_table']:.0f} table and "
          f"{workload['write_units_index']:.0f} index write units (index reported: "
          f"{workload['write_units_index_reported']:.0f})", file=out)
    print("  read units: as DynamoDB Local reports them; billed: as DynamoDB bills them (an empty query, or a "
          "BatchGetItem key not found, costs 0.5 there; DynamoDB Local reports 0)", file=out)
