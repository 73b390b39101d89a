"""Seam: pynetdicom's association server, before a connection becomes an association.

``ThreadedAssociationServer`` accepts a connection on its accept thread (``get_request``, which also runs the
TLS handshake when the server has an ``ssl_context``), then ``process_request`` starts the connection's
thread, which runs ``finish_request``: the association.
"""

from __future__ import annotations

import socket
import types
from collections.abc import Callable
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.transport.AssociationServer.get_request": "925a4f3a3042f6e4",
    "pynetdicom.transport.ThreadedAssociationServer.process_request_thread": "9e76e9b9c8a3d8b1",
}


def screen_connections(server: ThreadedAssociationServer, admit: Callable[[], bool]) -> None:
    """On the accept thread, before a connection's thread starts: close it at once unless ``admit()``."""
    process = server.process_request

    def process_request(self: ThreadedAssociationServer, request: Any, client_address: Any) -> None:
        if not admit():
            self.shutdown_request(request)
            return
        process(request, client_address)

    server.process_request = types.MethodType(process_request, server)  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate


def handshake_per_connection(server: ThreadedAssociationServer,
                             handshake: Callable[[socket.socket], socket.socket | None]) -> None:
    """Accept TCP only on the accept thread; on the connection's own thread, ``handshake`` the socket and
    go on with what it returns (None: it closed the connection, nothing follows)."""
    server.ssl_context = None  # pynetdicom's get_request would otherwise handshake on the accept thread
    finish = server.finish_request

    def finish_request(self: ThreadedAssociationServer, request: socket.socket, client_address: Any) -> None:
        wrapped = handshake(request)
        if wrapped is not None:
            finish(wrapped, client_address)

    server.finish_request = types.MethodType(finish_request, server)  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate
