"""The operations endpoint under clients that connect and wait, send garbage or go away (issue 17:
300 idle connections made 309 threads; an aborted request printed a traceback)."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from node.ops import http, offload
from node.ops.bodies import read_body
from node.ops.http import WebServer
from node.ops.probes import ops_routes
from node.testing.loopback import LOOPBACK
from tests.helpers import wait_for


@pytest.fixture
def server():
    ops = WebServer(LOOPBACK, 0, ops_routes(lambda: b"qoqnode_up 1\n", lambda: [], lambda: True))
    ops.start()
    yield ops
    ops.stop()


def _raw(port: int, payload: bytes) -> tuple[int, dict]:
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(payload)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_idle_connections_cost_no_thread_and_do_not_block_the_probes(server: WebServer) -> None:
    before = threading.active_count()
    idle = [socket.create_connection((LOOPBACK, server.port)) for _ in range(200)]
    try:
        # the probe is accepted after the 200 idle connections (one accept queue), and answered while every
        # one of them is still open and unanswered: they do not block it
        with urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}/healthz", timeout=5) as answer:
            assert json.load(answer) == {"status": "alive"}
        assert select.select(idle, [], [], 0)[0] == []
        assert threading.active_count() - before <= offload.OPS.threads
    finally:
        for connection in idle:
            connection.close()


def test_a_silent_client_is_answered_408_and_errors_are_json(server: WebServer, monkeypatch) -> None:
    monkeypatch.setattr(http, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with socket.create_connection((LOOPBACK, server.port), timeout=10) as connection:
        data = connection.recv(65536)
    assert b" 408 " in data.split(b"\r\n")[0] and b'"error"' in data
    assert _raw(server.port, b"NONSENSE\r\n\r\n") == (400, {"error": "malformed request line"})
    # an HTTP/1.1 request must name its Host (RFC 9112 section 3.2): the others carry one
    assert _raw(server.port, b"GET /healthz HTTP/1.1\r\n\r\n") == (400, {"error": "malformed request head"})
    assert _raw(server.port, b"POST /metrics HTTP/1.1\r\nHost: node\r\n\r\n")[0] == 405
    assert _raw(server.port, b"GET /nothing HTTP/1.1\r\nHost: node\r\n\r\n") == (404, {"error": "not found"})
    assert _raw(server.port, b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n")[0] == 431
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}/nothing", timeout=5)
    assert refused.value.code == 404


@pytest.mark.parametrize("held_with", [b"", b"GET /metrics HTTP/1.1\r\n"], ids=["silent", "half-a-request"])
def test_the_probes_are_answered_while_max_connections_are_held_open(server: WebServer, held_with: bytes) -> None:
    """Issue 26 item 6: 256 connections held open (silent, or half a request) made /healthz fail, and the
    liveness probe then restarted the node. A new connection takes the place of the one that has waited
    longest for its request: the probes are answered, each time, within a second."""
    held = [socket.create_connection((LOOPBACK, server.port)) for _ in range(http.MAX_CONNECTIONS + 20)]
    try:
        for connection in held:
            connection.sendall(held_with)
        for path, body in (("/healthz", {"status": "alive"}), ("/readyz", {"ready": True, "reasons": []}),
                           ("/startupz", {"started": True})) * 3:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}{path}", timeout=1) as answer:
                assert json.load(answer) == body
    finally:
        for connection in held:
            connection.close()


def test_an_aborted_request_prints_nothing_but_json(server: WebServer, capfd) -> None:
    for _ in range(20):
        with socket.create_connection((LOOPBACK, server.port)) as connection:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}/metrics", timeout=5) as answer:
        assert answer.read() == b"qoqnode_up 1\n"
    err = capfd.readouterr().err
    assert all(line.startswith("{") for line in err.splitlines()), err[-2000:]


def test_a_part_contributes_routes_with_body_limits_and_its_failures_log_no_message(capfd) -> None:
    """Routes beside the probes (as STOW-RS and the feedback API add theirs): a body over the route's limit
    is answered 413, one that stalls the server's body_idle_seconds 408 (and closed at once: the rest of its body
    is never read), an exception 500, all JSON; the exception is logged as JSON with its type, never its message
    (which may quote a patient)."""
    async def echo(request: Request) -> Response:
        return Response(await read_body(request, 1000))

    async def fail(_request: Request) -> Response:
        raise ValueError("DOE^JANE")

    routes = [*ops_routes(lambda: b"", lambda: [], lambda: True),
              Route("/echo", echo, methods=["POST"]), Route("/fail", fail)]
    web = WebServer(LOOPBACK, 0, routes, body_idle_seconds=1)
    web.start()
    try:
        with httpx.Client(base_url=f"http://{LOOPBACK}:{web.port}", timeout=5) as client:
            assert client.post("/echo", content=b"x" * 1000).content == b"x" * 1000
            for declared in (True, False):  # said by Content-Length, or found while reading a chunked body
                too_big = client.post("/echo", content=b"x" * 1001 if declared else iter([b"x" * 600] * 2))
                assert (too_big.status_code, too_big.json()) == (413, {"error": "request body over 1000 bytes"})
            failed = client.get("/fail")
            assert (failed.status_code, failed.json()) == (500, {"error": "internal error: ValueError"})
            assert failed.headers["connection"] == "close"  # uvicorn closes it: the client must not reuse it
            assert client.get("/healthz").json() == {"status": "alive"}
        head = b"POST /echo HTTP/1.1\r\nHost: node\r\nContent-Length: 100\r\n\r\n"
        started = time.monotonic()
        stalled = _raw(web.port, head + b"x" * 10)  # and the other 90 bytes never come
        assert stalled == (408, {"error": "request body paused over 1 s"})
        assert time.monotonic() - started < http.REQUEST_TIMEOUT_SECONDS / 2  # closed with the 408, no timer
    finally:
        web.stop()
    err = capfd.readouterr().err
    events = [json.loads(line) for line in err.splitlines()]  # every line JSON
    assert any(e.get("component") == "uvicorn.error" and e.get("exception", {}).get("type") == "ValueError"
               for e in events), err[-2000:]
    assert "DOE^JANE" not in err


def _answer(connection: socket.socket) -> tuple[int, dict]:
    """One JSON answer read off a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += connection.recv(65536)
    return int(head.split()[1]), json.loads(body)


