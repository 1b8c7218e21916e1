"""Hostile input through the handler, on DynamoDB Local.

Every generated event is either stored exactly right, or refused with
InvalidEvent (or its subclass ItemTooLarge) with nothing written for its key.
Any other exception escaping is a bug. `make test` runs a bounded number of
examples; `make fuzz` sets ECS_STATE_FUZZ_EXAMPLES for a long run.
"""
import os
import uuid
from decimal import Decimal
from typing import Any, Iterator, Tuple

from chalice.local import LambdaContext
from hypothesis import HealthCheck, given
from hypothesis import event as note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app import app
from chalicelib.errors import InvalidEvent
from chalicelib.ingest.events import table_of
from chalicelib.tables import CONTAINER_INSTANCES
from tests.helpers import container_instance_event, record, stored_item, task_event

SCALE = int(os.environ.get("ECS_STATE_FUZZ_EXAMPLES", "0"))
# Chalice's CloudWatchEvent reads these before the handler runs; EventBridge always sends them.
CHALICE_ENVELOPE = ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail")


def fuzz_settings(examples: int) -> Any:
    return hypothesis_settings(
        max_examples=SCALE or examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Every code point, lone surrogates included (JSON can carry them: "\ud800").
any_text = st.text(st.characters(exclude_categories=()), max_size=30)
huge_text = st.builds(lambda unit, count: unit * count, st.sampled_from(["x", "é", "😀", "\ud800"]), st.integers(50_000, 450_000))
names = st.one_of(any_text, st.sampled_from(["", "version", "taskArn", "containerInstanceArn", "status", "cw_version", "cw_"]))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),  # JSON integers Python can parse (4300 digits)
    st.floats(),  # NaN and Infinity included: Python's json reads them
    st.sampled_from([10**125, 10**126, 1e-130, 5e-324, -0.0, 2**63, 10**38 - 1, 10**38, 0.1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=12,
)


def nest(value: Any, depth: int, as_map: bool) -> Any:
    for _ in range(depth):
        value = {"n": value} if as_map else [value]
    return value


hostile_values = st.one_of(
    json_values,
    huge_text,
    st.builds(nest, json_values, st.integers(25, 40), st.booleans()),  # around DynamoDB's 32 levels
)


def base_event(kind: int, version: int) -> dict:
    """A valid event with a key no other example uses."""
    unique = uuid.uuid4().hex
    if kind:
        return container_instance_event(version, instance_id=unique)
    return task_event(version, task_id=unique)


def containers(value: Any, path: Tuple = ()) -> Iterator[Tuple]:
    """Paths to every map and list in ``value``, itself included."""
    if isinstance(value, (dict, list)):
        yield path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for name, member in items:
            yield from containers(member, path + (name,))


def at(value: Any, path: Tuple) -> Any:
    for part in path:
        value = value[part]
    return value


def mutate(data: Any, event: dict) -> None:
    """Set, add or delete one member at any level of the event, with a hostile value."""
    container = at(event, data.draw(st.sampled_from(list(containers(event))), label="path"))
    action = data.draw(st.sampled_from(["set", "add", "delete"]), label="action")
    if isinstance(container, dict):
        if action == "add" or not container:
            container[data.draw(names, label="new name")] = data.draw(hostile_values, label="value")
        else:
            name = data.draw(st.sampled_from(sorted(container, key=repr)), label="name")
            if action == "delete":
                del container[name]
            else:
                container[name] = data.draw(hostile_values, label="value")
    elif action == "add" or not container:
        container.append(data.draw(hostile_values, label="value"))
    else:
        index = data.draw(st.integers(0, len(container) - 1), label="index")
        if action == "delete":
            del container[index]
        else:
            container[index] = data.draw(hostile_values, label="value")


def deliver(event: Any) -> dict:
    """Through the handler as Lambda calls it, when Chalice can build its CloudWatchEvent.

    Otherwise through the Runtime's recorder directly: Chalice's wrapper itself raises
    KeyError or TypeError for such events, which EventBridge never sends.
    """
    if isinstance(event, dict) and all(name in event for name in CHALICE_ENVELOPE):
        name = "container_instance_state_change" if table_of(event) is CONTAINER_INSTANCES else "task_state_change"
        return app.handler_map[name](event, LambdaContext("ecs-state-fuzz", 256))
    return record(event)


def as_stored(value: Any) -> Any:
    """What DynamoDB gives back for a JSON value: numbers as Decimal, floats as JSON wrote them."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, list):
        return [as_stored(member) for member in value]
    return {name: as_stored(member) for name, member in value.items()}


def identity(event: Any) -> Any:
    """(table, key) the event would be stored under, if it names a readable one."""
    table = table_of(event)
    detail = event.get("detail") if table else None
    key = detail.get(table.key) if isinstance(detail, dict) else None
    if not isinstance(key, str) or not key or len(key) > 512:
        return None
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return table, key


def check(client: Any, event: Any) -> None:
    where = identity(event)
    before = stored_item(client, *where) if where else None
    try:
        result = deliver(event)
    except InvalidEvent as error:
        note(f"refused: {type(error).__name__}: {error.problem[:40]}")
        str(error).encode("utf-8")  # loggable: a UTF-8 log line can carry it
        if where:
            assert stored_item(client, *where) == before, "a refused event changed the stored item"
        return
    note(f"stored: {result['outcome']}")
    table, key = where  # a stored event always has a readable key
    stored = stored_item(client, table, key)
    if result["outcome"] in ("created", "updated"):
        metadata = {f"cw_{name}": event[name] for name in ("version", "time") if name in event}
        finished = event["detail"].get(table.status_field) in table.finished_statuses
        metadata.update(cw_source="event", cw_phase="finished" if finished else "open")
        expires_at = stored.pop("cw_expires_at", None)
        assert (expires_at is not None) == finished, "only a finished item expires"
        index = {name: stored.pop(name) for name in ("cw_listing", "cw_listing_key", "cw_stop_code") if name in stored}
        if "cw_listing_key" in index:  # listed under its cluster and phase (tests/test_questions.py: the rest)
            assert index["cw_listing"] == "all"
            assert index["cw_listing_key"].startswith(f"{event['detail']['clusterArn']}\x1f{metadata['cw_phase']}\x1f")
        assert ("cw_stop_code" in index) <= finished, "a stop code is indexed only once finished"
        assert stored == as_stored({**metadata, **event["detail"]})
    else:  # duplicate or stale: another example stored this key at this version or later
        assert stored == before and stored["version"] >= event["detail"]["version"]


@fuzz_settings(examples=100)
@given(data=st.data(), kind=st.integers(0, 1), version=st.integers(0, 10**38 - 1), mutations=st.integers(0, 3))
def test_hostile_values_at_every_level_are_stored_exactly_or_refused(dynamodb_local, data, kind, version, mutations):
    event = base_event(kind, version)
    for _ in range(mutations):
        mutate(data, event)
    check(dynamodb_local, event)


@fuzz_settings(examples=50)
@given(event=st.one_of(json_values, st.dictionaries(names, json_values)))
def test_random_json_shapes_are_refused_with_the_typed_error(dynamodb_local, event):
    check(dynamodb_local, event)
