"""A real HTTP proxy for fault injection between an MLflow client and a real MLflow server, on 127.0.0.1.

Every request is forwarded to the server unless a rule for its path says otherwise:

* ``delay``: wait ``seconds`` before forwarding (a busy server);
* ``status``: answer ``code`` without forwarding (a failing server or load balancer);
* ``hang``: send nothing for ``seconds``, then drop the connection (a hung server);
* ``drop_after_forward``: forward the request (the server applies it), then drop the connection before
  answering (a connection lost on the way back).

Rules match by path prefix and may be limited to the first ``times`` matching requests. ``hits`` counts
requests per path. The proxy stops by itself when the test's fixture ends (``close()``); every wait is
bounded, so a request loop against it always ends.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Longest a ``hang`` rule holds a connection, whatever it asks for.
MAX_HANG_S = 120.0


@dataclass
class Rule:
    prefix: str
    action: str
    seconds: float = 0.0
    code: int = 503
    times: int | None = None  # None: every matching request


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.hits: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------------------- rules

    def add(self, prefix: str, action: str, *, seconds: float = 0.0, code: int = 503, times: int | None = None) -> None:
        if action not in ("delay", "status", "hang", "drop_after_forward"):
            raise ValueError(f"unknown fault {action!r}")
        with self._lock:
            self._rules.append(Rule(prefix, action, seconds, code, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _rule_for(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if path.startswith(rule.prefix) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    # -------------------------------------------------------------------------------------- serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.hits[path] += 1
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        rule = self._rule_for(path)
        if rule is not None and rule.action == "status":
            payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected fault"}'
            handler.send_response(rule.code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if rule is not None and rule.action == "hang":
            self._closing.wait(min(rule.seconds, MAX_HANG_S))
            self._drop(handler)
            return
        if rule is not None and rule.action == "delay":
            self._closing.wait(min(rule.seconds, MAX_HANG_S))
        status, headers, payload = self._forward(handler.command, handler.path, handler.headers.items(), body)
        if rule is not None and rule.action == "drop_after_forward":
            self._drop(handler)
            return
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            forwarded = {k: v for k, v in headers if k.lower() not in ("host", "connection", "content-length")}
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    @staticmethod
    def _drop(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def wait_until(condition: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``timeout_s`` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
