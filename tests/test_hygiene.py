"""Connection hygiene (issue 17): connections that say nothing, half an A-ASSOCIATE-RQ, a TLS client
that never sends its ClientHello — none of them locks the PACS out for longer than the association
request time."""

from __future__ import annotations

import select
import socket
import struct
from pathlib import Path

from node.ingest import hygiene
from node.testing.loopback import LOOPBACK
from tests.helpers import make_pki, metric_value, wait_for


def _closed_by_peer(connection: socket.socket, within: float = 5.0) -> bool:
    """Whether the node closes the connection within ``within`` seconds (an A-ABORT may come first)."""
    connection.settimeout(within)
    try:
        while connection.recv(1024):
            continue
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _readable(connection: socket.socket) -> bool:
    """Whether the node has answered or closed the connection (something, or EOF, is there to read)."""
    return bool(select.select([connection], [], [], 0)[0])


def test_silent_and_half_open_connections_free_their_slots(make_node, echoscu) -> None:
    """Eight silent connections and four that sent half an A-ASSOCIATE-RQ, on a node allowing four
    associations: the PACS associates at once (only established associations take a slot), and within
    the association request time they are closed, although none of them was closed by its client."""
    node = make_node(dicom={"max_associations": 4, "association_request_seconds": 1})
    silent = [socket.create_connection((LOOPBACK, node.scp.port)) for _ in range(8)]
    half = []
    for _ in range(4):
        connection = socket.create_connection((LOOPBACK, node.scp.port))
        connection.sendall(struct.pack(">BBI", 0x01, 0x00, 200) + b"\x00\x01")  # 6 of 206 bytes
        half.append(connection)
    try:
        echo = echoscu(node.scp.port)  # at once: silent connections hold no association slot
        assert echo.returncode == 0, echo.stdout + echo.stderr
        wait_for(lambda: hygiene.pending_connections() == 0, timeout=10)  # the node let go of all twelve
        assert all(_closed_by_peer(c) for c in silent + half)
        wait_for(lambda: node.scp.open_associations() == 0, timeout=5)  # and counts none of them (a stop drains none)
    finally:
        for connection in silent + half:
            connection.close()


def test_a_stalled_tls_handshake_blocks_no_other_client(make_node, tmp_path: Path, echoscu) -> None:
    """A TCP connection to the TLS port that never starts its handshake: another client's handshake and
    association go through at once, and the stalled one is closed after the association request time."""
    pki = make_pki(tmp_path)
    node = make_node(dicom={"tls__enabled": "true", "tls__certificate": pki["server_cert"],
                            "tls__private_key": pki["server_key"], "association_request_seconds": 3})
    stalled = socket.create_connection((LOOPBACK, node.scp.port))
    try:
        echo = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(pki["ca"]))
        assert echo.returncode == 0, echo.stderr
        assert not _readable(stalled)  # not behind the stalled handshake: it is still held open, unanswered
        assert _closed_by_peer(stalled, within=6)
    finally:
        stalled.close()


def test_connections_beyond_the_pending_cap_are_closed_at_once(make_node) -> None:
    node = make_node(dicom={"max_pending_connections": 3, "association_request_seconds": 5})
    held = [socket.create_connection((LOOPBACK, node.scp.port)) for _ in range(3)]
    wait_for(lambda: hygiene.pending_connections() == 3)  # accepted, negotiating
    extra = [socket.create_connection((LOOPBACK, node.scp.port)) for _ in range(3)]
    try:
        assert all(_closed_by_peer(c, within=2) for c in extra)  # closed on accept, not after 5 s
        assert not any(_closed_by_peer(c, within=0.5) for c in held)
        metrics = node.metrics.render().decode()
        assert metric_value(metrics, "qoqnode_dicom_associations_rejected_total", 'reason="too_many_pending"') == 3
    finally:
        for connection in held + extra:
            connection.close()
