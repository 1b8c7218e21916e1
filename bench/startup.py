"""Cold-start figures, each measured in fresh interpreters: import time, first event, zip size."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

from chalicelib.tables import TASKS
from tools.local_dynamodb import ROOT, create_tables, local_environment

# Time `import app` after boto3 and chalice are loaded (both come before the
# handler module in Lambda too: boto3 is in the runtime, chalice in the zip).
# CPU time is the figure held to the target: on a shared machine, wall time
# also counts the time spent waiting for a core.
IMPORT_PROBE = """
import json, time
wall, cpu = time.perf_counter(), time.process_time()
import boto3, chalice
loaded_wall, loaded_cpu = time.perf_counter(), time.process_time()
import app
print(json.dumps({
    "boto3_chalice_ms": (loaded_wall - wall) * 1e3,
    "app_ms": (time.perf_counter() - loaded_wall) * 1e3,
    "app_cpu_ms": (time.process_time() - loaded_cpu) * 1e3,
}))
"""

# The first event of a cold container, from after the import to the result,
# including the client's creation (ecs-state creates it lazily, the docs
# example on every call).
FIRST_EVENT_PROBE = """
import json, sys, time
from chalice.local import LambdaContext
import boto3
from app import app
from bench.docs_example import DocsExample
from bench.workload import concurrent_versions
from chalicelib.tables import TASKS
writer, table, task = sys.argv[1], sys.argv[2], int(sys.argv[3])
event = concurrent_versions(1, first_task=task)[0][0]
context = LambdaContext("ecs-state-bench", 256)
started = time.perf_counter()
if writer == "ecs-state":
    app.handler_map["task_state_change"](event, context)
else:
    DocsExample(boto3.resource("dynamodb"), {TASKS: table}).handle(event, context)
print(json.dumps({"first_event_ms": (time.perf_counter() - started) * 1e3}))
"""


def measure(endpoint: str, runs: int, package: bool, log: TextIO) -> Dict[str, Any]:
    result = import_times(runs)
    print(f"  import app.py beyond boto3 + chalice: {result['import_overhead_ms']:.1f} ms CPU "
          f"({result['import_overhead_wall_ms']:.1f} ms wall; {result['import_overhead_from_source_ms']:.1f} ms CPU "
          f"compiling from source; boto3 + chalice {result['import_boto3_chalice_ms']:.0f} ms)", file=log, flush=True)
    result["first_event_ms"] = first_event(endpoint, runs)
    print("  first event: " + ", ".join(f"{w} {ms:.0f} ms" for w, ms in result["first_event_ms"].items()), file=log, flush=True)
    result["zip_bytes"] = zip_size(log) if package else None
    return result


def import_times(runs: int) -> Dict[str, Any]:
    """Median import figures of ``runs`` fresh interpreters, with bytecode cached and without."""
    cached = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    _probe(IMPORT_PROBE, [], cached)  # writes the .pyc files the next runs read
    with_bytecode = [_probe(IMPORT_PROBE, [], cached) for _ in range(runs)]
    with tempfile.TemporaryDirectory() as empty_cache:
        # An empty, unwritable-in-effect cache: every module is compiled from source,
        # as when a deployment package holds no bytecode for the app's own files.
        from_source = {**cached, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": empty_cache}
        compiled = [_probe(IMPORT_PROBE, [], from_source) for _ in range(runs)]
    return {
        "import_boto3_chalice_ms": statistics.median(run["boto3_chalice_ms"] for run in with_bytecode),
        "import_overhead_ms": statistics.median(run["app_cpu_ms"] for run in with_bytecode),
        "import_overhead_wall_ms": statistics.median(run["app_ms"] for run in with_bytecode),
        "import_overhead_from_source_ms": statistics.median(run["app_cpu_ms"] for run in compiled),
        "import_overhead_runs": with_bytecode,
    }


def first_event(endpoint: str, runs: int) -> Dict[str, float]:
    from chalicelib import runtime

    table = f"bench-first-{uuid.uuid4().hex[:8]}"
    create_tables(runtime.current().dynamodb(), {TASKS: table})
    environment = {**os.environ, **local_environment(endpoint), TASKS.name_env: table}
    figures = {}
    for number, writer in enumerate(("ecs-state", "docs example")):
        times = [
            _probe(FIRST_EVENT_PROBE, [writer, table, str(20_000 + number * 100 + run)], environment)["first_event_ms"]
            for run in range(runs)
        ]
        figures[writer] = statistics.median(times)
    runtime.current().dynamodb().delete_table(TableName=table)
    return figures


def zip_size(log: TextIO) -> Optional[int]:
    """Build the dev stage's package as a deployment would, and return deployment.zip's size."""
    chalice = Path(sys.executable).with_name("chalice")
    with tempfile.TemporaryDirectory() as out:
        completed = subprocess.run(
            [str(chalice), "package", "--stage", "dev", out],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        if completed.returncode != 0:
            print(f"  chalice package failed: {completed.stderr[-1000:]}", file=log)
            return None
        size = (Path(out) / "deployment.zip").stat().st_size
    print(f"  deployment.zip: {size} bytes", file=log, flush=True)
    return size


def _probe(code: str, args: List[str], environment: Any) -> Dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=dict(environment), capture_output=True, text=True, timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"probe failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])
