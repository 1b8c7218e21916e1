"""`make bench`'s reconcile section: what a reconciler pass costs on a simulated account.

The account lives in the fake ECS API (tests/fake_ecs.py) on loopback: by
default 10,000 tasks in 20 clusters (19 in 20 RUNNING, 1 in 20 recently
STOPPED, half Fargate, half EC2) and 5 container instances per cluster. The
tables are on DynamoDB Local with the read index, as deployed. Three passes,
each `chalicelib.runtime.Runtime.reconcile` as the scheduled function runs it, at
the stage's default pace (10 ECS calls a second):

1. into empty tables (a new deployment's backfill);
2. nothing changed: it must write nothing (the run fails otherwise);
3. after a few changes: tasks stopped with their events delivered (recorded
   by the handler first, as EventBridge would), tasks stopped with their
   events lost (the pass heals them), and tasks stopped with their STOPPED
   event lost and then forgotten by ECS (ghosts: the pass marks them).

DynamoDB requests and capacity come from the same capture as the capacity
section (bench/capacity.py); ECS calls from the pass's own count. The time
spent waiting for the pace is measured around ``chalicelib.reconcile.ecs.Pace.wait``.
"""
import os
import random
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, TextIO

from bench.capacity import PRICES, Capture, Units, agreement, explained, index_keys, total
from bench.cost import agreement_line
from bench.writers import restored_environment, settings_restored
from chalicelib import config as settings
from chalicelib import runtime
from chalicelib.runtime import Runtime
from chalicelib.tables import ALL

STOPPED_SHARE = 20  # one task in 20 is recently STOPPED


@contextmanager
def pacing_clock() -> Iterator[List[float]]:
    """Seconds spent in Pace.wait (the reconciler's own pacing) while the block runs."""
    from chalicelib.reconcile import ecs

    original = ecs.Pace.wait
    spent = [0.0]

    def wait(self: Any) -> None:
        started = time.perf_counter()
        original(self)
        spent[0] += time.perf_counter() - started

    ecs.Pace.wait = wait  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        ecs.Pace.wait = original  # type: ignore[method-assign]


def build_account(fake: Any, tasks: int, clusters: int, instances_per_cluster: int) -> Dict[str, List[str]]:
    names = [f"bench-{number:02d}" for number in range(clusters)]
    instances = []
    for name in names:
        fake.add_cluster(name)
        instances += [fake.add_container_instance(name) for _ in range(instances_per_cluster)]
    running, stopped = [], []
    for number in range(tasks):
        cluster = names[number % clusters]
        launch_type = "EC2" if (number // clusters) % 2 else "FARGATE"
        if instances_per_cluster == 0:
            launch_type = "FARGATE"
        status = "STOPPED" if number % STOPPED_SHARE == STOPPED_SHARE - 1 else "RUNNING"
        arn = fake.add_task(cluster, launch_type=launch_type, last_status=status)
        (stopped if status == "STOPPED" else running).append(arn)
    return {"running": running, "stopped": stopped, "instances": instances}


def scheduled_event() -> Dict[str, Any]:
    now = time.gmtime()
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "111122223333", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", now), "region": "us-east-1",
        "resources": [], "detail": {},
    }


def one_pass(capture: Capture, fake: Any, rate: float) -> Dict[str, Any]:

    mark = capture.mark()
    fake.reset_calls()
    with pacing_clock() as paced:
        started = time.perf_counter()
        summary = runtime.current().reconcile(scheduled_event(), None, budget_seconds=None)
        wall = time.perf_counter() - started
    requests = capture.since(mark)
    billed = total(request.billed for request in requests)
    calls = sum(summary["ecs_calls"].values())
    return {
        "summary": summary,
        "wall_seconds": wall,
        "pacing_seconds": paced[0],
        "pace_floor_seconds": calls / rate,  # the least the pace allows for this many calls
        "ecs_calls": summary["ecs_calls"],
        "ecs_calls_total": calls,
        "ecs_requests_served": dict(fake.calls),  # retries included
        "dynamodb_requests": dict(sorted(Counter(request.operation for request in requests).items())),
        "dynamodb_requests_total": len(requests),
        "dynamodb_seconds": sum(request.seconds for request in requests),
        "capacity": billed._asdict(),
        "reported": total(request.reported for request in requests if request.reported is not None)._asdict(),
        "dollars": billed.dollars,
        "agreement": agreement(requests),
        "writes": summary["written"]["created"] + summary["written"]["updated"],
    }


