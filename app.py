"""ecs-state: the latest state of every ECS task and container instance, in DynamoDB.

The handlers are thin: all the work is in chalicelib.recorder, so they can
be tested, replayed and benchmarked as Lambda calls them.
"""
from chalice import Chalice

from chalicelib import recorder
from chalicelib.tables import CONTAINER_INSTANCES, TASKS

app = Chalice(app_name="ecs-state")


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [TASKS.detail_type]})
def task_state_change(event):
    return recorder.record(event.to_dict(), event.context)


@app.on_cw_event({"source": ["aws.ecs"], "detail-type": [CONTAINER_INSTANCES.detail_type]})
def container_instance_state_change(event):
    return recorder.record(event.to_dict(), event.context)
