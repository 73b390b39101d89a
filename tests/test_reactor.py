"""The prompt acceptor reactor: every way an association ends still ends it."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.app import Node
from node.testing.loopback import LOOPBACK
from tests.helpers import wait_for


def _open(node: Node):
    scu = AE(ae_title="REACTORTEST")
    scu.add_requested_context(Verification)
    assoc = scu.associate(LOOPBACK, node.scp.port, ae_title="QOQNODE")
    assert assoc.is_established
    return assoc


def _wait_closed(node: Node, timeout: float = 5.0) -> None:
    wait_for(lambda: node.scp.open_associations() == 0, timeout=timeout, interval=0.02)


def test_release_abort_and_idle_timeout_each_end_the_association(make_node) -> None:
    node = make_node(dicom={"timeout_seconds": 1})
    released = _open(node)
    assert released.send_c_echo().Status == 0
    released.release()
    _wait_closed(node)
    aborted = _open(node)
    aborted.abort()
    _wait_closed(node)
    idle = _open(node)  # says nothing: the node's network timeout ends it
    _wait_closed(node, timeout=10)
    assert not idle.is_established
    metrics = node.metrics.render().decode()
    assert "qoqnode_dicom_associations_open 0.0" in metrics

