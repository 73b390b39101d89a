"""Seam: an association's reactor loop (``Association._run_reactor``), and the end of the association's thread.

pynetdicom's loop sleeps 1 ms at the top of every turn, then polls the DIMSE message queue. :func:`serve_with`
gives an association (before its reactor runs) a copy of that loop — the same checks in the same order —
that instead *waits on the queue*, for as long as the node's ``wait`` says. It mirrors the loop of the
pynetdicom whose source ``RELIES_ON`` records (log lines left out), with one fix: a ``send_c_*`` pauses the
loop (it clears ``_reactor_checkpoint``, then waits for ``_is_paused``) and takes its response off the same
queue, but pynetdicom's loop, once past the checkpoint, still takes a message even if it was paused meanwhile —
a response that comes back fast (``TCP_NODELAY``, loopback) is then lost to the loop ("Received unexpected
C-FIND service message", pydicom/pynetdicom#875) and the send waits out the DIMSE timeout. The copy looks at
the checkpoint again after it says it is no longer paused, and leaves the queue alone if it was paused.

pynetdicom's ``run_reactor`` ends some connections by closing their socket itself (``shutdown_request``: no
A-ASSOCIATE-RQ in time, or its DUL thread gone), and then no ``EVT_CONN_CLOSE`` fires; :func:`after_run`
calls the node back when the association's thread ends, however it ended. An acceptor waits for its
A-ASSOCIATE-RQ on the DUL's queue for the whole ACSE timeout, and a ``None`` there ends the wait as the
timeout would: :func:`stop_waiting_for_request`.

A ``send_c_*`` waits for its response on the DIMSE queue for up to the DIMSE timeout. When the peer aborts,
the DUL puts an empty message there (AA-3) and the send ends at once; when the node aborts (``abort()``), the
DUL ends in AR-5 once the peer closes the connection, which puts none, so a send on another thread waits out
the whole timeout. :func:`wake_senders` puts the empty message a peer's abort puts.
"""

from __future__ import annotations

import queue
import time
import types
from collections.abc import Callable
from typing import cast

from pynetdicom import evt
from pynetdicom.association import Association

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.association.Association._run_reactor": "f28838c5559e462a",
    "pynetdicom.association.Association.run_reactor": "ed8bbbe3b3d6ddae",
    "pynetdicom.association.Association.__init__": "eb07516b8009ad8f",
    "pynetdicom.dul.DULServiceProvider.receive_pdu": "fa67339834ca998c",
    # how a send pauses the loop before taking its response off the queue (every send_c_* does the same)
    "pynetdicom.association.Association.send_c_store": "fa5a8127f349f8e7",
    "pynetdicom.association.Association.send_c_find": "5879d593298e14b6",
    # a requestor's EVT_CONN_OPEN fires on connecting, before its A-ASSOCIATE-RQ: serve_with is in time there
    "pynetdicom.transport.AssociationSocket.connect": "aeeeae413bd339dc",
    # a send waits on the DIMSE queue, and an empty message there ends it (wake_senders)
    "pynetdicom.dimse.DIMSEServiceProvider.get_msg": "890e3e04283f5aeb",
    "pynetdicom.association.Association._wrap_find_responses": "34436b9c80ccb5f3",
    "pynetdicom.fsm.AA_3": "de64452e828d09da",  # the peer's abort puts one
    "pynetdicom.association.Association._abort_blocking": "10b43ef8c63c6764",  # the node's puts none ...
    "pynetdicom.fsm.AR_5": "dc32d2343f420b32",  # ... nor the connection's close that follows it
}

#: How long to wait on the DIMSE queue, given the seconds since the last request was served.
Wait = Callable[[float], float]


def serve_with(association: Association, wait: Wait) -> None:
    """Make ``association`` (before its reactor runs: an acceptor before it starts, a requestor before it is
    established) run :func:`_reactor` with ``wait``."""

    def run_reactor(self: Association) -> None:
        _reactor(self, wait)

    association._run_reactor = types.MethodType(run_reactor, association)  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate


def after_run(association: Association, ended: Callable[[], object]) -> None:
    """Make ``association`` (before it starts) call ``ended()`` as its thread ends, however it ends."""
    run = association.run  # threading.Thread.run: pynetdicom's run_reactor, its target

    def run_then_end() -> None:
        try:
            run()
        finally:
            ended()

    association.run = run_then_end  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate


def stop_waiting_for_request(association: Association) -> None:
    """Make an acceptor still waiting for its A-ASSOCIATE-RQ stop waiting, as when the ACSE timeout runs out
    (pynetdicom's ``run_reactor`` then closes its connection and the thread ends)."""
    association.dul.to_user_queue.put(None)  # what receive_pdu returns on a timeout


def wake_senders(association: Association, within: float = 1.0) -> None:
    """Make a ``send_c_*`` still waiting on ``association``, which the node aborted (``abort()`` has returned),
    end as when the peer aborts: with no response, instead of at the DIMSE timeout. The association's reactor,
    which also takes from the queue, is let end first (``within`` seconds at most)."""
    if association.is_alive():
        association.join(within)
    association.dimse.msg_queue.put((None, None))  # what the DUL's AA-3 puts


def _reactor(self: Association, wait: Wait) -> None:
    """pynetdicom's reactor, waiting ``wait(...)`` on the DIMSE queue instead of sleeping 1 ms, and leaving the
    queue to a ``send_c_*`` that paused it after it passed the checkpoint."""
    self._is_paused = False
    last_request = time.monotonic()
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():  # paused meanwhile: the sender may already be waiting
            continue

        try:
            context_id, msg = self.dimse.msg_queue.get(timeout=wait(time.monotonic() - last_request))
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            self._serve_request(msg, cast(int, context_id))  # (as pynetdicom's own reactor does)
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
