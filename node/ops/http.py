"""The HTTP endpoint for operators: ``/metrics``, ``/healthz`` (alive), ``/startupz`` (start-up done:
the model load has finished, for a Kubernetes startup probe) and ``/readyz`` (serving).

Served by one asyncio loop on its own thread, so a connection that opens and waits costs a socket, not
a thread: each has :data:`REQUEST_TIMEOUT_SECONDS` to send its request head (at most
:data:`MAX_REQUEST_BYTES`), at most :data:`MAX_CONNECTIONS` are open at once, the answers are computed by
:data:`WORKERS` threads, every error is a JSON body, and one connection carries one request.

The probes are always answered: a connection beyond :data:`MAX_CONNECTIONS` takes the place of the one
that has waited longest for its request head (held open by anyone who can reach the port, they would
otherwise fail the liveness probe, and the node would be restarted), and ``/healthz`` is answered on the
loop itself, behind no scrape.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CONTENT_TYPE_LATEST

from node.ops.logging import get_logger

log = get_logger("http")

#: A readiness check returns the list of reasons the node is not ready (empty: ready).
ReadinessCheck = Callable[[], list[str]]
#: Seconds a connection may take to send its request head.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_BYTES = 16_384
MAX_CONNECTIONS = 256
#: Threads that compute answers (a scrape renders every metric).
WORKERS = 4
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
Answer = tuple[int, bytes, str]


def _json(status: int, body: dict) -> Answer:
    return status, json.dumps(body).encode(), "application/json"


class OpsServer:
    """The operations endpoint; start() binds and serves in a background thread."""

    def __init__(
        self, host: str, port: int, render_metrics: Callable[[], bytes], readiness: ReadinessCheck,
        started: Callable[[], bool],
    ) -> None:
        self._render_metrics, self._readiness, self._started = render_metrics, readiness, started
        self._loop = asyncio.new_event_loop()
        self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="ops-http")
        self._open = 0
        #: The connections still waiting for their request head, oldest first.
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_BYTES))
        except OSError as exc:  # say which of the node's ports it is
            self._loop.close()
            raise OSError(exc.errno, f"HTTP port {host}:{port} (http.host, http.port): {exc.strerror}") from exc
        self._thread = threading.Thread(target=self._loop.run_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._workers.shutdown(wait=False, cancel_futures=True)

    def answer(self, method: str, path: str) -> Answer:
        """The answer to one request (status, body, content type)."""
        if method != "GET":
            return _json(405, {"error": "only GET"})
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, self._render_metrics(), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return _json(200, {"status": "alive"})
        if path == "/startupz":
            started = self._started()
            return _json(200 if started else 503, {"started": started})
        if path == "/readyz":
            reasons = self._readiness()
            return _json(503 if reasons else 200, {"ready": not reasons, "reasons": reasons})
        return _json(404, {"error": "not found"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS and not self._make_room():
            writer.close()
            return
        self._open += 1
        self._waiting[writer] = None
        try:
            answer = await self._read_and_answer(reader, writer)
            if answer is not None:
                status, body, content_type = answer
                writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing to answer
        except Exception:
            log.error("http.request_failed", exc_info=True)
        finally:
            self._waiting.pop(writer, None)
            self._open -= 1
            writer.close()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its request head; False when none waits."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        del self._waiting[oldest]
        oldest.close()  # its read ends (IncompleteReadError): its slot is given back there
        return True

    async def _read_and_answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer | None:
        """Read one request head and compute its answer (None: the client sent nothing)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            self._waiting.pop(writer, None)  # its request is in: no longer the one to make room
        except TimeoutError:
            return _json(408, {"error": f"no request within {REQUEST_TIMEOUT_SECONDS:g} s"})
        except asyncio.LimitOverrunError:
            return _json(431, {"error": f"request head over {MAX_REQUEST_BYTES} bytes"})
        except asyncio.IncompleteReadError:
            return None
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _json(400, {"error": "malformed request line"})
        if parts[:2] == ["GET", "/healthz"]:  # alive: the loop answers, whatever the workers are doing
            return self.answer(parts[0], parts[1])
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, self.answer, parts[0], parts[1])
