"""The local DynamoDB launchers say clearly what is missing, and clean up after themselves."""
import shutil
import socket

import pytest

from tools import local_dynamodb
from tools.local_dynamodb import DynamoDBLocal, EmbeddedMoto, Unavailable


def test_a_missing_jar_is_named(tmp_path):
    with pytest.raises(Unavailable, match="npm ci"):
        DynamoDBLocal(package=tmp_path).start()


def test_a_missing_java_is_named(monkeypatch):
    monkeypatch.setattr(local_dynamodb.shutil, "which", lambda name: None)
    if not list(local_dynamodb.DYNAMODB_LOCAL_PACKAGE.glob("lib/*/DynamoDBLocal.jar")):
        pytest.skip("the npm package is not installed")
    with pytest.raises(Unavailable, match="java"):
        DynamoDBLocal().start()


@pytest.mark.dynamodb_local
def test_dynamodb_local_listens_on_loopback_and_its_process_ends_on_stop():
    if shutil.which("java") is None:
        pytest.skip("java is missing")
    server = DynamoDBLocal().start()
    process, port = server.process, int(server.endpoint.rsplit(":", 1)[1])
    assert server.endpoint.startswith("http://127.0.0.1:")
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()
    assert process.poll() is not None  # (its port may be reused at once by anyone: not checked)


def test_embedded_moto_serves_on_loopback_and_stops():
    with EmbeddedMoto() as server:
        port = int(server.endpoint.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert server.endpoint.startswith("http://127.0.0.1:")
        thread = server._thread
    thread.join(timeout=5)
    assert not thread.is_alive()