def test_bodies_in_flight_leave_room_for_the_probes(monkeypatch) -> None:
    """Issue 25's review: with the cap at 4, four POSTs holding their bodies open made /healthz fail with a
    connection reset (a connection in a body was never made room of). At most MAX_BODIES bodies are read at
    once: one more is answered 503 before its body is read (and its connection can then be made room of), the
    probes are answered while the slots are held, and each held body is answered 408 once it has paused."""
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(http, "MAX_BODIES", 3)

    async def echo(request: Request) -> Response:
        return Response(await read_body(request, 1000))

    web = WebServer(LOOPBACK, 0, [*ops_routes(lambda: b"", lambda: [], lambda: True),
                                  Route("/echo", echo, methods=["POST"])], body_idle_seconds=2)
    web.start()
    slots = web.app.state.body_slots
    head = b"POST /echo HTTP/1.1\r\nHost: node\r\nContent-Length: 100\r\n\r\n" + b"x" * 10  # 90 bytes never come
    held = [socket.create_connection((LOOPBACK, web.port), timeout=10) for _ in range(http.MAX_CONNECTIONS)]
    busy = (503, {"error": "3 request bodies are being received; try again later"})
    try:
        for connection in held:
            connection.sendall(head)
        [refused], _, _ = select.select(held, [], [], 5)  # the one body beyond the slots, answered at once
        assert _answer(refused) == busy and slots.reading == 3
        for _ in range(2):  # each in the place of one answered and waiting for its next request
            with socket.create_connection((LOOPBACK, web.port), timeout=10) as another:
                another.sendall(head)
                assert _answer(another) == busy
        for path, body in (("/healthz", {"status": "alive"}), ("/readyz", {"ready": True, "reasons": []}),
                           ("/startupz", {"started": True})) * 2:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{web.port}{path}", timeout=1) as answer:
                assert json.load(answer) == body
        for connection in held:
            if connection is not refused:
                assert _answer(connection) == (408, {"error": "request body paused over 2 s"})
        assert slots.reading == 0
    finally:
        for connection in held:
            connection.close()
        web.stop()


