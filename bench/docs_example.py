"""The baseline: the ECS Developer Guide's "Handling events" example Lambda, as an algorithm.

For each event it reads the stored item (GetItem), then writes the whole record
(PutItem, unconditional) if nothing is stored or the stored version is lower.
Read and write are two requests with nothing tying them together, so two
concurrent invocations can both read version 3, and the later PutItem wins
even when it carries the older version: a lost update.

Written from the docs' description, with three deliberate differences, all in
its favour or neutral:
- the boto3 resource is created once per process and passed in (the docs create
  it on every invocation, which costs tens of milliseconds per event);
- it prints nothing (the docs print every event);
- it returns which branch it took, so the benchmark can check it.
Floats: boto3's resource serializer refuses Python floats (TypeError), which
crashes the docs example on container instance events (doubleValue). The
throughput workload is task events, which carry none, so nothing is converted
there. The capacity section's container-instance stream passes
``floats_as_decimal=True``: the event is read back with every float as the
Decimal of its JSON text (``json.loads(json.dumps(event), parse_float=Decimal)``),
as a fixed docs example would, so it stores 1.1 as 1.1, like ecs-state.
"""
import json
from decimal import Decimal
from typing import Any, Dict, Mapping, Tuple

from chalicelib.tables import ALL, TableSpec

SAVED_NEW = "saved_new"
UPDATED = "updated"
IGNORED = "ignored"  # the stored version is the same or newer


class DocsExample:
    def __init__(self, resource: Any, table_names: Mapping[TableSpec, str], floats_as_decimal: bool = False) -> None:
        # detail-type -> (key attribute, boto3 Table), like the docs' if/elif.
        self._tables: Dict[str, Tuple[str, Any]] = {
            spec.detail_type: (spec.key, resource.Table(table_names[spec])) for spec in ALL if spec in table_names
        }
        self._floats_as_decimal = floats_as_decimal

    def handle(self, event: Mapping[str, Any], context: Any = None) -> str:
        if self._floats_as_decimal:  # the fix the docs example needs for container instance events
            event = json.loads(json.dumps(event), parse_float=Decimal)
        if event["source"] != "aws.ecs":
            raise ValueError("Function only supports input from events with a source type of: aws.ecs")
        if event["detail-type"] not in self._tables:
            raise ValueError("detail-type for event is not a supported type. Exiting without saving event.")
        key_name, table = self._tables[event["detail-type"]]
        event_id = event["detail"][key_name]

        new_record = {"cw_version": event["version"]}
        new_record.update(event["detail"])
        # (The docs then move event["status"] to "current_status"; the envelope
        # never has a "status", so that step never runs and is left out.)

        saved_event = table.get_item(Key={key_name: event_id})
        if "Item" in saved_event:
            if saved_event["Item"]["version"] < event["detail"]["version"]:
                table.put_item(Item=new_record)
                return UPDATED
            return IGNORED
        table.put_item(Item=new_record)
        return SAVED_NEW
