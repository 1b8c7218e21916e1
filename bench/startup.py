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
IMPORT_PROBE = """
import json, time
started = time.perf_counter()
import boto3, chalice
loaded = time.perf_counter()
import app
done = time.perf_counter()
print(json.dumps({"boto3_chalice_ms": (loaded - started) * 1e3, "app_ms": (done - loaded) * 1e3}))
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
    imports = [_probe(IMPORT_PROBE, [], os.environ) for _ in range(runs + 1)][1:]  # the first compiles .pyc files
    result: Dict[str, Any] = {
        "import_boto3_chalice_ms": statistics.median(run["boto3_chalice_ms"] for run in imports),
        "import_overhead_ms": statistics.median(run["app_ms"] for run in imports),
        "import_overhead_ms_runs": [run["app_ms"] for run in imports],
    }
    print(f"  import app.py: {result['import_overhead_ms']:.1f} ms beyond boto3 + chalice "
          f"({result['import_boto3_chalice_ms']:.0f} ms)", file=log, flush=True)
    result["first_event_ms"] = first_event(endpoint, runs)
    print(f"  first event: " + ", ".join(f"{w} {ms:.0f} ms" for w, ms in result["first_event_ms"].items()), file=log, flush=True)
    result["zip_bytes"] = zip_size(log) if package else None
    return result


def first_event(endpoint: str, runs: int) -> Dict[str, float]:
    from chalicelib import settings

    table = f"bench-first-{uuid.uuid4().hex[:8]}"
    create_tables(settings.dynamodb_client(), {TASKS: table})
    environment = {**os.environ, **local_environment(endpoint), TASKS.name_env: table}
    figures = {}
    for number, writer in enumerate(("ecs-state", "docs example")):
        times = [
            _probe(FIRST_EVENT_PROBE, [writer, table, str(20_000 + number * 100 + run)], environment)["first_event_ms"]
            for run in range(runs)
        ]
        figures[writer] = statistics.median(times)
    settings.dynamodb_client().delete_table(TableName=table)
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
