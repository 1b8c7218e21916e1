"""`make bench`'s capacity section: DynamoDB capacity per event, ecs-state beside the docs example.

Every stream (bench/streams.py) is delivered, one event after another, to
each configuration on fresh tables of DynamoDB Local; bench/capacity.py
captures each request's capacity (reported and modelled). A delivery's units
are those of the requests it made, filed under the outcome it has when
delivered in order (created, updated, duplicate, stale).

Then the read index's write units per eight-state task lifecycle, state by
state (``lifecycle_index``): issue 15 allows at most 3 (the previous index's).
"""
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, TextIO

from bench.capacity import (
    PRICES,
    READ_WEIGHT,
    WRITE_UNIT_BYTES,
    Capture,
    Units,
    agreement,
    explained,
    index_entry_size,
    index_keys,
    item_size,
    total,
)
from bench.docs_example import DocsExample
from bench.streams import TASK_STATES, Stream, task_lifecycles
from bench.writers import BASELINE, EXPECTED_LABELS, OURS, settings_restored, use_tables
from chalicelib import runtime
from chalicelib.store import CREATED, DUPLICATE, STALE, UPDATED
from chalicelib.tables import CONTAINER_INSTANCES, TASKS, TableSpec
from tools.local_dynamodb import create_tables

OUTCOMES = (CREATED, UPDATED, DUPLICATE, STALE)
WRITTEN = (CREATED, UPDATED)
REALISTIC = "realistic"
# ours / docs example, weighted units per event, on the realistic stream with the marks off.
TARGETS = {"index on": 1.25, "index off": 1.0}
# The read index's write units per task lifecycle: at most the previous index's 3 (issue 15).
INDEX_UNITS_PER_LIFECYCLE_MAX = 3.0
LIFECYCLES_IN_ORDER = 10  # delivered in order, one state after another, for the by-state figures


class Config(NamedTuple):
    label: str
    writer: str
    read_index: bool
    marks: bool


OURS_INDEX_NO_MARKS = Config("ecs-state, index on, marks off", OURS, True, False)
OURS_INDEX_MARKS = Config("ecs-state, index on, marks on", OURS, True, True)
OURS_BARE_NO_MARKS = Config("ecs-state, index off, marks off", OURS, False, False)
OURS_BARE_MARKS = Config("ecs-state, index off, marks on", OURS, False, True)
DOCS = Config("docs example", BASELINE, False, False)  # the docs' tables have no index
CONFIGS = (OURS_INDEX_NO_MARKS, OURS_INDEX_MARKS, OURS_BARE_NO_MARKS, OURS_BARE_MARKS, DOCS)
TARGET_CONFIGS = {"index on": OURS_INDEX_NO_MARKS, "index off": OURS_BARE_NO_MARKS}


class Delivery(NamedTuple):
    outcome: str  # expected, in order
    billed: Units
    reported: Units  # what DynamoDB Local reported (nothing for a refused write)
    requests: int
    unreported: int  # requests DynamoDB Local reported nothing for
    written_bytes: Optional[int]  # the item its PutItem wrote or tried to write
    stored_bytes: Optional[int]  # the item stored before


def measure(streams: List[Stream], capture: Capture, admin: Any, resource: Any, log: TextIO) -> Dict[str, Any]:
    """Every configuration on every stream; the summaries, the targets and where the gaps come from."""
    with settings_restored():
        return _measure(streams, capture, admin, resource, log)


