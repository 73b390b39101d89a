"""The HTTP endpoint for operators: ``/metrics``, ``/healthz`` (alive), ``/startupz`` (start-up done:
the model load has finished, for a Kubernetes startup probe) and ``/readyz`` (serving)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

#: A readiness check returns the list of reasons the node is not ready (empty: ready).
ReadinessCheck = Callable[[], list[str]]


class OpsServer:
    """A small threaded HTTP server; start() binds and serves in a background thread."""

    def __init__(
        self, host: str, port: int, render_metrics: Callable[[], bytes], readiness: ReadinessCheck,
        started: Callable[[], bool],
    ) -> None:
        handler = _make_handler(render_metrics, readiness, started)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:  # say which of the node's ports it is
            raise OSError(exc.errno, f"HTTP port {host}:{port} (http.host, http.port): {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return self._server.server_address[1]

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _make_handler(render_metrics: Callable[[], bytes], readiness: ReadinessCheck, started: Callable[[], bool]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, render_metrics(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send_json(200, {"status": "alive"})
            elif self.path == "/startupz":
                self._send_json(200 if started() else 503, {"started": started()})
            elif self.path == "/readyz":
                reasons = readiness()
                self._send_json(503 if reasons else 200, {"ready": not reasons, "reasons": reasons})
            else:
                self._send_json(404, {"error": "not found"})

        def _send_json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood the log; stay quiet."""

    return Handler
