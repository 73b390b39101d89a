"""A prompter acceptor reactor for pynetdicom associations.

pynetdicom's ``Association._run_reactor`` sleeps 1 ms at the top of every loop and then polls the DIMSE
message queue, so each C-STORE request waits on average ~0.5 ms (up to 1 ms) before its handler runs. The
node's acceptors run the same loop, checks and order, except that it *waits on the queue* for up to that
1 ms instead: a request is served as soon as the DUL thread has reassembled it, and an association still
wakes once a millisecond to check for release, abort, a dead DUL thread and the network timeout — once every
250 ms after a quarter of a second without a request (a request still wakes it at once), so that idle
associations cost next to no CPU (128 idle ones used 98 % of a core polling every millisecond;
benchmarks/idle_associations.py).

Measured on 300 CT slices over one association (docs/performance.md). The copy of pynetdicom's loop is the
seam :mod:`node.ingest.pynetdicom_patches.association`; this module says how long it waits.
"""

from __future__ import annotations

from pynetdicom.association import Association

from node.ingest.pynetdicom_patches import association as seam

_POLL_SECONDS = 0.001
_IDLE_POLL_SECONDS = 0.25
_QUIET_SECONDS = 0.25


def _wait_seconds(since_request: float) -> float:
    """How long to wait on the DIMSE queue, ``since_request`` seconds after the last request was served."""
    return _IDLE_POLL_SECONDS if since_request > _QUIET_SECONDS else _POLL_SECONDS


def install(association: Association) -> None:
    """Make ``association`` (an acceptor, before it starts) use the prompt reactor."""
    seam.serve_with(association, _wait_seconds)
