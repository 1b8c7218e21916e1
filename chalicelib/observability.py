"""One structured log line and one CloudWatch metric (EMF) per event, through Powertools.

Powertools' decorators expect a plain ``(event, context)`` handler, and a
Chalice handler receives one CloudWatchEvent, so the recorder calls these
explicitly instead.
"""
import os
from typing import Any, Dict

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "ecs-state")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ECSState")

logger = Logger(service=SERVICE)


def count(outcome: str, kind: str) -> None:
    """Emit one count of ``outcome`` for ``kind`` (task or container_instance).

    A fresh EphemeralMetrics per event: Powertools' Metrics shares one buffer
    per process, which is not safe when the local run calls handlers from
    several threads. Setting POWERTOOLS_METRICS_DISABLED=true silences it.
    """
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_dimension(name="kind", value=kind)
    metrics.add_metric(name=outcome, unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()


def log_reconcile(summary: Dict[str, Any], request_id: Any) -> None:
    """A reconcile pass: its summary as one log line, and one metric per count (one EMF line)."""
    failed = bool(summary["errors"])
    (logger.error if failed else logger.info)("reconcile pass", extra=_with_request_id(summary, request_id))
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_dimension(name="kind", value="reconcile")
    counts = {
        "clusters": summary["clusters"],
        "tasks_seen": summary["tasks_seen"],
        "container_instances_seen": summary["container_instances_seen"],
        "created": summary["written"]["created"],
        "updated": summary["written"]["updated"],
        "unchanged": summary["unchanged"],
        "missing": summary["missing"],
        "cleared": summary["cleared"],
        "refused": summary["refused"],
        "deferred": summary["deferred"],
        "incomplete": int(not summary["complete"]),
        "failed": int(failed),
        "ecs_calls": sum(summary["ecs_calls"].values()),
    }
    for name, value in counts.items():
        metrics.add_metric(name=f"reconcile_{name}", unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="reconcile_duration", unit=MetricUnit.Milliseconds, value=summary["duration_ms"])
    metrics.flush_metrics()


def log_result(result: Dict[str, Any], request_id: Any, message: str = "event recorded") -> None:
    logger.info(message, extra=_with_request_id(result, request_id))


def log_failure(message: str, fields: Dict[str, Any], request_id: Any) -> None:
    logger.exception(message, extra=_with_request_id(fields, request_id))


def _with_request_id(fields: Dict[str, Any], request_id: Any) -> Dict[str, Any]:
    return fields if request_id is None else {**fields, "function_request_id": request_id}
