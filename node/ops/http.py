"""The node's one HTTP server: a Starlette application on uvicorn, on its own thread and event loop.

The node's parts contribute Starlette routes (the ops probes of :mod:`node.ops.probes`, STOW-RS and the
feedback API); :class:`WebServer` serves them all on one port. A connection that opens and waits
costs a socket, not a thread. uvicorn is kept as it is but for one small protocol subclass,
:class:`GuardedH11Protocol`, which adds what uvicorn lacks:

- each connection has :data:`REQUEST_TIMEOUT_SECONDS` to send its request head (uvicorn has no such
  timer: a silent client would hold its connection for ever) — then it is answered 408;
- a request head is at most :data:`MAX_REQUEST_BYTES` (431), a malformed one is answered 400, both
  with a JSON body (uvicorn's are plain text);
- at most :data:`MAX_CONNECTIONS` are open; one beyond takes the place of the connection that has
  waited longest for its request head (uvicorn's ``limit_concurrency`` answers every request 503 once
  the cap is reached: anyone who can reach the port could then fail the liveness probe);
- at most :data:`MAX_BODIES` request bodies are read at once (:class:`BodySlots`, taken by
  :func:`node.ops.bodies.limited_stream`); one more is answered 503 before its first byte is read.

Together the last two keep the probes answered: a connection is either waiting for a request head (and
can be made room of), or reading one of at most :data:`MAX_BODIES` bodies, or being answered (briefly), so
a quarter of the cap is always left to the probes and new requests. A connection reading a body is never
evicted: it has been let in by its route (STOW-RS and the feedback API authorize a bearer token before
reading a byte of the body, so a stranger cannot hold a body slot at all), and evicting it would break
an upload that is going at a normal speed (a 600 MB STOW-RS instance takes seconds to minutes); a body
that pauses the server's ``body_idle_seconds`` (``http.body_idle_seconds``) is answered 408 and its slot given
back. The
other choices were weaker: closing only bodies stalled beyond the pause timeout leaves the probes
unanswered for that long; evicting the slowest body needs a speed threshold that an honest slow link
can fall under.

Every other error is a JSON body too (:func:`json_errors`); uvicorn's own logging goes through the
node's JSON logging (no handlers of its own, no access log).
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ExceptionHandler
from uvicorn.protocols.http.h11_impl import H11Protocol

from node.ops.json_error import json_error

#: Seconds a connection may take to send its request head.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_BYTES = 16_384
MAX_CONNECTIONS = 256
#: Request bodies read at once on one server; the rest of :data:`MAX_CONNECTIONS` stays for the probes.
MAX_BODIES = MAX_CONNECTIONS * 3 // 4
#: Seconds a client refused for want of a body slot is asked to wait (``Retry-After``).
BODY_RETRY_SECONDS = 5
#: Seconds a request body may pause before it is answered 408, unless the server is given its own
#: (``WebServer(body_idle_seconds=)``; the default of ``http.body_idle_seconds``).
BODY_IDLE_SECONDS = 30.0
#: Seconds :meth:`WebServer.stop` lets requests in flight finish.
STOP_SECONDS = 5.0


def error_bytes(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection (for errors answered
    before any request reached the application)."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class _Waiting:
    """The connections of one server still waiting for a request head, oldest first."""

    def __init__(self) -> None:
        self.protocols: dict[GuardedH11Protocol, None] = {}

    def make_room(self) -> bool:
        """Close the connection that has waited longest; False when none waits."""
        if not self.protocols:
            return False
        oldest = next(iter(self.protocols))
        oldest.forget_head()
        oldest.transport.close()
        return True


class BodySlots:
    """The request bodies one server is reading, at most ``limit`` (all on the server's one event loop: a plain
    counter), each answered 408 once it pauses ``idle_seconds``."""

    def __init__(self, limit: int, idle_seconds: float = BODY_IDLE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self.reading = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot while a body is read; 503 (with ``Retry-After``) when none is free."""
        if self.reading >= self.limit:
            raise HTTPException(503, f"{self.limit} request bodies are being received; try again later",
                                headers={"Retry-After": str(BODY_RETRY_SECONDS)})
        self.reading += 1
        try:
            yield
        finally:
            self.reading -= 1


