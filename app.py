"""ecs-state: the latest state of every ECS task and container instance, in DynamoDB.

The handlers and routes are thin: the work is in chalicelib (recorder,
reconciler, api), so it can be tested, replayed and benchmarked as Lambda
calls it.
"""
from chalice import Chalice, IAMAuthorizer, Rate

from chalicelib import recorder, settings
from chalicelib.tables import CONTAINER_INSTANCES, TASKS

app = Chalice(app_name="ecs-state")
# Deployed, every route needs SigV4-signed requests from an IAM principal
# allowed execute-api:Invoke: nothing is readable anonymously. chalice local
# does not check IAM authorizers, so the local stage needs no credentials.
iam = IAMAuthorizer()


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [TASKS.detail_type]})
def task_state_change(event):
    return recorder.record(event.to_dict(), event.context)


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [CONTAINER_INSTANCES.detail_type]})
def container_instance_state_change(event):
    return recorder.record(event.to_dict(), event.context)


# The stage sets the schedule (ECS_STATE_RECONCILE_MINUTES in .chalice/config.json):
# Chalice loads a stage's variables before importing app.py.
@app.schedule(Rate(settings.reconcile_minutes(), unit=Rate.MINUTES))
def reconcile(event):
    from chalicelib import reconciler  # imported here: the event functions' cold starts skip it

    return reconciler.reconcile(event.to_dict(), event.context)


def api():
    """chalicelib.api, imported on the first request: the event functions load this
    module too, and never serve one, so their cold starts do not pay for it."""
    from chalicelib import api as http_api

    return http_api


@app.route("/tasks", methods=["GET"], authorizer=iam)
def list_tasks():
    return api().list_items(TASKS, app.current_request.query_params)


@app.route("/tasks/{id}", methods=["GET"], authorizer=iam)
def get_task(id):
    return api().get_item(TASKS, id, app.current_request.query_params)


@app.route("/container-instances", methods=["GET"], authorizer=iam)
def list_container_instances():
    return api().list_items(CONTAINER_INSTANCES, app.current_request.query_params)


@app.route("/container-instances/{id}", methods=["GET"], authorizer=iam)
def get_container_instance(id):
    return api().get_item(CONTAINER_INSTANCES, id, app.current_request.query_params)


# Test events through the handlers' own code path; only in stages that enable it (local).
if settings.events_route_enabled():

    @app.route("/events", methods=["POST"], authorizer=iam, content_types=settings.EVENTS_CONTENT_TYPES)
    def post_events():
        return api().post_events(app, app.current_request.raw_body)
