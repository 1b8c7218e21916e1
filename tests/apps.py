"""The Chalice app as each stage imports it, for chalice.test.Client."""
import importlib.util
import os
import uuid
from typing import Any
from unittest import mock

from chalice.test import Client

from chalicelib.settings import EVENTS_ROUTE_ENABLED, EVENTS_ROUTE_VARIABLE
from tools.local_dynamodb import ROOT

# A stage absent from config.json: only the global variables apply during
# http calls, so the tables and endpoint the fixtures set stay in force.
TEST_STAGE = "test"


def load_app(events_route: bool) -> Any:
    """A fresh import of app.py with POST /events enabled or not, as Chalice imports it per stage."""
    environment = {EVENTS_ROUTE_VARIABLE: EVENTS_ROUTE_ENABLED} if events_route else {}
    spec = importlib.util.spec_from_file_location(f"app_{uuid.uuid4().hex}", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ, environment):
        if not events_route:
            os.environ.pop(EVENTS_ROUTE_VARIABLE, None)
        spec.loader.exec_module(module)
    return module.app


def client_for(app: Any) -> Client:
    return Client(app, stage_name=TEST_STAGE, project_dir=str(ROOT))
