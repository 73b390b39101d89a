"""The node's identity as a DICOM implementation: what every file it writes and every association it
takes part in says about who made it (PS3.7 D.3.3.2)."""

from __future__ import annotations

from pydicom.uid import generate_uid

from node import __version__

#: The Manufacturer (0008,0070) of every object the node creates: how it knows its own results when a
#: PACS sends them back.
MANUFACTURER = "qoq-node"
#: Stable across runs and versions.
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["qoq-node implementation class"])


def implementation_version_name(version: str) -> str:
    """The Implementation Version Name (at most 16 characters) of the node at ``version``."""
    return f"QOQNODE_{version}"[:16]


IMPLEMENTATION_VERSION_NAME = implementation_version_name(__version__)
