"""The operations endpoint under clients that connect and wait, send garbage or go away (issue 17:
300 idle connections made 309 threads; an aborted request printed a traceback)."""

from __future__ import annotations

import json
import select
import socket
import threading
import urllib.error
import urllib.request

import pytest

from node.ops import http
from node.ops.http import WebServer
from node.ops.probes import ops_routes
from node.testing.loopback import LOOPBACK


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
        assert threading.active_count() - before <= http.WORKERS
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
