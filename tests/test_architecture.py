"""The layout's promises, checked on the source and at run time: imports point one way, settings
are read in one module, and one package makes every DynamoDB call (issue 14)."""
import ast
import os
import traceback
from pathlib import Path
from typing import Dict, List, Set

import pytest

from chalicelib import runtime
from chalicelib.tables import CONTAINER_INSTANCES, TASKS
from tests.helpers import EVENT_TIME, iso, record, task_event

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chalicelib"
SHIPPED = sorted(PACKAGE.rglob("*.py")) + [ROOT / "app.py"]

# Each part may import the parts of lower rank, and modules of its own package: never upward.
RANKS = {
    "tables": 0, "errors": 0, "observability": 0,
    "model": 1,
    "config": 2,
    "store": 3,
    "ingest": 4, "reconcile": 4,
    "api": 5,
    "runtime": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Every chalicelib module -> the chalicelib modules it imports, lazy imports in functions included."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        imported: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import; chalicelib imports by full name")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chalicelib"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("chalicelib."))
        graph[name] = {module for module in imported if module not in (name, "chalicelib")}
    return graph


def part(module: str) -> str:
    return module.split(".")[1]


def test_the_graph_sees_lazy_imports_and_every_part():
    graph = import_graph()
    assert "chalicelib.reconcile.passes" in graph["chalicelib.runtime"]  # imported inside a method
    assert {part(module) for module in graph if module != "chalicelib"} == set(RANKS)


def test_chalicelib_has_no_import_cycle():
    graph = import_graph()
    done: Set[str] = set()

    def visit(module: str, path: List[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_imports_point_down_the_layers():
    upward = [
        f"{module} imports {imported}"
        for module, imports in import_graph().items() if module != "chalicelib"
        for imported in imports
        if part(imported) != part(module) and RANKS[part(imported)] >= RANKS[part(module)]
    ]
    assert upward == []


def reads_environment(tree: ast.AST) -> List[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines.extend(node.lineno for alias in node.names if alias.name in ("environ", "getenv", "environb"))
    return lines


def test_only_config_reads_the_environment():
    readers = {
        str(path.relative_to(ROOT)): lines
        for path in SHIPPED
        if (lines := reads_environment(ast.parse(path.read_text(), str(path))))
    }
    assert readers.keys() == {"chalicelib/config.py"}, readers


def test_the_environment_check_finds_a_reader():
    assert reads_environment(ast.parse("import os\nx = os.environ.get('A')\n")) == [2]
    assert reads_environment(ast.parse("from os import getenv\n")) == [1]


@pytest.fixture
def dynamodb_callers(dynamodb, monkeypatch):
    """The chalicelib file that asked for each DynamoDB request the Runtime's client sends."""
    callers: List[str] = []

    def note_caller(model, **kwargs):
        frames = [frame.filename for frame in traceback.extract_stack()]
        ours = [name for name in frames if name.startswith(str(PACKAGE) + os.sep) and "/runtime.py" not in name]
        callers.append(f"{model.name} from {Path(ours[-1]).relative_to(ROOT) if ours else '?'}")

    runtime.current().dynamodb().meta.events.register("before-call.dynamodb", note_caller)
    return callers


def test_every_dynamodb_request_comes_from_the_store(dynamodb_callers):
    """Record, read and list, and a reconcile pass: each request DynamoDB receives was sent by
    chalicelib/store/, whichever part wanted it."""
    event = task_event(version=1)
    record(event)
    cluster = event["detail"]["clusterArn"]
    reads = runtime.current().read_api()
    assert reads.get_item(TASKS, event["detail"]["taskArn"], None)["version"] == 1
    assert len(reads.list_items(TASKS, {"cluster": cluster})["items"]) == 1
    reads.list_items(CONTAINER_INSTANCES, {"cluster": cluster})
    process = runtime.current()
    from chalicelib.reconcile.passes import reconcile

    class NoClusters:  # an ECS account whose one cluster is empty: the pass looks for ghosts in DynamoDB
        def list_clusters(self, **params):
            return {"clusterArns": [cluster]}

        def list_tasks(self, **params):
            return {"taskArns": []}

        def list_container_instances(self, **params):
            return {"containerInstanceArns": []}

        def describe_tasks(self, cluster, tasks, **params):  # the recorded task is gone: marked a ghost
            return {"tasks": [], "failures": [{"arn": arn, "reason": "MISSING"} for arn in tasks]}

    reconcile({"time": iso(EVENT_TIME)}, None, config=process.config, dynamodb=process.dynamodb,
              ecs=NoClusters, telemetry=process.telemetry, now=process.now, monotonic=process.monotonic)
    operations = {caller.split(" from ")[0] for caller in dynamodb_callers}
    assert {"PutItem", "GetItem", "Query", "BatchGetItem", "UpdateItem"} <= operations, dynamodb_callers
    assert [caller for caller in dynamodb_callers if " from chalicelib/store/" not in caller] == []
