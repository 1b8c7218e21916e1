"""`make local`: the app under `chalice local --stage local`, on an embedded DynamoDB.

1. Starts moto's DynamoDB where the local stage's AWS_ENDPOINT_URL_DYNAMODB
   (.chalice/config.json) points: 127.0.0.1:8000.
2. Creates the tables there, from chalicelib.tables, named as the stage names them.
3. Runs `chalice local --stage local --no-autoreload` on a free loopback port:
   the read API plus POST /events, which records test events through the
   on_cw_event handlers; and writes the sample events of events/, dated
   yesterday, to out/local-events/ to post there.
Ctrl-C stops both; the embedded DynamoDB keeps nothing.

``--dynamodb-port`` serves the embedded DynamoDB on another port, and
``--dynamodb-endpoint`` uses a running one (e.g. DynamoDB Local) instead. Because
`chalice local` loads the stage's variables over the environment, either runs
chalice from a temporary copy of the project whose local stage points there.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from tools.local_dynamodb import (
    LOOPBACK,
    ROOT,
    EmbeddedMoto,
    Unavailable,
    create_tables,
    free_port,
    stop_process,
    wait_until_listening,
)
from tools.replay import write_recent_event_files

STAGE = "local"
SAMPLE_EVENTS = ROOT / "out" / "local-events"  # the sample events, dated yesterday, to post
CONFIG = ROOT / ".chalice" / "config.json"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_DYNAMODB"
CHALICE = Path(sys.executable).parent / "chalice"
STARTUP_TIMEOUT_SECONDS = 60


def stage_environment(config: Dict[str, Any], stage: str = STAGE) -> Dict[str, str]:
    """The variables Chalice sets for ``stage``: the global ones, then the stage's over them."""
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def loopback_port(endpoint: str) -> int:
    """The port of a loopback endpoint; anything else is refused (DynamoDB Local has no bind address)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or parts.hostname != LOOPBACK or parts.port is None:
        raise SystemExit(f"{endpoint!r}: the local DynamoDB endpoint must be http://{LOOPBACK}:<port>")
    return parts.port


def project_pointing_at(endpoint: str, config: Dict[str, Any], stack: ExitStack) -> Path:
    """A temporary project (links to app.py and chalicelib) whose local stage uses ``endpoint``."""
    project = Path(tempfile.mkdtemp(prefix="ecs-state-local-"))
    stack.callback(shutil.rmtree, project, ignore_errors=True)
    for name in ("app.py", "chalicelib"):
        (project / name).symlink_to(ROOT / name)
    (project / ".chalice").mkdir()
    moved = json.loads(json.dumps(config))
    moved["stages"][STAGE]["environment_variables"][ENDPOINT_VARIABLE] = endpoint
    (project / ".chalice" / "config.json").write_text(json.dumps(moved, indent=2))
    return project


def start_chalice_local(project: Path, port: int) -> subprocess.Popen:
    # Its own session: Ctrl-C reaches this wrapper, which stops chalice by its PID.
    return subprocess.Popen(
        [str(CHALICE), "--project-dir", str(project), "local", "--stage", STAGE, "--no-autoreload",
         "--host", LOOPBACK, "--port", str(port)],
        cwd=project,
        start_new_session=True,
    )


def _shown(path: Path) -> str:
    """A path as typed from the project's folder."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the same clean shutdown as Ctrl-C


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="make local ARGS=...", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="chalice local's port (default: a free one)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dynamodb-port", type=int, default=None,
                       help="serve the embedded DynamoDB on this port instead of the stage's (0: a free one)")
    where.add_argument("--dynamodb-endpoint", default=None,
                       help=f"use this running DynamoDB, e.g. DynamoDB Local at http://{LOOPBACK}:8001")
    parser.add_argument("--sample-events", type=Path, default=SAMPLE_EVENTS, metavar="DIR",
                        help="where to write the sample events, dated yesterday (default: out/local-events)")
    args = parser.parse_args(argv)
    config = json.loads(CONFIG.read_text())
    environment = stage_environment(config)
    stage_port = loopback_port(environment[ENDPOINT_VARIABLE])
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Ctrl-C stops both, however this was started: a shell that starts a command in the background
    # (`make local &`, CI runners) makes it ignore SIGINT, and Python then keeps ignoring it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    with ExitStack() as stack:
        if args.dynamodb_endpoint is not None:
            loopback_port(args.dynamodb_endpoint)
            endpoint = args.dynamodb_endpoint
        else:
            port = stage_port if args.dynamodb_port is None else args.dynamodb_port
            moto = EmbeddedMoto(port)
            try:
                moto.start()
            except OSError as error:
                raise SystemExit(f"cannot serve the embedded DynamoDB on {LOOPBACK}:{port} ({error}); "
                                 "pick another with `make local ARGS=\"--dynamodb-port 0\"`") from None
            stack.callback(moto.stop)
            endpoint = moto.endpoint
        project = ROOT if endpoint == environment[ENDPOINT_VARIABLE] else project_pointing_at(endpoint, config, stack)

        # The stage's own variables, as chalice local sets them: same credentials, same table names.
        os.environ.update({**environment, ENDPOINT_VARIABLE: endpoint})
        from chalicelib import tables
        from chalicelib.config import from_environment
        from chalicelib.store.client import new_client

        stage = from_environment()  # the local stage's table names
        names = {spec: stage.table_name(spec) for spec in tables.ALL}
        create_tables(new_client(), names, stage.read_index)

        api_port = args.port or free_port()
        chalice = start_chalice_local(project, api_port)
        stack.callback(stop_process, chalice)
        try:
            wait_until_listening(chalice, api_port, STARTUP_TIMEOUT_SECONDS)
        except Unavailable as error:
            raise SystemExit(f"chalice local {error}") from None
        url = f"http://{LOOPBACK}:{api_port}"
        # The samples first: whoever reads the banner may post them at once.
        samples = write_recent_event_files(args.sample_events)
        print(f"\necs-state local API: {url}  (chalice local PID {chalice.pid})", flush=True)
        print(f"DynamoDB: {endpoint}, tables " + ", ".join(names.values()))
        print(f"Sample events from events/, dated yesterday (older ones may not create items): {_shown(args.sample_events)}/")
        print(f"Try:  curl --data @{_shown(samples[-1])} {url}/events")
        print(f"      curl '{url}/tasks?cluster=arn:aws:ecs:us-east-1:111122223333:cluster/web-prod'")
        print("Ctrl-C stops both.\n", flush=True)
        try:
            return chalice.wait()
        except KeyboardInterrupt:
            print("\nstopping chalice local and the embedded DynamoDB", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
