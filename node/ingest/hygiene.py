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
- **Idle CPU**: pynetdicom's DUL loop sleeps 0.1 ms between polls while data flows (the node's setting,
  for throughput); once the association has been quiet for :data:`QUIET_SECONDS` it waits on the
  socket instead, up to :data:`IDLE_POLL_SECONDS`, and incoming data wakes it at once.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
import types
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import ThreadedAssociationServer

#: DUL poll interval while data flows, and once quiet.
BUSY_POLL_SECONDS = 0.0001
IDLE_POLL_SECONDS = 0.5
QUIET_SECONDS = 0.25


class EstablishedAssociationsAE(AE):
    """pynetdicom's AE, whose association limit (checked as an A-ASSOCIATE-RQ is answered, against its
    ``active_associations``) counts established associations and the one asking, not connections that
    are still silent."""

    @property
    def active_associations(self) -> list[Association]:
        """Established associations, and the association of the calling thread."""
        here = threading.current_thread()
        return [t for t in threading.enumerate()
                if isinstance(t, Association) and (t.is_established or t is here)]


def pending_connections() -> int:
    """Accepted connections whose association is not established (yet)."""
    return sum(1 for t in threading.enumerate()
               if isinstance(t, Association) and t.is_acceptor and not t.is_established and t.is_alive())


def cap_pending(server: ThreadedAssociationServer, cap: int, on_refused: Any) -> None:
    """Close, at once, connections accepted while ``cap`` others are still negotiating."""
    process = server.process_request

    def process_request(self: ThreadedAssociationServer, request: Any, client_address: Any) -> None:
        if pending_connections() >= cap:
            on_refused()
            self.shutdown_request(request)
            return
        process(request, client_address)

    server.process_request = types.MethodType(process_request, server)  # type: ignore[method-assign]


class _AdaptiveDul(DULServiceProvider):
    """pynetdicom's DUL with a poll interval that follows the traffic (its loop reads
    ``_run_loop_delay`` before every sleep)."""

    @property
    def _run_loop_delay(self) -> float:  # type: ignore[override]
        """The sleep before the loop's next poll. Once quiet, the wait happens here instead: on the
        socket, up to :data:`IDLE_POLL_SECONDS`, so incoming data ends it at once; no sleep follows."""
        # the idle timer restarts (time.time()) on every incoming PDU
        last = max(getattr(self, "_last_activity", 0.0), getattr(self._idle_timer, "_start_time", None) or 0.0)
        if time.time() - last < QUIET_SECONDS:
            return BUSY_POLL_SECONDS
        raw = getattr(self.socket, "socket", None)
        if not isinstance(raw, socket.socket) or raw.fileno() < 0:
            return IDLE_POLL_SECONDS
        try:
            select.select([raw], [], [], IDLE_POLL_SECONDS)
        except (OSError, ValueError):  # closed meanwhile: the loop finds out itself
            return IDLE_POLL_SECONDS
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, _value: float) -> None:
        """pynetdicom sets its default at construction; the property decides."""

    def _process_recv_primitive(self) -> bool:
        sent = super()._process_recv_primitive()
        if sent:  # an outgoing PDU (a C-STORE response) is traffic too
            self._last_activity = time.time()
        return sent


def on_connection_open(association: Any, request_seconds: float) -> None:
    """Before the association's threads start: the request timer and the adaptive DUL."""
    dul = association.dul
    dul.__class__ = _AdaptiveDul
    dul.artim_timer.timeout = request_seconds
    raw = getattr(dul.socket, "socket", None)
    if isinstance(raw, socket.socket):
        raw.settimeout(request_seconds)


def on_established(association: Any, network_seconds: float) -> None:
    """The association is up: reads may now wait the network timeout."""
    raw = getattr(association.dul.socket, "socket", None)
    if isinstance(raw, socket.socket):
        raw.settimeout(network_seconds)


def handshake_in_connection_thread(server: ThreadedAssociationServer, context: ssl.SSLContext,
                                   request_seconds: float) -> None:
    """Make ``server`` accept TCP only and run each TLS handshake, within ``request_seconds``, on the
    connection's own thread."""
    server.ssl_context = None  # pynetdicom's get_request would otherwise handshake on the accept thread
    accept = server.get_request
    finish = server.finish_request

    def get_request(self: ThreadedAssociationServer) -> tuple[socket.socket, Any]:
        return accept()

    def finish_request(self: ThreadedAssociationServer, request: socket.socket, client_address: Any) -> None:
        request.settimeout(request_seconds)
        try:
            wrapped = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):  # no handshake in time, or a bad one: close, nobody else waited
            request.close()
            return
        finish(wrapped, client_address)

    server.get_request = types.MethodType(get_request, server)  # type: ignore[method-assign]
    server.finish_request = types.MethodType(finish_request, server)  # type: ignore[method-assign]
