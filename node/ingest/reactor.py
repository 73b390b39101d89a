"""A prompter acceptor reactor for pynetdicom associations.

pynetdicom's ``Association._run_reactor`` (3.0.x) sleeps 1 ms at the top of every loop and
then polls the DIMSE message queue, so each C-STORE request waits on average ~0.5 ms (up to
1 ms) before its handler runs. This loop is the same loop, checks and order, except that it
*waits on the queue* for up to that 1 ms instead: a request is served as soon as the DUL
thread has reassembled it, and an association still wakes once a millisecond to check for
release, abort, a dead DUL thread and the network timeout — once every 250 ms after a quarter of
a second without a request (a request still wakes it at once), so that idle associations cost next
to no CPU (128 idle ones used 98 % of a core polling every millisecond;
benchmarks/idle_associations.py).

Measured on 300 CT slices over one association (docs/performance.md). It mirrors
pynetdicom 3.0.x, which ``pyproject.toml`` pins; :func:`install` refuses other versions.
"""

from __future__ import annotations

import queue
import time
import types

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association

MIRRORED_MAJOR_MINOR = "3.0."
_POLL_SECONDS = 0.001
_IDLE_POLL_SECONDS = 0.25
_QUIET_SECONDS = 0.25


def _serve_promptly(self: Association) -> None:
    """pynetdicom 3.0's acceptor reactor with a blocking queue wait instead of a sleep."""
    self._is_paused = False
    last_request = time.monotonic()
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False

        quiet = time.monotonic() - last_request > _QUIET_SECONDS
        try:
            context_id, msg = self.dimse.msg_queue.get(timeout=_IDLE_POLL_SECONDS if quiet else _POLL_SECONDS)
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            self._serve_request(msg, context_id)
            last_request = time.monotonic()

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires, as in pynetdicom
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def install(association: Association) -> None:
    """Make ``association`` (an acceptor, before it starts) use the prompt reactor."""
    if not pynetdicom.__version__.startswith(MIRRORED_MAJOR_MINOR):
        raise RuntimeError(
            f"node.ingest.reactor mirrors pynetdicom {MIRRORED_MAJOR_MINOR}x, found {pynetdicom.__version__}"
        )
    association._run_reactor = types.MethodType(_serve_promptly, association)
