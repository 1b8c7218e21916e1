"""The three writers the benchmark compares, each prepared for one run on its own tables.

``prepare(workload, table_names)`` does everything that is not the writer's
per-event work (building requests, contexts, Table objects) and returns
``deliver(index) -> outcome label`` for the timed loop.
"""
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Mapping

from bench.docs_example import IGNORED, SAVED_NEW, UPDATED, DocsExample
from bench.workload import CREATED, DUPLICATE, STALE, Workload
from chalicelib import config as settings
from chalicelib import runtime
from chalicelib.tables import TASKS, TableSpec

Deliver = Callable[[int], str]
FLOOR, OURS, OURS_NO_MARK, BASELINE = "floor", "ecs-state", "ecs-state, no mark", "docs example"
WRITTEN, NOT_WRITTEN = "written", "not written"


def prepare_ours(workload: Workload, table_names: Mapping[TableSpec, str], marks: bool = True) -> Deliver:
    """ecs-state's handler, called as Lambda calls it: (event dict, LambdaContext).

    ``marks=False`` turns its high-water marks off, to measure what they save.
    """
    use_tables(table_names, marks)
    from chalice.local import LambdaContext

    from app import app

    handler = app.handler_map["task_state_change"]
    deliveries = workload.deliveries
    # Lambda's runtime builds a context per invocation; that is not the handler's cost.
    contexts = [LambdaContext("ecs-state-bench", memory_size=256) for _ in deliveries]
    return lambda index: handler(deliveries[index], contexts[index])["outcome"]


def use_tables(table_names: Mapping[TableSpec, str], marks: bool = True, **changes: Any) -> None:
    """Point ecs-state at these tables, marks on or off, other settings (Config's fields) changed:
    the process's Runtime with those settings, its clients (and the counters hooked on them) kept."""
    process = runtime.current()
    config = process.config.with_tables(table_names)._replace(
        high_water_entries=settings.DEFAULT_HIGH_WATER_ENTRIES if marks else 0, **changes)
    runtime.use(process.replace(**config._asdict()))


@contextmanager
def settings_restored() -> Iterator[None]:
    """Put the process's Runtime back as it was once the block ends."""
    saved = runtime.current()
    try:
        yield
    finally:
        runtime.use(saved)


@contextmanager
def restored_environment(*names: str) -> Iterator[None]:
    """Put these environment variables back as they were once the block ends (set or unset)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def prepare_floor(client: Any, workload: Workload, table_names: Mapping[TableSpec, str]) -> Deliver:
    """One pre-serialised conditional PutItem per event, the least any correct writer can send."""
    from chalicelib.ingest.events import parse_event

    table = table_names[TASKS]
    requests = [
        {
            "TableName": table,
            "Item": parse_event(event, runtime.current().config.rules, time.time).item,
            "ConditionExpression": "attribute_not_exists(#key) OR #version < :version",
            "ExpressionAttributeNames": {"#key": TASKS.key, "#version": "version"},
            "ExpressionAttributeValues": {":version": {"N": str(event["detail"]["version"])}},
        }
        for event in workload.deliveries
    ]
    not_written = client.exceptions.ConditionalCheckFailedException

    def deliver(index: int) -> str:
        try:
            client.put_item(**requests[index])
            return WRITTEN
        except not_written:
            return NOT_WRITTEN

    return deliver


def prepare_baseline(resource: Any, workload: Workload, table_names: Mapping[TableSpec, str]) -> Deliver:
    example = DocsExample(resource, table_names)
    deliveries = workload.deliveries
    return lambda index: example.handle(deliveries[index])


# What each writer should answer for each sequential outcome; anything else is a bug.
EXPECTED_LABELS: Dict[str, Dict[str, str]] = {
    OURS: {CREATED: CREATED, "updated": "updated", DUPLICATE: DUPLICATE, STALE: STALE},
    OURS_NO_MARK: {CREATED: CREATED, "updated": "updated", DUPLICATE: DUPLICATE, STALE: STALE},
    FLOOR: {CREATED: WRITTEN, "updated": WRITTEN, DUPLICATE: NOT_WRITTEN, STALE: NOT_WRITTEN},
    BASELINE: {CREATED: SAVED_NEW, "updated": UPDATED, DUPLICATE: IGNORED, STALE: IGNORED},
}
