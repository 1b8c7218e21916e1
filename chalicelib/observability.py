"""One structured log line and one CloudWatch metric (EMF) per event, through Powertools.

Powertools' decorators expect a plain ``(event, context)`` handler, and a
Chalice handler receives one CloudWatchEvent, so the recorder, the reconciler
and the read API call a Telemetry explicitly instead. The runtime makes one
per process, named by the stage's service and namespace.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

# One Powertools Logger per service and process: a second one for the same service would
# write through the first one's handler but expose a handler of its own that writes nowhere.
_loggers: Dict[str, Logger] = {}
_loggers_lock = threading.Lock()


def logger_of(service: str) -> Logger:
    with _loggers_lock:
        if service not in _loggers:
            _loggers[service] = Logger(service=service)
        return _loggers[service]


class Telemetry:
    def __init__(self, service: str, namespace: str) -> None:
        self.service = service
        self.namespace = namespace
        self.logger = logger_of(service)

    def count(self, outcome: str, kind: str) -> None:
        """Emit one count of ``outcome`` for ``kind`` (task or container_instance).

        A fresh EphemeralMetrics per event: Powertools' Metrics shares one buffer
        per process, which is not safe when the local run calls handlers from
        several threads. Setting POWERTOOLS_METRICS_DISABLED=true silences it.
        """
        metrics = EphemeralMetrics(namespace=self.namespace, service=self.service)
        metrics.add_dimension(name="kind", value=kind)
        metrics.add_metric(name=outcome, unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()

    def log_reconcile(self, summary: Dict[str, Any], request_id: Optional[str]) -> None:
        """A reconcile pass: its summary as one log line, and one metric per count (one EMF line)."""
        failed = bool(summary["errors"])
        log = self.logger.error if failed else self.logger.info
        log("reconcile pass", extra=_with_request_id(summary, request_id))
        metrics = EphemeralMetrics(namespace=self.namespace, service=self.service)
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

    def log_result(self, result: Dict[str, Any], request_id: Optional[str], message: str = "event recorded") -> None:
        self.logger.info(message, extra=_with_request_id(result, request_id))

    def log_failure(self, message: str, fields: Dict[str, Any], request_id: Optional[str]) -> None:
        """An error with its traceback (call it in an ``except`` block)."""
        self.logger.exception(message, extra=_with_request_id(fields, request_id))

    def warn(self, message: str, fields: Dict[str, Any]) -> None:
        self.logger.warning(message, extra=fields)


def _with_request_id(fields: Dict[str, Any], request_id: Optional[str]) -> Dict[str, Any]:
    return fields if request_id is None else {**fields, "function_request_id": request_id}
