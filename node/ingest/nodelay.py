"""``TCP_NODELAY`` on every DICOM association the node opens or accepts.

pynetdicom writes a DIMSE request in separate sends (the command set's P-DATA-TF PDU, then the data set's).
With Nagle's algorithm on, the second send waits until the peer acknowledges the first, and a peer that
delays its ACKs (Linux, by up to 40 ms) holds every C-STORE and C-FIND request ~40 ms (docs/performance.md).
pynetdicom sets no socket option but ``SO_REUSEADDR`` and has no setting for one, so :data:`HANDLER` — bound
to ``EVT_CONN_OPEN``, pynetdicom's public event, fired once the TCP (and TLS) connection is up and before the
first PDU — sets ``TCP_NODELAY`` on the association's socket: the SCP's (``node/ingest/scp.py``), and the
node's requests to a PACS (delivery, priors, the routing survey).

Answers that come back within a millisecond expose a race in pynetdicom's requestor reactor
(pydicom/pynetdicom#875), so a requestor also runs the node's copy of the reactor, which leaves each
``send_c_*``'s response to it (:mod:`node.ingest.pynetdicom_patches.association`).
"""

from __future__ import annotations

import socket
from contextlib import suppress

from pynetdicom import evt

from node.ingest.pynetdicom_patches import association as association_seam
from node.ingest.pynetdicom_patches import dul

#: A requestor's reactor polls the DIMSE queue every millisecond, as pynetdicom's does: a ``send_c_*`` waits
#: for the loop to pause, so a longer wait there would hold every request.
_REQUESTOR_POLL_SECONDS = 0.001


def set_nodelay(connection: socket.socket) -> None:
    """Send each write at once (``TCP_NODELAY``); a connection closed meanwhile is left as it is."""
    with suppress(OSError):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _on_connection_open(event: evt.Event) -> None:
    """``EVT_CONN_OPEN``: the socket sends at once; a requestor's reactor leaves its responses to its sends."""
    association = event.assoc
    connection = dul.raw_socket(association.dul)
    if connection is not None:
        set_nodelay(connection)
    if association.is_requestor:
        association_seam.serve_with(association, lambda _: _REQUESTOR_POLL_SECONDS)


#: The handler every association of the node binds (``evt_handlers`` of ``AE.associate`` or ``start_server``).
HANDLER: evt.EventHandlerType = (evt.EVT_CONN_OPEN, _on_connection_open)