def _measure(streams: List[Stream], capture: Capture, admin: Any, resource: Any, log: TextIO) -> Dict[str, Any]:
    from chalice.local import LambdaContext

    from app import app

    ours_client = runtime.current().dynamodb()
    capture.attach(ours_client)
    capture.attach(resource.meta.client)
    handlers = {TASKS: app.handler_map["task_state_change"], CONTAINER_INSTANCES: app.handler_map["container_instance_state_change"]}
    context = LambdaContext("ecs-state-bench", memory_size=256)
    mark = capture.mark()
    results: Dict[str, Any] = {"streams": {}, "prices": PRICES, "read_weight": READ_WEIGHT}
    for stream in streams:
        runs: Dict[str, Dict[str, Any]] = {}
        for config in CONFIGS:
            table = f"cap-{stream.table.kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
            create_tables(admin, {stream.table: table}, read_index=config.read_index)
            capture.know_table(table, stream.table.key, [index_keys(stream.table.read_index)] if config.read_index else [])
            if config.writer == OURS:
                _use(stream.table, table, config)
                def deliver(event: Dict[str, Any], handler: Any = handlers[stream.table]) -> str:
                    return handler(event, context)["outcome"]
            else:
                example = DocsExample(resource, {stream.table: table}, floats_as_decimal=stream.table is CONTAINER_INSTANCES)
                deliver = example.handle
            deliveries, wrong = _deliver(stream, deliver, capture, EXPECTED_LABELS[config.writer])
            stored = stored_versions(admin, table, stream.table.key)
            wrong_final = sum(stored.get(key) != version for key, version in stream.latest.items())
            admin.delete_table(TableName=table)
            run = summarise(deliveries)
            run.update(wrong_answers=wrong, wrong_final_items=wrong_final, config=config._asdict())
            run["_deliveries"] = deliveries
            runs[config.label] = run
            print(f"  {stream.name:<20} {config.label:<32} {run['weighted_per_event']:.3f} write units (weighted) per event",
                  file=log, flush=True)
        docs = runs[DOCS.label]["weighted_per_event"]
        for run in runs.values():
            run["ours_per_docs"] = run["weighted_per_event"] / docs
        results["streams"][stream.name] = {"parameters": stream.parameters, "outcomes": stream.outcome_counts(),
                                           "deliveries": len(stream.deliveries), "runs": runs}
    results["lifecycle_index"] = lifecycle_index(
        capture, admin, lambda event: handlers[TASKS](event, context)["outcome"], log)
    results["index_per_lifecycle"] = {
        name: stream["runs"][OURS_INDEX_NO_MARKS.label]["billed"]["write_index"] / stream["parameters"]["lifecycles"]
        for name, stream in results["streams"].items() if "lifecycles" in stream["parameters"]}
    realistic = next(stream for stream in streams if stream.name == REALISTIC)
    for key in ("index on", "index off"):
        results.setdefault("targets", {})[key] = target(results["streams"][REALISTIC]["runs"], key, realistic)
    results["marks"] = marks_benefit(results["streams"])
    results["agreement"] = agreement(capture.since(mark))
    results["returned_item_mismatches"] = capture.returned_item_mismatches
    for stream in results["streams"].values():
        for run in stream["runs"].values():
            del run["_deliveries"]
    return results


def lifecycle_index(capture: Capture, admin: Any, deliver: Callable[[Dict[str, Any]], str], log: TextIO,
                    lifecycles: int = LIFECYCLES_IN_ORDER) -> Dict[str, Any]:
    """The read index's write units per eight-state task lifecycle, by state: each lifecycle delivered
    in order to ecs-state's handler (``deliver``: an event's outcome; read index on, marks off), as
    DynamoDB Local reports them and as the model bills them; and the sizes of the index entries
    written (a write unit covers 1 KB)."""
    from chalicelib.ingest.events import parse_event
    from chalicelib.model.lifecycle import ItemRules

    histories = task_lifecycles(lifecycles, first_task=50_000)
    table = f"cap-lifecycle-{uuid.uuid4().hex[:8]}"
    create_tables(admin, {TASKS: table}, read_index=True)
    index = index_keys(TASKS.read_index)
    capture.know_table(table, TASKS.key, [index])
    _use(TASKS, table, OURS_INDEX_NO_MARKS)
    rules = ItemRules(read_index=True, retention_seconds=runtime.current().config.retention_seconds)
    by_state = {state: {"index_reported": 0.0, "index_billed": 0.0, "table_billed": 0.0, "requests": 0}
                for state in TASK_STATES}
    wrong = 0
    entry_bytes = []
    for history in histories:
        for event in history:
            mark = capture.mark()
            wrong += deliver(event) != (CREATED if event["detail"]["version"] == 1 else UPDATED)
            requests = capture.since(mark)
            figures = by_state[event["detail"]["lastStatus"]]
            figures["index_reported"] += sum(r.reported.write_index for r in requests if r.reported is not None)
            figures["index_billed"] += sum(r.billed.write_index for r in requests)
            figures["table_billed"] += sum(r.billed.write_table for r in requests)
            figures["requests"] += len(requests)
            entry = index_entry_size(capture.tables[table], index, parse_event(event, rules, time.time).item)
            if entry is not None:
                entry_bytes.append(entry)
    stored = stored_versions(admin, table, TASKS.key)
    wrong_final = sum(stored.get(h[-1]["detail"][TASKS.key]) != len(TASK_STATES) for h in histories)
    admin.delete_table(TableName=table)
    for figures in by_state.values():
        for name in ("index_reported", "index_billed", "table_billed", "requests"):
            figures[name] /= lifecycles
    result = {
        "index": TASKS.read_index.name,
        "projected": list(TASKS.read_index.projected),
        "lifecycles": lifecycles,
        "by_state": by_state,
        "per_lifecycle_reported": sum(f["index_reported"] for f in by_state.values()),
        "per_lifecycle_billed": sum(f["index_billed"] for f in by_state.values()),
        "entry_bytes_max": max(entry_bytes),
        "entry_bytes_min": min(entry_bytes),
        "wrong_answers": wrong,
        "wrong_final_items": wrong_final,
    }
    print(f"  read index, {lifecycles} lifecycles in order: {result['per_lifecycle_reported']:.2f} index write units "
          "per lifecycle (reported)", file=log, flush=True)
    return result


