"""Connection hygiene for the storage SCP: a peer that connects and says nothing, or half of an
A-ASSOCIATE-RQ, or never starts its TLS handshake, must not hold a slot or a thread for long; an idle
association must cost next to no CPU.

- **Slots for associations, not connections**: ``dicom.max_associations`` counts established
  associations only (and the one being negotiated); connections still negotiating have their own cap,
  ``dicom.max_pending_connections``, beyond which new connections are closed at once. So silent
  connections cannot refuse the PACS, and cannot pile up threads either.
- **Association request timer (ARTIM)**: from the TCP connection until the association is established,
  the connection's socket and pynetdicom's ARTIM timer allow ``association_request_seconds`` of
  silence; then the connection is closed and its slot freed. Once established, the socket allows
  ``timeout_seconds`` (the network timeout) between reads.
- **TLS off the accept thread**: the server accepts the TCP connection only; the handshake runs in
  the connection's own thread with the same timer, so a client that never sends its ClientHello
  delays nobody else.
- **Every connection ends counted**: however an association's thread ends (pynetdicom closes some sockets
  without its connection-closed event: no A-ASSOCIATE-RQ in time, a DUL thread gone), the node's close
  handling runs; at stop, connections still negotiating are closed rather than drained.
- **PDUs no longer than announced**: a P-DATA-TF PDU longer than the maximum length the node announced
  (``dicom.max_pdu_bytes``), or any other PDU over :data:`CONTROL_PDU_BYTES`, is refused with an A-ABORT
  as its header arrives: pynetdicom would read it whole into memory first.
- **Idle CPU**: pynetdicom's DUL loop sleeps 0.1 ms between polls while data flows (the node's setting,
  for throughput); once the association has been quiet for :data:`QUIET_SECONDS` it waits on the
  socket instead, up to :data:`IDLE_POLL_SECONDS`, and incoming data wakes it at once.

The seams these go through (pynetdicom's AE, association server and DUL) are in
:mod:`node.ingest.pynetdicom_patches`.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import ThreadedAssociationServer

from node.ingest.pynetdicom_patches import ae, dul, transport
from node.ingest.pynetdicom_patches import association as association_seam

#: DUL poll interval while data flows, and once quiet.
BUSY_POLL_SECONDS = 0.0001
IDLE_POLL_SECONDS = 0.5
QUIET_SECONDS = 0.25
#: The longest PDU other than P-DATA-TF (an A-ASSOCIATE-RQ with hundreds of presentation contexts is tens of KB).
CONTROL_PDU_BYTES = 1 << 20
P_DATA_TF = 0x04


def established_associations() -> list[Association]:
    """Established associations, and the association of the calling thread."""
    here = threading.current_thread()
    return [t for t in threading.enumerate()
            if isinstance(t, Association) and (t.is_established or t is here)]


def application_entity(ae_title: str) -> ae.CountingAE:
    """pynetdicom's AE, whose association limit (checked as an A-ASSOCIATE-RQ is answered) counts
    established associations and the one asking, not connections that are still silent."""
    return ae.CountingAE(ae_title, established_associations)


def _negotiating() -> list[Association]:
    """Acceptors alive whose association is not established (yet)."""
    return [t for t in threading.enumerate()
            if isinstance(t, Association) and t.is_acceptor and not t.is_established and t.is_alive()]


def pending_connections() -> int:
    """Accepted connections whose association is not established (yet)."""
    return len(_negotiating())


def close_pending() -> int:
    """Close the connections still negotiating (a stop does not wait for them), and end their threads'
    wait for the A-ASSOCIATE-RQ; how many."""
    pending = _negotiating()
    for association in pending:
        raw = dul.raw_socket(association.dul)
        if raw is not None:
            with suppress(OSError):  # closed meanwhile
                raw.shutdown(socket.SHUT_RDWR)
        association_seam.stop_waiting_for_request(association)
    return len(pending)


def cap_pending(server: ThreadedAssociationServer, cap: int, on_refused: Callable[[], object]) -> None:
    """Close, at once, connections accepted while ``cap`` others are still negotiating."""

    def admit() -> bool:
        if pending_connections() < cap:
            return True
        on_refused()
        return False

    transport.screen_connections(server, admit)


def _poll_delay(provider: DULServiceProvider) -> float:
    """The DUL's sleep before its next poll. Once quiet, the wait happens here instead: on the socket, up to
    :data:`IDLE_POLL_SECONDS`, so incoming data ends it at once; no sleep follows."""
    if time.time() - dul.last_activity(provider) < QUIET_SECONDS:
        return BUSY_POLL_SECONDS
    raw = dul.raw_socket(provider)
    if raw is None or raw.fileno() < 0:
        return IDLE_POLL_SECONDS
    try:
        select.select([raw], [], [], IDLE_POLL_SECONDS)
    except (OSError, ValueError):  # closed meanwhile: the loop finds out itself
        return IDLE_POLL_SECONDS
    return 0.0


def on_connection_open(association: Association, request_seconds: float, ended: Callable[[], object]) -> None:
    """Before the association's threads start: the request timer, the adaptive DUL poll, and ``ended()``
    called as its thread ends, however it ends."""
    association_seam.after_run(association, ended)
    dul.poll_with(association.dul, _poll_delay)
    dul.set_request_timer(association.dul, request_seconds)
    raw = dul.raw_socket(association.dul)
    if raw is not None:
        raw.settimeout(request_seconds)


def limit_pdus(association: Association, max_pdu_bytes: int, refused: dul.Refused) -> None:
    """Before the association's threads start: refuse (A-ABORT, ``refused`` told) a P-DATA-TF PDU longer than
    ``max_pdu_bytes`` (0: no limit), or another PDU longer than :data:`CONTROL_PDU_BYTES`."""
    dul.refuse_long_pdus(association.dul, lambda kind: max_pdu_bytes if kind == P_DATA_TF else CONTROL_PDU_BYTES,
                         refused)


def on_established(association: Association, network_seconds: float) -> None:
    """The association is up: reads may now wait the network timeout."""
    raw = dul.raw_socket(association.dul)
    if raw is not None:
        raw.settimeout(network_seconds)


def handshake_in_connection_thread(server: ThreadedAssociationServer, context: ssl.SSLContext,
                                   request_seconds: float) -> None:
    """Make ``server`` accept TCP only and run each TLS handshake, within ``request_seconds``, on the
    connection's own thread."""

    def handshake(request: socket.socket) -> socket.socket | None:
        request.settimeout(request_seconds)
        try:
            return context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):  # no handshake in time, or a bad one: close, nobody else waited
            request.close()
            return None

    transport.handshake_per_connection(server, handshake)