def test_the_port_in_use_is_named_with_its_setting() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        with pytest.raises(OSError, match=r"\(http.host, http.port\)"):
            WebServer(LOOPBACK, taken.getsockname()[1], [])


@pytest.mark.parametrize("first, more, trickle", [
    (b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n", b"", b"GET /healthz HTTP/1.1\r\nHost: node\r\n"),
    (b"POST /healthz HTTP/1.1\r\nHost: node\r\nContent-Length: 100000\r\n\r\n", b"x" * 20_000, b"x" * 20),
], ids=["next-request-head", "body-after-the-answer"])
def test_a_kept_alive_connection_that_trickles_is_closed(server: WebServer, monkeypatch, first: bytes, more: bytes,
                                                         trickle: bytes) -> None:
    """After its answer a connection is kept alive; its next request head, or the rest of a request
    answered before its body was read, has the same time to come in as a first request head (uvicorn's
    keep-alive timer stops at the first byte): a connection trickling a byte at a time is closed,
    unanswered (the rest of a body is not taken for an oversized head), and does not hold its place."""
    monkeypatch.setattr(http, "REQUEST_TIMEOUT_SECONDS", 1.0)
    with socket.create_connection((LOOPBACK, server.port), timeout=10) as connection:
        connection.sendall(first)
        answer = b""
        while not answer.endswith(b"}"):
            answer += connection.recv(65536)
        assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK", b"HTTP/1.1 405 Method Not Allowed")
        connection.sendall(more)
        connection.settimeout(0.2)
        with pytest.raises(TimeoutError):
            connection.recv(65536)  # nothing said, and still open
        connection.settimeout(10)
        started = time.monotonic()
        with pytest.raises(OSError):  # the peer closes: a write fails (broken pipe or reset)
            for byte in trickle * 10:
                connection.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - started < 5


def test_blocking_work_runs_off_the_loop_and_leaves_the_probes_their_threads() -> None:
    """Requests whose blocking work (off_loop) holds every thread of the REQUESTS pool, and more waiting for
    one, keep neither the event loop nor the OPS pool: /healthz and /readyz are answered at once."""
    release, entered = threading.Event(), []

    def hold() -> str:
        entered.append(1)
        release.wait(20)
        return "done"

    async def busy(_request: Request) -> Response:
        return Response(await offload.off_loop(hold))

    web = WebServer(LOOPBACK, 0, [*ops_routes(lambda: b"", lambda: [], lambda: True),
                                  Route("/busy", busy, methods=["GET"])])
    web.start()
    base = f"http://{LOOPBACK}:{web.port}"
    held = offload.REQUESTS.threads + 2
    try:
        with ThreadPoolExecutor(held) as clients:
            answers = [clients.submit(httpx.get, f"{base}/busy", timeout=30) for _ in range(held)]
            wait_for(lambda: len(entered) == offload.REQUESTS.threads, 10, what="the REQUESTS pool busy")
            started = time.monotonic()
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=5).json() == {"ready": True, "reasons": []}
            assert time.monotonic() - started < 2
            assert len(entered) == offload.REQUESTS.threads  # the two more wait for a thread
            release.set()
            assert [answer.result().text for answer in answers] == ["done"] * held
    finally:
        release.set()
        web.stop()
