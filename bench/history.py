"""The questions section's workload: what a busy account's tables hold, and what the right answers are.

As issue 15 describes it: three clusters; in the busy one, services web,
worker and batch and standalone ``family:cron`` tasks;

- ``lifecycles`` tasks (300) through their lifecycle, most of them to STOPPED
  in the last two hours, the rest still RUNNING (a few still PENDING),
  delivered with duplicates and swapped versions (bench/streams.py's order);
- then ``finished`` tasks (3,000) of the busy cluster that stopped over the
  last ``days`` days (13): what 14 days' retention holds for it. Only their
  STOPPED event is delivered: it creates the item every version replaces, the
  same item as after the whole lifecycle.

Every task is the eight-state lifecycle of bench/streams.py (a Fargate web
task with a log router, items of 2 to 3 KB) under its own ID, cluster and
group, with every time moved so the task stops (or is last seen) at a time
relative to ``now``: no date is fixed. Stop codes appear at DEACTIVATING, as
ECS sends them; exit codes and container reasons once the containers stop.
Some tasks are OOM-killed (exit code 137, OutOfMemoryError).

``truth`` answers each question from the events themselves, for the bench to
check the read API's answers against.
"""
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bench.streams import eight_state_lifecycle, mostly_in_order
from bench.workload import sequential_outcomes, task_versions
from chalicelib.model.clock import iso_time, parse_time
from chalicelib.tables import TASKS

Event = Dict[str, Any]

