"""Every place the node reaches into pynetdicom's internals, and the one gate in front of them.

The node's storage SCP changes how pynetdicom works inside, not only what its public API offers. Each seam
is a module here, named after the pynetdicom module it reaches into; what the node does through it stays
with the node (:mod:`node.ingest.hygiene`, :mod:`node.ingest.reactor`, :mod:`node.ingest.incoming`,
:mod:`node.ingest.nodelay`):

- :mod:`.ae`: an AE whose association limit counts what the node says (pynetdicom's ACSE reads
  ``ae.active_associations`` when it answers an A-ASSOCIATE-RQ).
- :mod:`.transport`: the association server screens each accepted connection before its thread starts, and
  runs the TLS handshake on the connection's thread instead of the accept thread.
- :mod:`.dul`: the DUL thread's poll interval (``_run_loop_delay``, a property on a swapped class), its
  request timer (ARTIM) and its socket.
- :mod:`.association`: the reactor loop (``Association._run_reactor``), a copy of pynetdicom's with a
  different wait, that leaves a send's response to it; the SCP's acceptors and the node's requestors
  (:mod:`node.ingest.nodelay`) run it.
- :mod:`.dimse`: a C-STORE request's data fragments go to a file-like object of the node's (the
  ``_data_set_file`` pynetdicom's own chunked reception writes to).

Each seam lists in ``RELIES_ON`` the pynetdicom functions whose source it was written against (the SHA-256 of
``inspect.getsource``, its first 16 hex digits); ``tests/test_pynetdicom_contract.py`` fails when the installed
pynetdicom's differ.
:func:`prepare`, called once as the node starts, refuses a pynetdicom outside :data:`TESTED_RANGE` and sets
pynetdicom's process-wide configuration.
"""

from __future__ import annotations

import re

import pynetdicom
from pynetdicom import _config

from node.errors import NodeError

#: The pynetdicom releases the seams are tested against: from (inclusive) and below (exclusive). pyproject.toml
#: pins the same range.
TESTED_FROM = (3, 0, 4)
TESTED_BELOW = (3, 1)
TESTED_RANGE = f">={'.'.join(map(str, TESTED_FROM))},<{'.'.join(map(str, TESTED_BELOW))}"


class UntestedPynetdicom(NodeError):
    """The installed pynetdicom is not one the node's patches of its internals were tested with."""


def _release(version: str) -> tuple[int, ...]:
    """The release numbers a version string starts with ("3.0.4" -> (3, 0, 4); none -> ())."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def check_version(version: str | None = None) -> None:
    """Refuse (:class:`UntestedPynetdicom`) a pynetdicom ``version`` (default: the installed one) outside
    :data:`TESTED_RANGE`."""
    version = pynetdicom.__version__ if version is None else version
    release = _release(version)
    if not (release and TESTED_FROM <= release < TESTED_BELOW):
        raise UntestedPynetdicom(
            f"pynetdicom {version} is installed, but the node patches pynetdicom's internals "
            f"(node/ingest/pynetdicom_patches/) and is tested with pynetdicom {TESTED_RANGE} only: "
            f"install pynetdicom{TESTED_RANGE}"
        )


def configure_process() -> None:
    """pynetdicom's process-wide settings the node runs with; idempotent."""
    # Accept every storage SOP class (standard, retired, private) in the first transfer syntax the peer
    # proposes: the node stores what it is sent, byte for byte. It also spares each association a deep copy
    # of 170 x 45 supported contexts (~0.1 s).
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # pynetdicom's standard handlers decode and log every DIMSE message (identifiers included) and cost
    # ~0.5 ms per C-STORE; the node logs its own events instead.
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom refuses a UID over 64 characters as it turns a received command set into its primitive, and
    # aborts the association. The node answers such a C-STORE itself (C211, with a quarantine note:
    # node.ingest.refusals), and a failure never ends an association: any text passes as a UID here.
    _config.VALIDATORS["UI"] = _any_uid


def _any_uid(value: object) -> tuple[bool, str]:
    """pynetdicom's UID validator for the node: any text (the node checks the UIDs it is sent itself)."""
    return (True, "") if isinstance(value, str) else (False, "must be pydicom.uid.UID")


def prepare() -> None:
    """Before the node starts: refuse an untested pynetdicom, then set its process-wide configuration."""
    check_version()
    configure_process()
