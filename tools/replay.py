"""`make run`: replay ECS events through the Chalice handlers as EventBridge delivers them.

Every event is delivered one to three times, all deliveries are shuffled, and
several workers deliver them at once, each call going through the handler as
Lambda calls it. At the end the stored state must be, for every task and
container instance, exactly the highest version delivered; if not, exit 1.

By default it runs on an embedded DynamoDB (moto, on a free loopback port);
``--endpoint`` points it at any other: DynamoDB Local, LocalStack, or ``aws``.
With ``aws`` the sample events must not land in real tables: the run needs
table names of its own (--task-table, --container-instance-table), refuses
names that exist already, and creates them.
"""
import argparse
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tools.local_dynamodb import LOCAL_RETENTION_DAYS, ROOT, EmbeddedMoto, create_tables, local_environment

DEFAULT_EVENTS = ROOT / "events"


def load_events(path: Path) -> List[Dict[str, Any]]:
    """Events from a JSON file (one event or an array) or every *.json in a folder."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    events: List[Dict[str, Any]] = []
    for file in files:
        loaded = json.loads(file.read_text())
        events.extend(loaded if isinstance(loaded, list) else [loaded])
    return events


# An ISO-8601 time as events and their details carry them: "2026-11-03T14:02:11.482Z".
_ISO_TIME = re.compile(r'"(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)"')


def recent_events(path: Path = DEFAULT_EVENTS, today: Optional[date] = None) -> List[Dict[str, Any]]:
    """The events of ``path``, every date moved by the same whole number of days so the latest
    falls on yesterday (UTC): young enough to create their items (an event older than the
    creation window may not), never in the future. The times of day, the intervals and the
    text's length (so every item's size) stay as captured."""
    return json.loads(_moved_to_yesterday([json.dumps(load_events(path))], today)[0])


def write_recent_event_files(folder: Path, source: Path = DEFAULT_EVENTS) -> List[Path]:
    """Copies of the sample event files in ``folder``, dated as recent_events dates them
    (one shift for all), to post one by one (make local, the tests of POST /events)."""
    files = sorted(source.glob("*.json"))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in zip(files, _moved_to_yesterday([file.read_text() for file in files], None)):
        written.append(folder / file.name)
        written[-1].write_text(text)
    return written


def _moved_to_yesterday(texts: List[str], today: Optional[date]) -> List[str]:
    dates = [date.fromisoformat(day) for text in texts for day, _ in _ISO_TIME.findall(text)]
    if not dates:
        return texts
    shift = ((today or datetime.now(timezone.utc).date()) - timedelta(days=1)) - max(dates)

    def moved(match: "re.Match[str]") -> str:
        return f'"{(date.fromisoformat(match.group(1)) + shift).isoformat()}{match.group(2)}"'

    return [_ISO_TIME.sub(moved, text) for text in texts]


def plan_deliveries(events: List[Dict[str, Any]], duplicate_rate: float, rng: random.Random) -> List[Dict[str, Any]]:
    """Each event once, then a second and a third time each with ``duplicate_rate``; shuffled."""
    deliveries = []
    for event in events:
        copies = 1
        while copies < 3 and rng.random() < duplicate_rate:
            copies += 1
        deliveries.extend([event] * copies)
    rng.shuffle(deliveries)
    return deliveries


def expected_state(events: List[Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """(kind, key) -> the event with the highest version, which must end up stored."""
    latest: Dict[Tuple[str, str], Tuple[int, Dict[str, Any]]] = {}
    for event in events:
        change = _parsed(event)
        ident = (change.table.kind, change.key)
        if ident not in latest or change.version > latest[ident][0]:
            latest[ident] = (change.version, event)
    return {ident: event for ident, (_, event) in latest.items()}


def _parsed(event: Dict[str, Any], rules: Any = None) -> Any:
    """An event's change (its table, key, version and item), checked as the handlers check it
    under ``rules`` (by default any: the table, key and version do not depend on them)."""
    from chalicelib.ingest.events import parse_event
    from chalicelib.model.lifecycle import DELIVERY_HORIZON_SECONDS, ItemRules

    rules = rules or ItemRules(read_index=True, retention_seconds=DELIVERY_HORIZON_SECONDS)
    return parse_event(event, rules, time.time)


def deliver(deliveries: List[Dict[str, Any]], concurrency: int) -> Tuple[Counter, List[str]]:
    """Call the handlers from ``concurrency`` threads; count outcomes, collect errors."""
    from chalice.local import LambdaContext

    from app import app
    from chalicelib.api.events_route import event_handlers
    from chalicelib.ingest.events import table_of

    handler_for = event_handlers(app)
    outcomes: Counter = Counter()
    errors: List[str] = []
    lock = threading.Lock()
    done = 0
    step = max(1, len(deliveries) // 10)

    def one(event: Dict[str, Any]) -> None:
        nonlocal done
        name = handler_for[table_of(event).detail_type]
        context = LambdaContext(f"ecs-state-local-{name}", memory_size=256)
        try:
            outcome = app.handler_map[name](event, context)["outcome"]
        except Exception as error:  # report every failure, keep delivering the rest
            outcome = "error"
            with lock:
                errors.append(f"{type(error).__name__}: {error}")
        with lock:
            outcomes[outcome] += 1
            done += 1
            if done % step == 0 or done == len(deliveries):
                print(f"  delivered {done}/{len(deliveries)}", flush=True)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, deliveries))
    return outcomes, errors


def check_and_show(client: Any, expected: Dict[Tuple[str, str], Dict[str, Any]]) -> List[str]:
    """Print one row per task / container instance; return every mismatch with the expected state."""
    from boto3.dynamodb.types import TypeDeserializer

    from chalicelib import runtime

    stage = runtime.current().config
    deserialize = TypeDeserializer().deserialize
    problems = []
    rows = []
    for (kind, key), event in sorted(expected.items()):
        change = _parsed(event, stage.rules)
        response = client.get_item(
            TableName=stage.table_name(change.table), Key={change.table.key: {"S": key}}, ConsistentRead=True
        )
        stored = response.get("Item")
        if stored is None:
            problems.append(f"{kind} {key}: nothing stored, expected version {change.version}")
            continue
        item = {name: deserialize(value) for name, value in stored.items()}
        if item != {name: deserialize(value) for name, value in change.item.items()}:
            problems.append(f"{kind} {key}: stored version {item.get('version')} is not version {change.version}")
        status = item.get("status") or f"{item.get('lastStatus')}/{item.get('desiredStatus')}"
        rows.append((kind, key.rsplit("/", 1)[-1][:12], str(item.get("clusterArn", "")).rsplit("/", 1)[-1], status, str(item.get("version"))))
    widths = [max(len(str(cell)) for cell in column) for column in zip(("kind", "id", "cluster", "status", "version"), *rows)]
    for row in [("kind", "id", "cluster", "status", "version")] + rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    return problems


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="make run ARGS=...", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=Path, default=DEFAULT_EVENTS, help="events file or folder (default: events/)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--duplicate-rate", type=float, default=0.5, help="chance of each extra delivery (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent workers (default 8)")
    parser.add_argument(
        "--endpoint",
        default="embedded",
        help="'embedded' (moto on loopback, default), a DynamoDB URL such as http://127.0.0.1:8000, or 'aws'",
    )
    from chalicelib import tables

    for spec in tables.ALL:
        parser.add_argument(f"--{spec.kind.replace('_', '-')}-table", dest=spec.kind, metavar="NAME",
                            help=f"{spec.kind.replace('_', ' ')} table to create (required with --endpoint aws)")
    args = parser.parse_args(argv)
    if not 0 <= args.duplicate_rate <= 1 or args.concurrency < 1:
        parser.error("--duplicate-rate must be within [0, 1] and --concurrency at least 1")
    table_names = {spec: getattr(args, spec.kind) for spec in tables.ALL if getattr(args, spec.kind)}
    if args.endpoint == "aws" and len(table_names) < len(tables.ALL):
        parser.error("--endpoint aws writes sample events: name new tables for them with "
                     "--task-table and --container-instance-table")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    # Quiet by default: the run prints its own summary; EMF and INFO lines would bury it.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # The local stage's retention: what the run stores never expires while it looks.
    os.environ.setdefault("ECS_STATE_RETENTION_DAYS", str(LOCAL_RETENTION_DAYS))

    events = recent_events(args.events)  # fixed dates, moved to yesterday: young enough to create
    expected = expected_state(events)
    deliveries = plan_deliveries(events, args.duplicate_rate, random.Random(seed))

    with ExitStack() as stack:
        if args.endpoint == "embedded":
            endpoint = stack.enter_context(EmbeddedMoto()).endpoint
            os.environ.update(local_environment(endpoint))
        elif args.endpoint != "aws":
            endpoint = args.endpoint
            for name, value in local_environment(endpoint).items():
                os.environ.setdefault(name, value)
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        else:
            endpoint = "AWS (default credentials and region)"
        from chalicelib import runtime
        from chalicelib.config import from_environment

        stage = from_environment().with_tables(table_names)
        client = runtime.use(runtime.Runtime(stage)).dynamodb()  # the handlers' runtime: the run's settings
        if args.endpoint == "aws":
            refuse_existing_tables(client, table_names.values())
        create_tables(client, {spec: stage.table_name(spec) for spec in tables.ALL}, stage.read_index)

        print(f"ecs-state local run: {len(events)} events from {args.events}, {len(deliveries)} deliveries, "
              f"{args.concurrency} workers, seed {seed}, DynamoDB at {endpoint}")
        started = time.monotonic()
        outcomes, errors = deliver(deliveries, args.concurrency)
        elapsed = time.monotonic() - started
        print(f"outcomes in {elapsed:.2f}s: " + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))
        print("stored state:")
        problems = check_and_show(client, expected)

    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    for problem in problems:
        print(f"WRONG {problem}", file=sys.stderr)
    if errors or problems:
        print(f"FAILED: {len(errors)} deliveries raised, {len(problems)} items are not the latest version", file=sys.stderr)
        return 1
    print(f"OK: every one of {len(expected)} items holds its highest delivered version")
    if args.endpoint == "aws":
        print(f"The run created tables {', '.join(table_names.values())} in your account: delete them when done "
              "(aws dynamodb delete-table --table-name ...).")
    return 0


def refuse_existing_tables(client: Any, names: Any) -> None:
    """Sample events go only into tables this run creates, never into a real one."""
    for name in names:
        try:
            client.describe_table(TableName=name)
        except client.exceptions.ResourceNotFoundException:
            continue
        sys.exit(f"error: table {name} exists: --endpoint aws writes sample events only into tables the run "
                 "creates; name new ones")


if __name__ == "__main__":
    sys.exit(main())