def _use(table: TableSpec, name: str, config: Config) -> None:
    use_tables({table: name}, config.marks, read_index=config.read_index)


def _deliver(stream: Stream, deliver: Callable[[Dict[str, Any]], str], capture: Capture,
             labels: Mapping[str, str]) -> "tuple[List[Delivery], int]":
    deliveries = []
    wrong = 0
    for event, outcome in zip(stream.deliveries, stream.expected_outcomes):
        mark = capture.mark()
        answer = deliver(event)
        wrong += answer != labels[outcome]
        requests = capture.since(mark)
        puts = [request for request in requests if request.operation == "PutItem"]
        deliveries.append(Delivery(
            outcome,
            total(request.billed for request in requests),
            total(request.reported for request in requests if request.reported is not None),
            len(requests),
            sum(request.reported is None for request in requests),
            puts[-1].written_bytes if puts else None,
            puts[-1].stored_bytes if puts else None,
        ))
    return deliveries, wrong


def stored_versions(admin: Any, table: str, key: str) -> Dict[str, int]:
    versions = {}
    for page in admin.get_paginator("scan").paginate(TableName=table, ConsistentRead=True,
                                                      ProjectionExpression="#k, version", ExpressionAttributeNames={"#k": key}):
        for item in page["Items"]:
            versions[item[key]["S"]] = int(item["version"]["N"])
    return versions


def summarise(deliveries: List[Delivery]) -> Dict[str, Any]:
    by_outcome = {}
    for outcome in OUTCOMES:
        chosen = [d for d in deliveries if d.outcome == outcome]
        if chosen:
            by_outcome[outcome] = {
                "events": len(chosen),
                "requests": sum(d.requests for d in chosen),
                "billed": _units(total(d.billed for d in chosen)),
                "reported": _units(total(d.reported for d in chosen)),
                "unreported_requests": sum(d.unreported for d in chosen),
                "billed_per_event": _units(total(d.billed for d in chosen).scaled(1 / len(chosen))),
            }
    billed = total(d.billed for d in deliveries)
    per_event = billed.scaled(1 / len(deliveries))
    return {
        "events": len(deliveries),
        "requests_per_event": sum(d.requests for d in deliveries) / len(deliveries),
        "by_outcome": by_outcome,
        "billed": _units(billed),
        "reported": _units(total(d.reported for d in deliveries)),
        "per_event": _units(per_event),
        "weighted_per_event": per_event.weighted,
        "dollars_per_million_events": per_event.dollars * 1e6,
    }


def _units(units: Units) -> Dict[str, float]:
    return units._asdict()


def target(runs: Mapping[str, Dict[str, Any]], key: str, stream: Stream) -> Dict[str, Any]:
    """The target on the realistic stream, marks off, and where ours - docs comes from."""
    config = TARGET_CONFIGS[key]
    ours, docs = runs[config.label], runs[DOCS.label]
    limit = TARGETS[key]
    return {
        "config": config.label,
        "ratio": ours["ours_per_docs"],
        "limit": limit,
        "pass": ours["ours_per_docs"] <= limit + 1e-12,
        "ours_per_event": ours["weighted_per_event"],
        "docs_per_event": docs["weighted_per_event"],
        "excess_per_event": ours["weighted_per_event"] - limit * docs["weighted_per_event"],
        "gap": gap(ours["_deliveries"], docs["_deliveries"]),
        "metadata_bytes": metadata_bytes(stream, config.read_index),
    }


