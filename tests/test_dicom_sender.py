"""The C-STORE SCU against a real Orthanc, and against the node itself as a refusing PACS."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from node.egress.dicom import DicomSender, classify_status
from node.egress.mllp import Delivery
from node.testing.loopback import LOOPBACK, free_port, http_json
from node.testing.pacs import Orthanc
from tests.helpers import result_objects


def test_results_reach_orthanc_once_even_when_sent_twice(orthanc: Orthanc, tmp_path: Path) -> None:
    objects = result_objects(tmp_path)
    sender = DicomSender("QOQNODE", orthanc.aet, LOOPBACK, orthanc.dicom_port)
    for _ in range(2):  # a retry after a lost response sends the same objects again
        results = sender.send(objects)
        assert [r.delivery for r in results] == [Delivery.ACCEPTED, Delivery.ACCEPTED]
    for ds in objects:
        found = http_json(f"{orthanc.url}/tools/find", data=(
            f'{{"Level": "Instance", "Query": {{"SOPInstanceUID": "{ds.SOPInstanceUID}"}}}}').encode())
        assert len(found) == 1


def test_unreachable_or_refusing_pacs_is_a_retry(tmp_path: Path, make_node) -> None:
    objects = result_objects(tmp_path)
    nobody = DicomSender("QOQNODE", "PACS", LOOPBACK, free_port(), timeout_seconds=2).send(objects)
    assert {r.delivery for r in nobody} == {Delivery.RETRY}
    assert nobody[0].detail == "no connection to the PACS (refused or unreachable)"  # not "association aborted"
    node = make_node(storage={"min_free_bytes": 10**18})  # the node as a PACS whose disk is full
    wrong_ae = DicomSender("QOQNODE", "NOTTHEPACS", LOOPBACK, node.scp.port).send(objects)
    assert {r.delivery for r in wrong_ae} == {Delivery.RETRY} and wrong_ae[0].detail == "association rejected"
    full = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, node.scp.port).send(objects)
    assert [(r.delivery, r.status) for r in full] == [(Delivery.RETRY, 0xA700)] * 2


def test_a_pacs_that_cannot_understand_the_object_dead_letters_it(tmp_path: Path, make_node) -> None:
    [sr, _] = result_objects(tmp_path)
    broken = copy.deepcopy(sr)
    del broken.StudyInstanceUID  # the receiving node answers C211
    node = make_node()
    [result] = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, node.scp.port).send([broken])
    assert (result.delivery, result.status) == (Delivery.REJECTED, 0xC211)


@pytest.mark.parametrize(("status", "delivery"), [
    (0x0000, Delivery.ACCEPTED), (0x0001, Delivery.ACCEPTED), (0xB000, Delivery.ACCEPTED),
    (0xB007, Delivery.ACCEPTED), (0xA700, Delivery.RETRY), (0xA7FF, Delivery.RETRY),
    (0xA900, Delivery.REJECTED), (0xC000, Delivery.REJECTED), (0x0122, Delivery.REJECTED),
])
def test_status_classes(status: int, delivery: Delivery) -> None:
    assert classify_status(status)[0] is delivery
