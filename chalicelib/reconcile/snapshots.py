"""An ECS API object in the shape of the event ECS sends for the same version.

A snapshot at version V is stored exactly as the event at version V would be,
so the two must not differ where both carry a field. What differs between the
API (DescribeTasks, DescribeContainerInstances) and events, and what is done:

- Timestamps: the API sends epoch seconds (the ECS client keeps them as
  numbers, chalicelib/reconcile/ecs.py), events ISO-8601 strings with milliseconds:
  written as events write them (chalicelib.model.clock.iso_time), in every nested
  object too.
- Fields only the API returns (below) are left out. ``tags`` is never asked
  for; the others are newer API fields events do not carry.
- A container instance gets its ``clusterArn``, which events carry and the
  API's ContainerInstance lacks (it is described within its cluster).
- Fields only events carry cannot be made up: ``updatedAt`` (both kinds) and
  ``accountType`` (container instances) are missing from snapshots. A snapshot
  says where it came from in cw_source, and cw_time says when it was taken.

Then parse_snapshot checks it as an event is checked, and builds the same item.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, Mapping

from chalicelib.model.changes import FROM_RECONCILE, SOURCE_FIELD, StateChange, state_change
from chalicelib.model.clock import iso_time
from chalicelib.model.lifecycle import ItemRules
from chalicelib.tables import TableSpec

# A snapshot is stored in the events' format, whose envelope version is "0".
SNAPSHOT_FORMAT_VERSION = "0"

API_ONLY_TASK_FIELDS = frozenset(
    {"tags", "inferenceAccelerators", "fargateEphemeralStorage", "trustedExecutionSummary", "healthStatus"}
)
API_ONLY_CONTAINER_FIELDS = frozenset({"neuronDeviceIds", "gpuSharingStrategy", "healthStatus"})
API_ONLY_CONTAINER_INSTANCE_FIELDS = frozenset({"capacityProviderName", "tags", "healthStatus", "gpuDevices"})

# Members of the ECS API's shapes that are timestamps (botocore's ecs model),
# wherever they appear in a task or container instance.
TIMESTAMP_FIELDS = frozenset(
    {
        "connectivityAt", "createdAt", "executionStoppedAt", "pullStartedAt", "pullStoppedAt", "startedAt",
        "stoppedAt", "stoppingAt", "registeredAt", "lastStartedAt", "lastStatusChange", "lastUpdated",
    }
)


def task_detail(task: Mapping[str, Any]) -> Dict[str, Any]:
    """A DescribeTasks task as the detail of its ECS Task State Change event."""
    detail = _event_shaped(task, API_ONLY_TASK_FIELDS)
    if isinstance(detail.get("containers"), list):
        detail["containers"] = [
            _event_shaped(container, API_ONLY_CONTAINER_FIELDS) if isinstance(container, dict) else container
            for container in detail["containers"]
        ]
    return detail


def container_instance_detail(instance: Mapping[str, Any], cluster_arn: str) -> Dict[str, Any]:
    """A DescribeContainerInstances instance as the detail of its state change event."""
    detail = _event_shaped(instance, API_ONLY_CONTAINER_INSTANCE_FIELDS)
    detail["clusterArn"] = cluster_arn
    return detail


def _event_shaped(api_object: Mapping[str, Any], api_only: FrozenSet[str]) -> Dict[str, Any]:
    return {name: _iso_times(name, value) for name, value in api_object.items() if name not in api_only}


def _iso_times(name: str, value: Any) -> Any:
    if name in TIMESTAMP_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return iso_time(value)
    if isinstance(value, dict):
        return {member: _iso_times(member, inner) for member, inner in value.items()}
    if isinstance(value, list):
        return [_iso_times(name, element) for element in value]
    return value


def parse_snapshot(table: TableSpec, detail: Mapping[str, Any], taken_at: float, rules: ItemRules) -> StateChange:
    """The change a snapshot in the events' shape stores, checked as its event would be:
    cw_time is when it was taken."""
    metadata = {"cw_version": SNAPSHOT_FORMAT_VERSION, "cw_time": iso_time(taken_at), SOURCE_FIELD: FROM_RECONCILE}
    return state_change(table, detail, metadata, taken_at, rules)
