"""The Chalice app as each stage imports it, for chalice.test.Client."""
import importlib.util
import uuid
from typing import Any

from chalice.test import Client

from chalicelib import runtime
from tools.local_dynamodb import ROOT

# A stage absent from config.json: only the global variables apply during
# http calls, so the Runtime the fixtures install stays in force.
TEST_STAGE = "test"


def load_app(events_route: bool) -> Any:
    """A fresh import of app.py with POST /events enabled or not, as Chalice imports it per stage:
    app.py reads the stage's settings from the process's Runtime when it is imported."""
    spec = importlib.util.spec_from_file_location(f"app_{uuid.uuid4().hex}", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = runtime.current()
    runtime.use(before.replace(events_route=events_route))
    try:
        spec.loader.exec_module(module)
    finally:
        runtime.use(before)
    return module.app


def client_for(app: Any) -> Client:
    return Client(app, stage_name=TEST_STAGE, project_dir=str(ROOT))