def measure(capture: Capture, admin: Any, tasks: int, clusters: int, instances_per_cluster: int, changes: int,
            lost: int, ghosts: int, rate: float, seed: int, log: TextIO) -> Dict[str, Any]:
    from chalice.local import LambdaContext

    from app import app
    from tests.fake_ecs import FakeECS
    from tools.local_dynamodb import create_tables

    names = {spec: f"reconcile-{spec.kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}" for spec in ALL}
    rng = random.Random(seed)
    with FakeECS() as fake, restored_environment("AWS_ENDPOINT_URL_ECS"), settings_restored():
        os.environ["AWS_ENDPOINT_URL_ECS"] = fake.endpoint  # boto3's: a new Runtime's ECS client goes there
        process = runtime.current()
        runtime.use(Runtime(process.config.with_tables(names)._replace(
            ecs_calls_per_second=rate, read_index=True, high_water_entries=settings.DEFAULT_HIGH_WATER_ENTRIES),
            process.now, process.monotonic))
        for spec, name in names.items():
            capture.know_table(name, spec.key, [index_keys(spec.read_index)])
        create_tables(admin, names, read_index=True)
        capture.attach(runtime.current().dynamodb())
        started = time.perf_counter()
        account = build_account(fake, tasks, clusters, instances_per_cluster)
        print(f"  account built in the fake ECS: {tasks} tasks ({len(account['stopped'])} STOPPED), "
              f"{len(account['instances'])} container instances, {clusters} clusters, "
              f"{time.perf_counter() - started:.1f} s", file=log, flush=True)
        passes = []
        for number, label in ((1, "into empty tables"), (2, "unchanged")):
            passes.append({"pass": number, "label": label, **one_pass(capture, fake, rate)})
            _log_pass(passes[-1], log)
        handler = app.handler_map["task_state_change"]
        running = rng.sample(account["running"], changes + lost + ghosts)
        delivered_mark = capture.mark()
        for arn in running[:changes]:  # stopped, and EventBridge delivered the event
            fake.transition_task(arn, "STOPPED")
            handler(fake.event_for_task(arn), LambdaContext("ecs-state-bench", 256))
        delivered = capture.since(delivered_mark)
        for arn in running[changes:changes + lost]:  # stopped; the event was lost
            fake.transition_task(arn, "STOPPED")
        for arn in running[changes + lost:]:  # stopped, the event lost, and ECS forgot the task
            fake.transition_task(arn, "STOPPED")
            fake.forget_task(arn)
        passes.append({"pass": 3, "label": "after changes", **one_pass(capture, fake, rate)})
        _log_pass(passes[-1], log)
        for name in names.values():
            admin.delete_table(TableName=name)
    return {
        "account": {"tasks": tasks, "stopped_tasks": len(account["stopped"]), "clusters": clusters,
                    "container_instances": len(account["instances"]), "calls_per_second": rate},
        "changes": {"stopped_with_event": changes, "stopped_event_lost": lost, "forgotten_after_lost_stop": ghosts,
                    "their_events": {"requests": len(delivered),
                                     "capacity": total(request.billed for request in delivered)._asdict()}},
        "passes": passes,
    }


def _log_pass(result: Mapping[str, Any], log: TextIO) -> None:
    summary = result["summary"]
    print(f"  pass {result['pass']} ({result['label']}): {result['wall_seconds']:.1f} s, {result['ecs_calls_total']} ECS calls, "
          f"{result['dynamodb_requests_total']} DynamoDB requests, written {summary['written']}, "
          f"missing {summary['missing']}", file=log, flush=True)


