"""TCP_NODELAY on the node's DICOM associations, read back from live sockets: the C-STORE SCU (delivery), the
SCP that answers it, and the query/retrieve SCU (priors, the routing survey); and the reactor leaving a send's
response to it (pydicom/pynetdicom#875, which a prompt answer exposes)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, Association

from node.config import DicomDestination
from node.context.pacs import PacsPriors
from node.egress import dicom
from node.egress.dicom import DicomSender
from node.egress.mllp import Delivery
from node.ingest.pynetdicom_patches import association as association_seam
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from tests.helpers import result_objects


def _nodelay(association: Association) -> bool:
    """Whether the association's socket sends at once (read from the live socket)."""
    assert association.dul.socket is not None and association.dul.socket.socket is not None
    return bool(association.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_delivery_and_the_scp_answering_it_send_at_once(tmp_path: Path, make_node,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    node = make_node()
    seen: dict[str, bool] = {}

    class ReadingAE(AE):
        """The sender's AE, reading both ends' sockets once the association is up."""

        def associate(self, *args: Any, **kwargs: Any) -> Association:
            assoc = super().associate(*args, **kwargs)
            seen["scu"] = _nodelay(assoc)
            [acceptor] = [thread for thread in threading.enumerate()
                          if isinstance(thread, Association) and thread.is_acceptor and thread.is_established]
            seen["scp"] = _nodelay(acceptor)
            return assoc

    monkeypatch.setattr(dicom, "AE", ReadingAE)
    results = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, node.scp.port).send(result_objects(tmp_path))
    assert {r.delivery for r in results} == {Delivery.ACCEPTED}
    assert seen == {"scu": True, "scp": True}


def test_queries_to_the_pacs_send_at_once(orthanc: Orthanc) -> None:
    orthanc.add_modality("qoqnode", "QOQNODE", 104)
    pacs = PacsPriors(DicomDestination(name="pacs", ae_title=orthanc.aet, host=LOOPBACK, port=orthanc.dicom_port),
                      "QOQNODE")
    with pacs.query_association() as assoc:  # (the routing survey's associations too)
        assert _nodelay(assoc)


class _PausedOnceItPassed:
    """A reactor checkpoint that a ``send_c_*`` clears just as the loop has passed it; the second wait ends the
    loop."""

    def __init__(self, association: Association) -> None:
        self._association, self._set, self.waits = association, True, 0

    def wait(self) -> bool:
        self.waits += 1
        if self.waits == 1:
            self._set = False  # the sender pauses the loop now, sees it paused, sends: its response comes
        else:
            self._association._kill = True
        return True

    def is_set(self) -> bool:
        return self._set


def test_the_reactor_leaves_a_paused_senders_response_on_the_queue() -> None:
    requestor = Association(AE(), "requestor")
    response = object()
    requestor.dimse.msg_queue.put((1, response))
    requestor._reactor_checkpoint = _PausedOnceItPassed(requestor)  # type: ignore[assignment]  # (a stand-in)
    association_seam._reactor(requestor, lambda _: 0.001)
    assert requestor.dimse.msg_queue.get_nowait() == (1, response)  # still there for the sender