def metadata_bytes(stream: Stream, read_index: bool) -> Dict[str, float]:
    """Mean bytes (name and value, DynamoDB's rules) of each attribute ecs-state adds beyond the
    docs example's item (which has the detail and cw_version), over the stream's written events."""
    from chalicelib.ingest.events import parse_event
    from chalicelib.model.lifecycle import ItemRules

    rules = ItemRules(read_index=read_index, retention_seconds=runtime.current().config.retention_seconds)
    written = [event for event, outcome in zip(stream.deliveries, stream.expected_outcomes) if outcome in WRITTEN]
    sums: Dict[str, float] = {}
    for event in written:
        item = parse_event(event, rules, time.time).item
        for name, value in item.items():
            if name.startswith("cw_") and name != "cw_version":
                sums[name] = sums.get(name, 0.0) + item_size({name: value})
    return {name: value / len(written) for name, value in sums.items()}


def gap(ours: List[Delivery], docs: List[Delivery]) -> Dict[str, Any]:
    """ours - docs, weighted write units per event, split into what causes it (the parts add up).

    Delivery by delivery on the same stream: ``index``: ours' index entries;
    ``item_size``: on written events, ours' table units less the docs example's
    (its items carry the metadata); ``refused``: ours' duplicate and stale
    events, charged the stored item's size; ``docs_reads_*``: the docs example's
    GetItem before each event (negative: ours does not pay it); ``other``:
    whatever else differs (ours' reads, the docs example's index units): 0.
    """
    n = len(ours)
    written = [(o, d) for o, d in zip(ours, docs) if o.outcome in WRITTEN]
    refused = [(o, d) for o, d in zip(ours, docs) if o.outcome not in WRITTEN]
    parts = {
        "index": sum(o.billed.write_index for o in ours) / n,
        "item_size": sum(o.billed.write_table - d.billed.write_table for o, d in written) / n,
        "refused": sum(o.billed.write_table for o, _ in refused) / n,
        "docs_reads_written": -READ_WEIGHT * sum(d.billed.read for _, d in written) / n,
        "docs_reads_refused": -READ_WEIGHT * sum(d.billed.read for _, d in refused) / n,
        "other": (READ_WEIGHT * sum(o.billed.read for o in ours) - sum(d.billed.write_index for d in docs)) / n,
    }
    larger = [(o, d) for o, d in written if o.billed.write_table > d.billed.write_table]
    # How far past the boundary those writes' charged size (the larger of old and new item) goes.
    over = sorted(max(o.written_bytes or 0, o.stored_bytes or 0) % WRITE_UNIT_BYTES or WRITE_UNIT_BYTES for o, _ in larger)
    paid_refusals = [o for o, _ in refused if o.requests]
    return {
        "parts": parts,
        "total": sum(parts.values()),
        "written_events": len(written),
        "refused_events": len(refused),
        "refused_requests": len(paid_refusals),
        "refused_mean_units": (sum(o.billed.write_table for o in paid_refusals) / len(paid_refusals)) if paid_refusals else 0.0,
        "refused_mean_stored_bytes": (sum(o.stored_bytes or 0 for o in paid_refusals) / len(paid_refusals)) if paid_refusals else 0.0,
        "metadata_bytes_mean": sum((o.written_bytes or 0) - (d.written_bytes or 0) for o, d in written) / max(1, len(written)),
        "writes_over_a_boundary": len(larger),
        "bytes_over_the_boundary": {"min": over[0], "median": over[len(over) // 2], "max": over[-1]} if over else None,
        "index_units": sum(o.billed.write_index for o in ours),
    }


def marks_benefit(streams: Mapping[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Per stream and read-index setting: units and requests per event with the marks, and without."""
    benefit = {}
    for name, stream in streams.items():
        for key, (without, with_) in {"index on": (OURS_INDEX_NO_MARKS, OURS_INDEX_MARKS),
                                      "index off": (OURS_BARE_NO_MARKS, OURS_BARE_MARKS)}.items():
            off, on = stream["runs"][without.label], stream["runs"][with_.label]
            benefit[f"{name}, {key}"] = {
                "weighted_per_event_marks_off": off["weighted_per_event"],
                "weighted_per_event_marks_on": on["weighted_per_event"],
                "saved": 1 - on["weighted_per_event"] / off["weighted_per_event"],
                "requests_per_event_marks_off": off["requests_per_event"],
                "requests_per_event_marks_on": on["requests_per_event"],
            }
    return benefit


def checks(results: Mapping[str, Any]) -> Dict[str, bool]:
    runs = [run for stream in results["streams"].values() for run in stream["runs"].values()]
    modelled_and_reported = [count for count in results["agreement"].values() if count.get("both")]
    lifecycle = results["lifecycle_index"]
    per_lifecycle = [lifecycle["per_lifecycle_reported"], lifecycle["per_lifecycle_billed"],
                     *results["index_per_lifecycle"].values()]
    return {
        f"read index: <= {INDEX_UNITS_PER_LIFECYCLE_MAX:g} write units per 8-state task lifecycle": all(
            units <= INDEX_UNITS_PER_LIFECYCLE_MAX + 1e-9 for units in per_lifecycle)
        and lifecycle["wrong_answers"] == 0 and lifecycle["wrong_final_items"] == 0,
        "capacity runs: answers and final state right": all(
            run["wrong_answers"] == 0 and run["wrong_final_items"] == 0 for run in runs
        ),
        "capacity model = DynamoDB Local's report where both exist": bool(modelled_and_reported)
        and explained(results["agreement"]) and results["returned_item_mismatches"] == 0,
    }


# -- printing ---------------------------------------------------------------------------------


def print_section(results: Mapping[str, Any], out: TextIO) -> None:
    prices = results["prices"]
    print("", file=out)
    print(f"capacity per event (DynamoDB capacity only; on-demand {prices['region']}: "
          f"${prices['write_request_unit_per_million_usd']} per million write units, "
          f"${prices['read_request_unit_per_million_usd']} per million read units, {prices['as_of']}; "
          f"weighted = write units + {READ_WEIGHT:g} x read units)", file=out)
    for name, stream in results["streams"].items():
        print("", file=out)
        print(f"{name}: {stream['deliveries']} deliveries ("
              + ", ".join(f"{o} {stream['outcomes'][o]}" for o in OUTCOMES if o in stream["outcomes"]) + "); "
              + _describe(name, stream["parameters"]), file=out)
        header = ["writer", "req/event", "write table", "write index", "read", "weighted", "ours/docs", "$/M events"]
        rows = []
        for label, run in stream["runs"].items():
            per = run["per_event"]
            rows.append([label, f"{run['requests_per_event']:.2f}", f"{per['write_table']:.3f}", f"{per['write_index']:.3f}",
                         f"{per['read']:.3f}", f"{run['weighted_per_event']:.3f}", f"{run['ours_per_docs']:.3f}",
                         f"{run['dollars_per_million_events']:.3f}"])
        print_rows(header, rows, out)
        present = [o for o in OUTCOMES if o in stream["outcomes"]]
        header = ["  by outcome: table+index/read"] + present
        rows = []
        for label, run in stream["runs"].items():
            cells = []
            for outcome in present:
                per = run["by_outcome"][outcome]["billed_per_event"]
                cells.append(f"{per['write_table']:.2f}+{per['write_index']:.2f}/{per['read']:.2f}")
            rows.append(["  " + label] + cells)
        print_rows(header, rows, out)
    print_lifecycle_index(results["lifecycle_index"], results["index_per_lifecycle"], out)
    print("", file=out)
    print("high-water marks (ecs-state; one warm container sees every event here, their best case):", file=out)
    for name, benefit in results["marks"].items():
        print(f"  {name:<32} {benefit['weighted_per_event_marks_off']:.3f} -> {benefit['weighted_per_event_marks_on']:.3f} "
              f"weighted units/event ({benefit['saved']:.0%} less), requests/event "
              f"{benefit['requests_per_event_marks_off']:.2f} -> {benefit['requests_per_event_marks_on']:.2f}", file=out)
    print("", file=out)
    print("capacity model against DynamoDB Local's report (request by request):", file=out)
    for operation, count in results["agreement"].items():
        note = ""
        if count.get("refused"):
            note = (f"; {count['refused']} refused by the condition: DynamoDB Local reports nothing, "
                    "the model charges the stored item's size (at least 1)")
        print(agreement_line(operation, count) + note, file=out)
    print("", file=out)
    for key, result in results["targets"].items():
        print_target(key, result, out)


def print_lifecycle_index(result: Mapping[str, Any], streams: Mapping[str, float], out: TextIO) -> None:
    print("", file=out)
    print(f"read index {result['index']} (projects {', '.join(result['projected']) or 'keys only'}): write units per "
          f"8-state task lifecycle, {result['lifecycles']} lifecycles delivered in order (ecs-state, marks off)", file=out)
    header = ["  state", "index reported", "index billed", "table billed"]
    rows = [[f"  {state}", f"{f['index_reported']:.2f}", f"{f['index_billed']:.2f}", f"{f['table_billed']:.2f}"]
            for state, f in result["by_state"].items()]
    rows.append(["  per lifecycle", f"{result['per_lifecycle_reported']:.2f}", f"{result['per_lifecycle_billed']:.2f}",
                 f"{sum(f['table_billed'] for f in result['by_state'].values()):.2f}"])
    print_rows(header, rows, out)
    print(f"  index entries {result['entry_bytes_min']} to {result['entry_bytes_max']} bytes (100 of them DynamoDB's "
          "overhead): 1 write unit each while under 1 KB", file=out)
    print("  on the streams (index on, marks off, billed): " + ", ".join(
        f"{name} {units:.2f}" for name, units in streams.items()) + " index write units per lifecycle", file=out)


def agreement_line(operation: str, count: Mapping[str, int]) -> str:
    line = (f"  {operation:<13} {count['requests']:>6} requests, {count.get('both', 0):>6} reported and modelled, "
            f"{count.get('agree', 0):>6} agree")
    deviation = count.get("agree_with_local_deviation", 0) - count.get("agree", 0)
    if deviation:
        missed = "empty queries" if operation == "Query" else "keys not found"
        line += (f", {deviation} more once {missed} count 0 as DynamoDB Local counts them "
                 "(production charges them the minimum: amazon-dynamodb-local-samples#7; the bill uses the model)")
    return line


def _describe(name: str, parameters: Mapping[str, Any]) -> str:
    if "consecutive_pairs" in parameters:
        unit = "instances" if "instances" in parameters else "lifecycles"
        count = parameters.get("instances", parameters.get("lifecycles"))
        return (f"{count} {unit} x {parameters['versions_each']} versions, swap rate {parameters['swap_rate']:g} "
                f"({parameters['swapped_pairs']} of {parameters['consecutive_pairs']} consecutive pairs), "
                f"repeat rate {parameters['repeat_rate']:g} ({parameters['repeated_versions']} of {parameters['versions']} versions)")
    return (f"{parameters['lifecycles']} lifecycles x {parameters['versions_each']} versions, all shuffled, repeat rate "
            f"{parameters['repeat_rate']:g} ({parameters['repeated_versions']} of {parameters['versions']} versions)")


def print_target(key: str, result: Mapping[str, Any], out: TextIO) -> None:
    verdict = "PASS" if result["pass"] else "MISS"
    print(f"{verdict}  read {key}: ours/docs {result['ratio']:.3f} <= {result['limit']:g} "
          f"(realistic stream, marks off: {result['ours_per_event']:.3f} vs {result['docs_per_event']:.3f} weighted units/event)",
          file=out)
    gap_ = result["gap"]
    parts = gap_["parts"]
    lines = [
        (parts["index"], f"read index entries: {gap_['index_units']:.0f} units (1 when an item is created, 2 when it "
                         "finishes: delete and put)"),
        (parts["item_size"], f"item size: ours carries {gap_['metadata_bytes_mean']:.0f} bytes more per item ("
                             + ", ".join(f"{name} {size:.0f}" for name, size in result["metadata_bytes"].items())
                             + f"); {gap_['writes_over_a_boundary']} of {gap_['written_events']} writes cross a 1 KB "
                             "boundary the docs example's same item does not"
                             + (" (by {min} to {max} bytes, median {median})".format(**gap_["bytes_over_the_boundary"])
                                if gap_["bytes_over_the_boundary"] else "")),
        (parts["refused"], f"refused conditional writes: {gap_['refused_requests']} duplicate/stale deliveries, each charged "
                           f"the stored item's size ({gap_['refused_mean_stored_bytes']:.0f} bytes: "
                           f"{gap_['refused_mean_units']:.2f} write units)"),
        (parts["docs_reads_refused"], f"the docs example's GetItem for those {gap_['refused_events']} (0.5 read unit = "
                                      f"{READ_WEIGHT / 2:g} write unit each)"),
        (parts["docs_reads_written"], f"the docs example's GetItem before each of its {gap_['written_events']} writes"),
    ]
    if abs(parts["other"]) > 1e-12:
        lines.append((parts["other"], "other"))
    print(f"      ours - docs = {gap_['total']:+.3f} weighted units/event:", file=out)
    for value, text in lines:
        print(f"        {value:+.3f}  {text}", file=out)
    if not result["pass"]:
        print(f"      remainder over the target: {result['excess_per_event']:+.3f} weighted units/event "
              f"(ours would need {result['limit'] * result['docs_per_event']:.3f})", file=out)


def print_rows(header: List[str], rows: List[List[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))),
              file=out)
