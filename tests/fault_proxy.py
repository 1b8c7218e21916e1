"""A loopback HTTP proxy in front of DynamoDB Local that fails requests on demand.

Armed with ``fail_next(count, fault)``, it answers the next ``count`` requests
with the fault instead of (or, for LOST_RESPONSE, after) forwarding them:
- THROTTLE: HTTP 400 ThrottlingException, as DynamoDB answers when throttled;
- SERVER_ERROR: HTTP 500 InternalServerError;
- LOST_RESPONSE: forwards (DynamoDB applies the request) then answers 500,
  as when a response is lost on the way back;
- HANG: never answers, until the proxy stops (a read timeout for the client).
Everything else is forwarded unchanged. Only 127.0.0.1 is served.
"""
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Tuple
from urllib.parse import urlsplit

from tools.local_dynamodb import LOOPBACK

THROTTLE, SERVER_ERROR, LOST_RESPONSE, HANG = "throttle", "server error", "lost response", "hang"
_ERRORS = {
    THROTTLE: (400, "ThrottlingException", "Rate of requests exceeds the allowed throughput (injected)"),
    SERVER_ERROR: (500, "InternalServerError", "Internal server error (injected)"),
    LOST_RESPONSE: (500, "InternalServerError", "Internal server error after the write (injected)"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.seen: List[Tuple[str, str]] = []  # (operation, what the proxy did) per request
        self._faults: List[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self.endpoint = f"http://{LOOPBACK}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def fail_next(self, count: int, fault: str) -> None:
        with self._lock:
            self._faults = [fault] * count

    def done(self, operation: str = "PutItem") -> List[str]:
        """What the proxy did with each request for ``operation``, in order."""
        return [action for op, action in self.seen if op == operation]

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> str:
        with self._lock:
            return self._faults.pop(0) if self._faults else ""

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> Tuple[int, List[Tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers={k: v for k, v in headers.items() if k.lower() != "connection"})
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler_class(self) -> Any:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                fault = proxy._next_fault()
                proxy.seen.append((operation, fault or "forwarded"))
                if fault == HANG:
                    proxy._stopping.wait()
                    return
                if fault == LOST_RESPONSE:
                    proxy._forward("POST", self.path, self.headers, body)
                if fault:
                    status, code, message = _ERRORS[fault]
                    payload = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
                    self._answer(status, [("Content-Type", "application/x-amz-json-1.0")], payload.encode())
                    return
                self._answer(*proxy._forward("POST", self.path, self.headers, body))

            def _answer(self, status: int, headers: List[Tuple[str, str]], payload: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers:
                        if name.lower() not in _HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its read timed out): nothing to answer

            def log_message(self, *args: Any) -> None:
                pass  # the test asserts on proxy.seen instead

        return Handler
