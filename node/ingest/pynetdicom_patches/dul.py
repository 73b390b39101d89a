"""Seam: pynetdicom's DUL thread (``DULServiceProvider``): its poll interval, request timer and socket.

The DUL loop sleeps ``self._run_loop_delay`` before each poll when the previous one found nothing;
:func:`poll_with` swaps the DUL's class for one where that attribute is a property the node computes. The
loop restarts ``_idle_timer`` on each incoming PDU, and ``_process_recv_primitive`` says whether it sent one:
together, :func:`last_activity`.

The DUL reads a PDU's 6-byte header (``socket.recv(6)``), then the whole of its length at once into memory.
:func:`refuse_long_pdus` looks at each header as it is read: a PDU longer than allowed is answered with an
A-ABORT and its connection closed before a byte of its body is read (the DUL then sees a closed transport,
event 17, which it takes without a word).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from contextlib import suppress

from pynetdicom.dul import DULServiceProvider

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "pynetdicom.dul.DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "pynetdicom.timer.Timer.start": "b780943e397630dd",
    "pynetdicom.timer.Timer.restart": "30af96b32eeff8ae",
    "pynetdicom.dul.DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    "pynetdicom.transport.AssociationSocket.recv": "6bc20a33b1b7cfe7",
}

#: An A-ABORT PDU from the service provider, reason "invalid PDU parameter value" (PS3.8 Table 9-26).
ABORT_INVALID_PARAMETER = struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x06)

#: How long the DUL sleeps before its next poll, given the DUL.
PollDelay = Callable[[DULServiceProvider], float]


class _PolledDul(DULServiceProvider):
    """pynetdicom's DUL whose poll interval is ``poll_delay(self)``, and which notes when it sent a PDU."""

    poll_delay: PollDelay
    last_sent = 0.0

    @property
    def _run_loop_delay(self) -> float:
        """The sleep before the loop's next poll: ``poll_delay(self)``."""
        return self.poll_delay(self)

    @_run_loop_delay.setter
    def _run_loop_delay(self, _value: float) -> None:
        """pynetdicom sets its default at construction; the property decides."""

    def _process_recv_primitive(self) -> bool:
        sent = super()._process_recv_primitive()
        if sent:  # an outgoing PDU (a C-STORE response) is traffic too
            self.last_sent = time.time()
        return sent


def poll_with(dul: DULServiceProvider, delay: PollDelay) -> None:
    """Make ``dul`` (before its thread starts) sleep ``delay(dul)`` before each poll that follows an idle one."""
    dul.__class__ = _PolledDul
    dul.poll_delay = delay  # type: ignore[attr-defined]  # a _PolledDul now (the line above)


def last_activity(dul: DULServiceProvider) -> float:
    """When (``time.time()``) ``dul`` last received a PDU, or sent one if it polls :func:`poll_with`."""
    received = getattr(dul._idle_timer, "_start_time", None) or 0.0  # restarted on every incoming PDU
    return max(getattr(dul, "last_sent", 0.0), received)


def raw_socket(dul: DULServiceProvider) -> socket.socket | None:
    """The connection's socket (TLS-wrapped or not), if it has one."""
    raw = getattr(dul.socket, "socket", None)
    return raw if isinstance(raw, socket.socket) else None


def set_request_timer(dul: DULServiceProvider, seconds: float) -> None:
    """The association request timer (ARTIM): how long the DUL waits for the A-ASSOCIATE-RQ."""
    dul.artim_timer.timeout = seconds


#: The longest PDU allowed of a type (0: any length), given its PDU type.
Longest = Callable[[int], int]
#: Told of a PDU refused for its length: (PDU type, its length, the longest allowed).
Refused = Callable[[int, int, int], object]


def refuse_long_pdus(dul: DULServiceProvider, longest: Longest, refused: Refused) -> None:
    """Make ``dul`` (its socket set, before its thread starts) abort the association, tell ``refused`` and
    close the connection on a PDU longer than ``longest(its type)``, before reading its body."""
    connection = dul.socket
    assert connection is not None, "the DUL has no socket yet"
    recv = connection.recv
    body_due = 0  # the next read is a PDU's body of this length (0: a header)

    def recv_checked(nr_bytes: int) -> bytearray:
        nonlocal body_due
        data = recv(nr_bytes)
        if body_due:
            body_due = 0
            return data
        if len(data) == 6:
            kind, _, length = struct.unpack(">BBL", data)
            limit = longest(kind)
            if limit and length > limit:
                refused(kind, length, limit)
                raw = raw_socket(dul)
                with suppress(OSError):  # the peer may be gone already
                    connection.send(ABORT_INVALID_PARAMETER)
                    if raw is not None:
                        raw.shutdown(socket.SHUT_RDWR)
                return bytearray()  # a header cut short: the DUL takes it as the connection closed
            body_due = length
        return data

    connection.recv = recv_checked  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate
