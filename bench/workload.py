"""The benchmark's workload: many tasks, several versions each, duplicates, shuffled.

Each task replays one of the real task lifecycles in events/ (3 to 7 versions)
under its own task id, so the items have the size and shape of real ones.
Task events only: they carry no floats (see bench/docs_example.py).

The files in events/ carry fixed dates, and an event older than the creation
window may no longer create its item (answered "expired"), so they are read
through tools.replay.recent_events: dated yesterday, every item's size kept.
"""
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List

from chalicelib.store import CREATED, DUPLICATE, STALE, UPDATED
from chalicelib.tables import TASKS
from tools.replay import recent_events


@dataclass(frozen=True)
class Workload:
    deliveries: List[Dict[str, Any]]  # events in delivery order
    expected_outcomes: List[str]  # per delivery, when delivered sequentially
    latest: Dict[str, int]  # taskArn -> highest version delivered

    def outcome_counts(self) -> Counter:
        return Counter(self.expected_outcomes)


def lifecycles() -> List[List[Dict[str, Any]]]:
    """The task lifecycles in events/: one list of versions per task there."""
    by_task: Dict[str, List[Dict[str, Any]]] = {}
    for event in recent_events():
        if event.get("detail-type") == TASKS.detail_type:
            by_task.setdefault(event["detail"][TASKS.key], []).append(event)
    return [versions for versions in by_task.values() if len(versions) > 1]


def task_versions(template: List[Dict[str, Any]], task_number: int) -> List[Dict[str, Any]]:
    """The template's versions with the task id (in every ARN) replaced by a new one."""
    old_id = template[0]["detail"][TASKS.key].rsplit("/", 1)[-1]
    new_id = f"{task_number:032x}"
    text = json.dumps(template).replace(old_id, new_id)
    events = json.loads(text)
    for index, event in enumerate(events):
        event["id"] = f"{task_number:08x}-0000-4000-8000-{index:012x}"
    return events


def build(tasks: int, duplicate_rate: float, seed: int, first_task: int = 0) -> Workload:
    rng = random.Random(seed)
    templates = lifecycles()
    deliveries: List[Dict[str, Any]] = []
    latest: Dict[str, int] = {}
    for number in range(first_task, first_task + tasks):
        for event in task_versions(templates[number % len(templates)], number):
            copies = 2 if rng.random() < duplicate_rate else 1
            deliveries.extend([event] * copies)
            key = event["detail"][TASKS.key]
            latest[key] = max(latest.get(key, 0), event["detail"]["version"])
    rng.shuffle(deliveries)
    return Workload(deliveries, sequential_outcomes(deliveries), latest)


def sequential_outcomes(deliveries: List[Dict[str, Any]], key_name: str = TASKS.key) -> List[str]:
    """Each delivery's outcome when delivered one after another (``key_name``: the table's key)."""
    stored: Dict[str, int] = {}
    outcomes = []
    for event in deliveries:
        key, version = event["detail"][key_name], event["detail"]["version"]
        previous = stored.get(key)
        if previous is None:
            outcomes.append(CREATED)
        elif version > previous:
            outcomes.append(UPDATED)
        else:
            outcomes.append(DUPLICATE if version == previous else STALE)
        if previous is None or version > previous:
            stored[key] = version
    return outcomes


def concurrent_versions(tasks: int, first_task: int) -> List[List[Dict[str, Any]]]:
    """Per task, every version once: for the lost-update test, one invocation per version."""
    templates = lifecycles()
    return [task_versions(templates[n % len(templates)], n) for n in range(first_task, first_task + tasks)]