ACCOUNT_HOME = "arn:aws:ecs:us-east-1:111122223333"  # the stage's own partition, region and account
BUSY = "prod-a"
# Per cluster: its groups and how often each runs a task.
CLUSTERS: Dict[str, Dict[str, float]] = {
    BUSY: {"service:web": 0.35, "service:worker": 0.35, "service:batch": 0.15, "family:cron": 0.15},
    "prod-b": {"service:web": 0.5, "service:api": 0.5},
    "staging": {"service:web": 0.6, "family:cron": 0.4},
}
LIFECYCLE_CLUSTERS = {BUSY: 0.6, "prod-b": 0.2, "staging": 0.2}
OPEN_SHARE = 0.3  # of the lifecycles: still running (or pending) at the end
PENDING_SHARE = 0.1  # of those: still PENDING
RECENT_SECONDS = 2 * 3600  # the lifecycles stop (or are last seen) within this before now
SERVICE_QUESTION = "web"  # (a)
STOPPED_QUESTION = "worker"  # (b)
OOM_EXIT_CODE = 137
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
# How a task stops: stop code, stopped reason, the essential container's exit code and reason.
STOPS: Dict[str, Tuple[str, str, Optional[int], Optional[str]]] = {
    "scaled": ("ServiceSchedulerInitiated", "Scaling activity initiated by (deployment ecs-svc/1234567890123456789)",
               0, None),
    "exited": ("EssentialContainerExited", "Essential container in task exited", 1, None),
    "oom": ("EssentialContainerExited", "Essential container in task exited", OOM_EXIT_CODE, OOM_REASON),
    "user": ("UserInitiated", "Task stopped by user", 143, None),
    "done": ("EssentialContainerExited", "Essential container in task exited", 0, None),
}
# Per kind of group, how its tasks stop.
STOP_MIX = {
    "service": {"scaled": 0.55, "exited": 0.2, "oom": 0.15, "user": 0.1},
    "family": {"done": 0.75, "exited": 0.1, "oom": 0.15},
}
_TEMPLATE_CLUSTER = "web-prod"  # in every ARN of the captured lifecycle
_TEMPLATE_FAMILY = "task-definition/web:"
_ISO_VALUE = re.compile(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"')  # a JSON string holding a time
_STOPPING_STATES = ("DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED")


@dataclass(frozen=True)
class History:
    now: float  # the times are relative to it
    deliveries: List[Event]  # in delivery order: the lifecycles' (mixed), then the finished tasks'
    expected_outcomes: List[str]  # per delivery, delivered one after another
    final: Dict[str, Dict[str, Any]]  # taskArn -> the detail of its highest version
    parameters: Dict[str, Any] = field(default_factory=dict)

    @property
    def latest(self) -> Dict[str, int]:
        return {arn: detail["version"] for arn, detail in self.final.items()}


def cluster_arn(name: str) -> str:
    return f"{ACCOUNT_HOME}:cluster/{name}"


def build(now: float, lifecycles: int = 300, finished: int = 3000, days: float = 13, swap_rate: float = 0.05,
          repeat_rate: float = 0.05, seed: int = 1) -> History:
    rng = random.Random(seed)
    template = eight_state_lifecycle()
    histories: List[List[Event]] = []
    number = 60_000
    for _ in range(lifecycles):
        cluster = _pick(LIFECYCLE_CLUSTERS, rng)
        group = _pick(CLUSTERS[cluster], rng)
        if rng.random() < OPEN_SHARE:
            last = "PENDING" if rng.random() < PENDING_SHARE else "RUNNING"
            versions = _task(template, number, cluster, group, None, now - rng.uniform(60, RECENT_SECONDS), last)
        else:
            stop = _pick(STOP_MIX[group.split(":")[0]], rng)
            versions = _task(template, number, cluster, group, stop, now - rng.uniform(0, RECENT_SECONDS))
        histories.append(versions)
        number += 1
    mixed, counts = mostly_in_order(histories, swap_rate, repeat_rate, rng)
    stopped: List[Event] = []
    for _ in range(finished):
        group = _pick(CLUSTERS[BUSY], rng)
        stop = _pick(STOP_MIX[group.split(":")[0]], rng)
        stopped += _task(template[-1:], number, BUSY, group, stop, now - rng.uniform(0, days * 86_400))
        number += 1
    deliveries = mixed + stopped
    final: Dict[str, Dict[str, Any]] = {}
    for event in deliveries:
        detail = event["detail"]
        if detail["version"] > final.get(detail[TASKS.key], {}).get("version", 0):
            final[detail[TASKS.key]] = detail
    parameters = {"lifecycles": lifecycles, "finished": finished, "days": days, "swap_rate": swap_rate,
                  "repeat_rate": repeat_rate, "seed": seed, **counts}
    return History(now, deliveries, sequential_outcomes(deliveries), final, parameters)


def _pick(weights: Mapping[str, float], rng: random.Random) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def _task(template: Sequence[Event], number: int, cluster: str, group: str, stop: Optional[str], at: float,
          last: str = "STOPPED") -> List[Event]:
    """The lifecycle under a new ID in ``cluster``, of ``group``, up to ``last``; stopping as ``stop``
    says, at ``at`` (or, unfinished, last seen then)."""
    family = group.split(":", 1)[1]
    states = [event["detail"]["lastStatus"] for event in template]
    versions = list(template[: states.index(last) + 1])
    end = versions[-1]["detail"]
    shift = at - parse_time(end.get("stoppedAt") or end["updatedAt"], "time")
    text = json.dumps(task_versions(versions, number))
    text = text.replace(f"/{_TEMPLATE_CLUSTER}", f"/{cluster}").replace(_TEMPLATE_FAMILY, f"task-definition/{family}:")
    versions = json.loads(_ISO_VALUE.sub(lambda match: f'"{_moved(match.group(1), shift)}"', text))
    for event in versions:
        detail = event["detail"]
        detail["group"] = group
        if group.startswith("family:"):
            detail["startedBy"] = f"events-rule/{family}"
        if stop is not None and detail["lastStatus"] in _STOPPING_STATES:
            code, reason, exit_code, container_reason = STOPS[stop]
            detail["stopCode"], detail["stoppedReason"] = code, reason
            essential = detail["containers"][0]
            if "exitCode" in essential:  # the containers have stopped
                essential["exitCode"] = exit_code
                if container_reason is not None:
                    essential["reason"] = container_reason
    return versions


def _moved(text: str, shift: float) -> str:
    """An ISO time moved by ``shift`` seconds (one without a fraction, as an envelope's, to the second)."""
    moved = parse_time(text, "time") + shift
    if "." not in text:
        return f"{datetime.fromtimestamp(int(moved), timezone.utc):%Y-%m-%dT%H:%M:%S}Z"
    return iso_time(moved)


# -- the right answers ------------------------------------------------------------------------


def stopped_at(detail: Mapping[str, Any]) -> float:
    return parse_time(detail["stoppedAt"], "stoppedAt")


def is_oom(detail: Mapping[str, Any]) -> bool:
    """An OOM kill, as a reader counts one: a container's reason says OutOfMemory, or it exited 137."""
    return any("OutOfMemory" in (container.get("reason") or "") or container.get("exitCode") == OOM_EXIT_CODE
               for container in detail.get("containers", []))


def midnight(now: float) -> float:
    """Today's start, UTC."""
    return datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def question_time(clock_now: float) -> float:
    """When the questions are asked (the read API's clock pinned there) and what the workload's times
    are relative to: a minute before today's UTC midnight, so that "today" spans a whole day (23 h 59)
    whatever the hour the bench runs, and its figures do not depend on it."""
    return midnight(clock_now) - 60


def truth(history: History, asked_at: float) -> Dict[str, Any]:
    """Each question's answer from the events: the keys it must list (or the count it must find)."""
    tasks = list(history.final.values())
    busy = cluster_arn(BUSY)
    stopped = [d for d in tasks if d["lastStatus"] == "STOPPED"]
    today = midnight(asked_at)
    oom_today = {cluster_arn(name): sorted(d[TASKS.key] for d in stopped
                                           if d["clusterArn"] == cluster_arn(name) and stopped_at(d) >= today and is_oom(d))
                 for name in CLUSTERS}
    all_stopped = sorted(d[TASKS.key] for d in stopped if d["clusterArn"] == busy)
    one = all_stopped[len(all_stopped) // 3] if all_stopped else None
    return {
        "service_running": sorted(d[TASKS.key] for d in tasks if d["clusterArn"] == busy and d["lastStatus"] == "RUNNING"
                                  and d["group"] == f"service:{SERVICE_QUESTION}"),
        "stopped_last_hour": sorted(d[TASKS.key] for d in stopped if d["clusterArn"] == busy
                                    and d["group"] == f"service:{STOPPED_QUESTION}" and stopped_at(d) >= asked_at - 3600),
        "oom_today": oom_today,
        "clusters": sorted(cluster_arn(name) for name in CLUSTERS),
        "one_task": {"taskArn": one, "version": history.final[one]["version"]} if one else None,
        "all_stopped": all_stopped,
    }