def body_slots(request: Request) -> BodySlots:
    """The body slots of the server that received ``request``."""
    slots = request.app.state.body_slots
    assert isinstance(slots, BodySlots)
    return slots


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head timer and size limit, JSON errors and the connection cap
    that makes room (see the module's docstring)."""

    def __init__(self, *args: Any, waiting: _Waiting, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = waiting
        self._head_timer: asyncio.TimerHandle | None = None
        self._request_line = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        """Count the connection against the cap (making room if need be) and start its head timer."""
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS and not self._waiting.make_room():
            transport.close()
            return
        self._await_head()

    def _await_head(self) -> None:
        self._waiting.protocols[self] = None
        self._head_timer = self.loop.call_later(REQUEST_TIMEOUT_SECONDS, self._head_timed_out)

    def forget_head(self) -> None:
        """No longer wait for a request head (it came, or the connection is closing)."""
        self._waiting.protocols.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.forget_head()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, reason, message))
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None:  # after an answer: closed as idle, no unasked-for answer
            self.forget_head()
            self.transport.close()
        else:
            self._refuse(408, "Request Timeout", f"no request within {REQUEST_TIMEOUT_SECONDS:g} s")

    def data_received(self, data: bytes) -> None:
        """Refuse a request head over :data:`MAX_REQUEST_BYTES`; note when one has come in whole."""
        if self._head_timer is not None and self.conn.their_state is h11.IDLE:  # not the rest of a body
            pending = self.conn.trailing_data[0] + data
            if len(pending) > MAX_REQUEST_BYTES and pending.find(b"\r\n\r\n", 0, MAX_REQUEST_BYTES) < 0:
                self._refuse(431, "Request Header Fields Too Large", f"request head over {MAX_REQUEST_BYTES} bytes")
                return
            self._request_line = pending.split(b"\r\n", 1)[0][:MAX_REQUEST_BYTES]
        cycle = self.cycle
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not cycle:  # a request head came in whole
            self.forget_head()

    def send_400_response(self, msg: str) -> None:
        """A malformed request, answered with a JSON body."""
        first_line = self._request_line.split()
        line_ok = len(first_line) == 3 and first_line[2].startswith(b"HTTP/")
        self._refuse(400, "Bad Request", "malformed request head" if line_ok else "malformed request line")

    def on_response_complete(self) -> None:
        """A kept-alive connection waits for its next request head (or the rest of a request answered
        before its body was read) under the same timer and cap."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:  # no pipelined request started
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Give the connection's place back."""
        self.forget_head()
        super().connection_lost(exc)


def error_detail(exc: HTTPException) -> str:
    """What an HTTP error says: its own detail, or Starlette's bare reason phrase in lower case ("not found")."""
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else ""
    return exc.detail.lower() if exc.detail == phrase else exc.detail


async def _json_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_error(exc.status_code, error_detail(exc), exc.headers)


async def _json_server_error(_request: Request, exc: Exception) -> Response:
    # Starlette raises the exception on to uvicorn after this answer, and uvicorn then closes the connection:
    # said in the answer, so that a kept-alive client opens a new one instead of sending into the closing one.
    return json_error(500, f"internal error: {type(exc).__name__}", {"Connection": "close"})


def json_errors() -> dict[Any, ExceptionHandler]:
    """The default exception handlers: ``{"error": "not found"}`` and the like, and a 500 naming only
    the exception's type."""
    return {HTTPException: _json_http_error, Exception: _json_server_error}


def _bind(host: str, port: int, config_keys: str) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as exc:  # say which of the node's ports it is
        raise OSError(exc.errno, f"HTTP port {host}:{port} ({config_keys}): {exc.strerror}") from exc


class WebServer:
    """One Starlette application of the given routes on uvicorn; binds at construction, :meth:`start`
    serves on a thread of its own (one event loop), :meth:`stop` ends it. ``max_bodies``: the request bodies
    read at once (:data:`MAX_BODIES`, or fewer where each body may be large; never more: the probes' room);
    ``body_idle_seconds``: how long one may pause before it is answered 408 (``http.body_idle_seconds``)."""

    def __init__(
        self, host: str, port: int, routes: Sequence[BaseRoute], *, config_keys: str = "http.host, http.port",
        exception_handlers: Mapping[Any, ExceptionHandler] | None = None, name: str = "http",
        ssl: Mapping[str, Any] | None = None, max_bodies: int | None = None,
        body_idle_seconds: float = BODY_IDLE_SECONDS,
    ) -> None:
        self.app = Starlette(routes=list(routes), exception_handlers=exception_handlers or json_errors())
        self.app.state.body_slots = BodySlots(MAX_BODIES if max_bodies is None else min(max_bodies, MAX_BODIES),
                                              body_idle_seconds)
        self._socket = _bind(host, port, config_keys)
        protocol = functools.partial(GuardedH11Protocol, waiting=_Waiting())
        config = uvicorn.Config(
            self.app, http=protocol, lifespan="off", log_config=None,  # type: ignore[arg-type]  # a partial: called as the class
            access_log=False, server_header=False, timeout_graceful_shutdown=int(STOP_SECONDS), ws="none",
            proxy_headers=False,  # the client is the peer of the connection, whatever X-Forwarded-For says
            **(ssl or {}))  # HTTPS: uvicorn's ssl_certfile, ssl_keyfile, ssl_ca_certs, ssl_cert_reqs
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return int(self._socket.getsockname()[1])

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to :data:`STOP_SECONDS`), close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_SECONDS + 5)
        self._socket.close()
