"""ecs-state: the latest state of every ECS task and container instance, in DynamoDB.

The handlers and routes are thin: they call the process's Runtime
(chalicelib/runtime.py), which holds the stage's settings, read once, and the
parts built from them (recorder, reconciler, read API). Importing this module
makes no AWS call: Chalice loads the stage's variables before it imports it,
and the settings it reads here (the schedule, the local route) are checked
then, so a bad one fails `chalice deploy` and `chalice package` by name.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from chalice import Chalice, IAMAuthorizer, Rate
from chalice.app import CloudWatchEvent, Request

from chalicelib import config, runtime
from chalicelib.model import arns
from chalicelib.tables import CONTAINER_INSTANCES, TASKS

# Chalice's own logger is named by the app, as Powertools' is by the service (both
# "ecs-state"): Chalice's handler would print every line of the Telemetry a second
# time, as plain text. Powertools' handler is the one (chalicelib/observability.py).
app = Chalice(app_name="ecs-state", configure_logs=False)
# Deployed, every route needs SigV4-signed requests from an IAM principal
# allowed execute-api:Invoke: nothing is readable anonymously. chalice local
# does not check IAM authorizers, so the local stage needs no credentials.
iam = IAMAuthorizer()
shape = config.app_shape()  # the schedule and the routes; the other settings on first use


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [TASKS.detail_type]})
def task_state_change(event: CloudWatchEvent) -> Dict[str, Any]:
    return runtime.current().record(event.to_dict(), event.context)


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [CONTAINER_INSTANCES.detail_type]})
def container_instance_state_change(event: CloudWatchEvent) -> Dict[str, Any]:
    return runtime.current().record(event.to_dict(), event.context)


# The stage sets the schedule (ECS_STATE_RECONCILE_MINUTES in .chalice/config.json).
@app.schedule(Rate(shape.reconcile_minutes, unit=Rate.MINUTES))
def reconcile(event: CloudWatchEvent) -> Dict[str, Any]:
    return runtime.current().reconcile(event.to_dict(), event.context)


def request() -> Request:
    """The request a route is answering (Chalice sets it before calling the route)."""
    assert app.current_request is not None
    return app.current_request


def query() -> Optional[Mapping[str, str]]:
    return request().query_params


def home() -> Optional[str]:
    """The stage's own account and region (from the function's ARN), where a cluster name is taken."""
    return arns.home_of(getattr(app.lambda_context, "invoked_function_arn", None))


@app.route("/tasks", methods=["GET"], authorizer=iam)
def list_tasks() -> Any:
    return runtime.current().read_api().list_items(TASKS, query(), home())


@app.route("/tasks/{id}", methods=["GET"], authorizer=iam)
def get_task(id: str) -> Any:
    return runtime.current().read_api().get_item(TASKS, id, query(), home())


@app.route("/container-instances", methods=["GET"], authorizer=iam)
def list_container_instances() -> Any:
    return runtime.current().read_api().list_items(CONTAINER_INSTANCES, query(), home())


@app.route("/container-instances/{id}", methods=["GET"], authorizer=iam)
def get_container_instance(id: str) -> Any:
    return runtime.current().read_api().get_item(CONTAINER_INSTANCES, id, query(), home())


@app.route("/clusters", methods=["GET"], authorizer=iam)
def list_clusters() -> Any:
    return runtime.current().read_api().list_clusters(query())


# Test events through the handlers' own code path; only in stages that enable it (local).
if shape.events_route:
    from chalicelib.api import events_route

    @app.route("/events", methods=["POST"], authorizer=iam, content_types=events_route.CONTENT_TYPES)
    def post_events() -> Any:
        process = runtime.current()
        return events_route.post_events(app, request().raw_body, process.config.rules, process.now)
