"""Seam: pynetdicom's DUL thread (``DULServiceProvider``): its poll interval, request timer and socket.

The DUL loop sleeps ``self._run_loop_delay`` before each poll when the previous one found nothing;
:func:`poll_with` swaps the DUL's class for one where that attribute is a property the node computes. The
loop restarts ``_idle_timer`` on each incoming PDU, and ``_process_recv_primitive`` says whether it sent one:
together, :func:`last_activity`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from pynetdicom.dul import DULServiceProvider

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "pynetdicom.dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "pynetdicom.dul.DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "pynetdicom.timer.Timer.start": "b780943e397630dd",
    "pynetdicom.timer.Timer.restart": "30af96b32eeff8ae",
}

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
