"""The capacity section's event streams, built from the real events in events/.

- realistic: task lifecycles of eight versions, each version a new lastStatus
  (PROVISIONING ... STOPPED), arriving mostly in order: now and then two
  consecutive versions swapped, or a version delivered twice in a row.
- shuffled: the same lifecycles, every delivery in random order, some repeated
  (the worst order, as the throughput workload's).
- container instances: frequent resource and agent changes, the status
  changing rarely (ACTIVE for most versions, then DRAINING, then INACTIVE).

The lifecycle is events/fargate-task-lifecycle.json (seven versions; ECS also
sends DEPROVISIONING between STOPPING and STOPPED, which that capture lacks,
so that version is built from its neighbours: containers stopped, the network
interface detached, no stoppedAt yet). Container instances start from
events/container-instance.json's first version. Each task or instance gets
its own ID in every ARN, so items have the size and shape of real ones.

Swaps and repeats are exact counts (the rate times the opportunities,
rounded), placed at random: the figures do not depend on the seed's luck.
"""
import copy
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Sequence, Tuple

from bench.workload import sequential_outcomes, task_versions
from chalicelib.model.clock import iso_time, parse_time
from chalicelib.tables import CONTAINER_INSTANCES, TASKS, TableSpec
from tools.replay import recent_events

TASK_STATES = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED")

Event = Dict[str, Any]


@dataclass(frozen=True)
class Stream:
    name: str
    table: TableSpec
    deliveries: List[Event]
    expected_outcomes: List[str]  # per delivery, when delivered one after another
    latest: Dict[str, int]  # key -> highest version delivered
    parameters: Dict[str, Any] = field(default_factory=dict)  # how it was built, printed and kept

    def outcome_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for outcome in self.expected_outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def _stream(name: str, table: TableSpec, deliveries: List[Event], parameters: Dict[str, Any]) -> Stream:
    latest: Dict[str, int] = {}
    for event in deliveries:
        key = event["detail"][table.key]
        latest[key] = max(latest.get(key, 0), event["detail"]["version"])
    return Stream(name, table, deliveries, sequential_outcomes(deliveries, table.key), latest, parameters)


# -- the task lifecycle -------------------------------------------------------------------


def eight_state_lifecycle() -> List[Event]:
    """The captured Fargate lifecycle with its DEPROVISIONING version: eight versions, one per state."""
    by_task: Dict[str, List[Event]] = {}
    for event in recent_events():
        if event["detail-type"] == TASKS.detail_type:
            by_task.setdefault(event["detail"][TASKS.key], []).append(event)
    wanted = [state for state in TASK_STATES if state != "DEPROVISIONING"]
    (captured,) = [versions for versions in by_task.values() if [e["detail"]["lastStatus"] for e in versions] == wanted]
    stopping, stopped = captured[-2], captured[-1]
    deprovisioning = copy.deepcopy(stopped)
    detail = deprovisioning["detail"]
    detail["lastStatus"] = "DEPROVISIONING"
    del detail["stoppedAt"]  # set when the task reaches STOPPED
    for attachment in detail.get("attachments", []):
        attachment["status"] = "DETACHED"  # DETACHING while STOPPING, DELETED once STOPPED
    between = (parse_time(stopping["detail"]["updatedAt"], "updatedAt") + parse_time(stopped["detail"]["updatedAt"], "updatedAt")) / 2
    detail["updatedAt"] = iso_time(between)
    deprovisioning["time"] = _envelope_time(between)
    deprovisioning["id"] = "00000000-0000-4000-8000-0000000000d7"
    lifecycle = captured[:-1] + [deprovisioning, copy.deepcopy(stopped)]
    for version, event in enumerate(lifecycle, start=1):
        event["detail"]["version"] = version
    return lifecycle


def _envelope_time(epoch: float) -> str:
    return f"{datetime.fromtimestamp(int(epoch), timezone.utc):%Y-%m-%dT%H:%M:%S}Z"


def task_lifecycles(count: int, first_task: int = 0) -> List[List[Event]]:
    template = eight_state_lifecycle()
    return [task_versions(template, number) for number in range(first_task, first_task + count)]


# -- container instances ----------------------------------------------------------------------


def container_instance_histories(count: int, versions: int, rng: random.Random, first: int = 0) -> List[List[Event]]:
    """Per instance, ``versions`` state changes: tasks placed and stopped (counts and remaining
    resources), now and then the agent disconnecting and reconnecting; ACTIVE until the last
    three versions: DRAINING, drained, INACTIVE (deregistered)."""
    if versions < 4:
        raise ValueError("a container instance history needs at least 4 versions")
    template = [e for e in recent_events() if e["detail-type"] == CONTAINER_INSTANCES.detail_type][0]
    histories = []
    for number in range(first, first + count):
        first_event = _with_new_id(template, number, CONTAINER_INSTANCES.key)
        registered = first_event["detail"]["registeredResources"]
        start = parse_time(first_event["detail"]["updatedAt"], "updatedAt")
        state = copy.deepcopy(first_event)
        running = 0
        history = []
        for version in range(1, versions + 1):
            detail = state["detail"]
            if version > 1:
                if version == versions:
                    detail.update(status="INACTIVE", agentConnected=False)
                elif version == versions - 1:
                    running = 0  # drained: its tasks stopped or moved
                    detail.update(runningTasksCount=0, pendingTasksCount=0)
                elif version == versions - 2:
                    detail["status"] = "DRAINING"
                elif not detail["agentConnected"]:
                    detail["agentConnected"] = True  # the agent is back
                elif rng.random() < 0.1:
                    detail["agentConnected"] = False  # the agent lost its connection (an update, a restart)
                else:
                    running = max(0, min(4, running + (1 if rng.random() < 0.55 or running == 0 else -1)))
                    detail.update(runningTasksCount=running, pendingTasksCount=0)
                detail["remainingResources"] = _remaining(registered, running, rng)
                detail["version"] = version
            at = start + 60.0 * (version - 1) + rng.uniform(0, 50)
            detail["updatedAt"] = iso_time(at)
            state["time"] = _envelope_time(at)
            state["id"] = f"{number:08x}-0000-4000-8000-{version:012x}"
            history.append(copy.deepcopy(state))
        histories.append(history)
    return histories


def _remaining(registered: List[Dict[str, Any]], running: int, rng: random.Random) -> List[Dict[str, Any]]:
    """The registered resources less ``running`` tasks of 512 CPU units and 1 GiB; CPU credits drift."""
    remaining = copy.deepcopy(registered)
    for resource in remaining:
        if resource["name"] == "CPU":
            resource["integerValue"] -= 512 * running
        elif resource["name"] == "MEMORY":
            resource["integerValue"] -= 1024 * running
        elif resource["name"] == "MEMORY_BYTES":
            resource["longValue"] -= 1024 * 1024 * 1024 * running
        elif resource["type"] == "DOUBLE":
            resource["doubleValue"] = round(rng.uniform(0.1, 1.1), 1)
    return remaining


def _with_new_id(template: Event, number: int, key: str) -> Event:
    old_id = template["detail"][key].rsplit("/", 1)[-1]
    return json.loads(json.dumps(template).replace(old_id, f"{number:032x}"))


# -- arrival orders -----------------------------------------------------------------------------


def mostly_in_order(histories: Sequence[List[Event]], swap_rate: float, repeat_rate: float,
                    rng: random.Random) -> Tuple[List[Event], Dict[str, int]]:
    """Each history in version order but for round(swap_rate x consecutive pairs) pairs swapped
    (no version in two swaps) and round(repeat_rate x versions) versions delivered again right
    after themselves; the histories interleaved at random, each keeping its own order."""
    pairs = [(h, i) for h, history in enumerate(histories) for i in range(len(history) - 1)]
    versions = [(h, i) for h, history in enumerate(histories) for i in range(len(history))]
    swaps = _pick_apart(pairs, round(swap_rate * len(pairs)), rng)
    repeats = set(rng.sample(versions, round(repeat_rate * len(versions))))
    sequences = []
    for h, history in enumerate(histories):
        order = list(range(len(history)))
        for i in range(len(history) - 1):
            if (h, i) in swaps:
                order[i], order[i + 1] = order[i + 1], order[i]
        sequence = []
        for i in order:
            sequence.append(history[i])
            if (h, i) in repeats:
                sequence.append(history[i])
        sequences.append(sequence)
    return interleave(sequences, rng), {"swapped_pairs": len(swaps), "repeated_versions": len(repeats),
                                         "consecutive_pairs": len(pairs), "versions": len(versions)}


def _pick_apart(pairs: List[Tuple[int, int]], count: int, rng: random.Random) -> set:
    """``count`` pairs at random, no two sharing a version (so a swap is always of neighbours)."""
    chosen: set = set()
    for h, i in rng.sample(pairs, len(pairs)):
        if len(chosen) == count:
            break
        if (h, i - 1) not in chosen and (h, i + 1) not in chosen:
            chosen.add((h, i))
    return chosen


def interleave(sequences: Sequence[List[Event]], rng: random.Random) -> List[Event]:
    """A uniformly random merge of the sequences, each keeping its order (tasks run side by side)."""
    slots = [n for n, sequence in enumerate(sequences) for _ in sequence]
    rng.shuffle(slots)
    positions = [0] * len(sequences)
    merged = []
    for n in slots:
        merged.append(sequences[n][positions[n]])
        positions[n] += 1
    return merged


def shuffled(histories: Sequence[List[Event]], repeat_rate: float, rng: random.Random) -> Tuple[List[Event], Dict[str, int]]:
    versions = [event for history in histories for event in history]
    repeats = rng.sample(range(len(versions)), round(repeat_rate * len(versions)))
    deliveries = versions + [versions[i] for i in repeats]
    rng.shuffle(deliveries)
    return deliveries, {"repeated_versions": len(repeats), "versions": len(versions)}


# -- the three streams --------------------------------------------------------------------------


def build(lifecycles: int, swap_rate: float, repeat_rate: float, shuffled_repeat_rate: float,
          instances: int, instance_versions: int, seed: int) -> List[Stream]:
    rng = random.Random(seed)
    tasks = task_lifecycles(lifecycles, first_task=30_000)
    realistic, counts = mostly_in_order(tasks, swap_rate, repeat_rate, rng)
    worst, worst_counts = shuffled(tasks, shuffled_repeat_rate, rng)
    histories = container_instance_histories(instances, instance_versions, rng, first=40_000)
    instance_stream, instance_counts = mostly_in_order(histories, swap_rate, repeat_rate, rng)
    return [
        _stream("realistic", TASKS, realistic, {
            "lifecycles": lifecycles, "versions_each": len(TASK_STATES), "swap_rate": swap_rate,
            "repeat_rate": repeat_rate, **counts}),
        _stream("shuffled", TASKS, worst, {
            "lifecycles": lifecycles, "versions_each": len(TASK_STATES), "repeat_rate": shuffled_repeat_rate, **worst_counts}),
        _stream("container instances", CONTAINER_INSTANCES, instance_stream, {
            "instances": instances, "versions_each": instance_versions, "swap_rate": swap_rate,
            "repeat_rate": repeat_rate, **instance_counts}),
    ]
