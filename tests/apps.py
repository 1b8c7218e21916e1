"""The Chalice app as each stage imports it, for chalice.test.Client."""
import importlib.util
import os
import uuid
from typing import Any

from chalice.test import Client

from chalicelib.config import DISABLED, ENABLED, EVENTS_ROUTE_ENV
from tools.local_dynamodb import ROOT

# A stage absent from config.json: only the global variables apply during
# http calls, so the Runtime the fixtures install stays in force.
TEST_STAGE = "test"


def load_app(events_route: bool) -> Any:
    """A fresh import of app.py with POST /events enabled or not, as Chalice imports it per stage:
    app.py reads ECS_STATE_EVENTS_ROUTE when it is imported (chalicelib.config.app_shape)."""
    spec = importlib.util.spec_from_file_location(f"app_{uuid.uuid4().hex}", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get(EVENTS_ROUTE_ENV)
    os.environ[EVENTS_ROUTE_ENV] = ENABLED if events_route else DISABLED
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del os.environ[EVENTS_ROUTE_ENV]
        else:
            os.environ[EVENTS_ROUTE_ENV] = saved
    return module.app


def client_for(app: Any) -> Client:
    return Client(app, stage_name=TEST_STAGE, project_dir=str(ROOT))