def checks(results: Mapping[str, Any]) -> Dict[str, bool]:
    first, second, third = results["passes"]
    changes = results["changes"]
    return {
        "reconcile: every pass complete, no errors": all(p["summary"]["complete"] and not p["summary"]["errors"]
                                                         for p in results["passes"]),
        "reconcile: first pass writes every task and instance": first["summary"]["written"]["created"]
        == results["account"]["tasks"] + results["account"]["container_instances"],
        "reconcile: second, unchanged pass writes 0": second["writes"] == 0,
        "reconcile: capacity model = DynamoDB Local's report where both exist": all(
            explained(p["agreement"]) for p in results["passes"]),
        "reconcile: third pass heals the lost stops and marks the ghosts": (
            third["summary"]["written"] == {"created": 0, "updated": changes["stopped_event_lost"]}
            and third["summary"]["missing"] == changes["forgotten_after_lost_stop"]),
    }


def print_section(results: Mapping[str, Any], out: TextIO) -> None:
    account = results["account"]
    changes = results["changes"]
    print("", file=out)
    print(f"reconcile: {account['tasks']:,} tasks ({account['stopped_tasks']:,} recently STOPPED, the rest RUNNING) and "
          f"{account['container_instances']} container instances in {account['clusters']} clusters (fake ECS), "
          f"read index on, pace {account['calls_per_second']:g} ECS calls/s", file=out)
    print(f"  pass 3 after: {changes['stopped_with_event']} tasks stopped (event delivered and recorded first: "
          f"{changes['their_events']['requests']} requests, not counted below), {changes['stopped_event_lost']} stopped "
          f"with the event lost, {changes['forgotten_after_lost_stop']} stopped with the event lost and then forgotten "
          f"by ECS", file=out)
    header = ["pass", "wall s", "pacing s", "ECS calls", "DDB requests", "read units", "write units", "index units",
              "written", "unchanged", "missing", "$/pass"]
    rows = []
    for result in results["passes"]:
        summary, capacity = result["summary"], result["capacity"]
        rows.append([f"{result['pass']}: {result['label']}", f"{result['wall_seconds']:.1f}", f"{result['pacing_seconds']:.1f}",
                     f"{result['ecs_calls_total']}", f"{result['dynamodb_requests_total']}", f"{capacity['read']:,.1f}",
                     f"{capacity['write_table']:,.0f}", f"{capacity['write_index']:,.0f}",
                     f"{summary['written']['created'] + summary['written']['updated']}", f"{summary['unchanged']}",
                     f"{summary['missing']}", f"{Units(**capacity).dollars:.5f}"])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("  " + "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))), file=out)
    for result in results["passes"]:
        print(f"  pass {result['pass']}: ECS " + ", ".join(f"{op} {n}" for op, n in result["ecs_calls"].items())
              + "; DynamoDB " + ", ".join(f"{op} {n}" for op, n in result["dynamodb_requests"].items())
              + f"; pacing {result['pacing_seconds']:.1f} s of {result['wall_seconds']:.1f} s "
              f"(the pace alone: {result['pace_floor_seconds']:.1f} s), DynamoDB {result['dynamodb_seconds']:.1f} s", file=out)
    print("  capacity model against DynamoDB Local's report, all passes:", file=out)
    merged: Dict[str, Counter] = {}
    for result in results["passes"]:
        for operation, count in result["agreement"].items():
            merged.setdefault(operation, Counter()).update(count)
    for operation, count in sorted(merged.items()):
        print(agreement_line(operation, count), file=out)
    second = results["passes"][1]
    per_day = 24 * 60 / settings.DEFAULT_RECONCILE_MINUTES
    print(f"  an unchanged pass every {settings.DEFAULT_RECONCILE_MINUTES} minutes (the default schedule): "
          f"{second['capacity']['read'] * per_day * 30:,.0f} read units a month, "
          f"${Units(**second['capacity']).dollars * per_day * 30:.2f} a month (DynamoDB capacity only, "
          f"${PRICES['read_request_unit_per_million_usd']} per million read units)", file=out)
