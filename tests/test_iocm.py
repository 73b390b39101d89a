"""IHE IOCM on real peers: a rejection note (a Key Object Selection built with highdicom, titled with a
rejection code) of the node's SR, sent by Orthanc to the node, marks the result rejected, moves the metric,
cancels what was not yet delivered (never sent, nor retried) and starts no new study version; a note of the
node's Encapsulated PDF report alone is read the same way; a KOS of another title stays ignored."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.ingest.rejection import read_note
from node.results.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE
from node.store import COMPLETE, QUEUED
from node.store.outbox import OutboxState
from node.testing.loopback import LOOPBACK, free_port
from node.testing.pacs import Orthanc
from node.testing.synthetic import restamp, write_cr_study
from tests.helpers import (
    is_rejected,
    key_object_note,
    metric_value,
    replay_engine,
    state,
    study_of,
    verdicts_of,
    wait_for,
)


def _send_instance(orthanc: Orthanc, path: Path) -> None:
    orthanc.send_study(orthanc.upload(path)["ID"], "qoqnode")


def test_a_rejection_note_rejects_the_result(orthanc: Orthanc, make_node, tmp_path: Path) -> None:
    destinations = {"dicom": [{"name": "pacs", "ae_title": "ORTHANC", "host": LOOPBACK, "port": orthanc.dicom_port,
                               "timeout_seconds": 10},
                              {"name": "down", "ae_title": "NOWHERE", "host": LOOPBACK, "port": free_port(),
                               "timeout_seconds": 1}],
                    "retry_base_seconds": 60, "retry_cap_seconds": 120}
    node = make_node(engine=replay_engine(tmp_path / "engine", {"*": "<think>read</think> \\boxed{Pneumonia}"}),
                     destinations=destinations)
    orthanc.add_modality("qoqnode", "QOQNODE", node.scp.port)
    study = restamp(write_cr_study(tmp_path / "cr", size=128), PatientID="IOCM-0001", AccessionNumber="ACC-IOCM")
    for path in study.files:
        orthanc.upload(path)
    orthanc.send_study(orthanc.study_id(study.study_uid), "qoqnode")
    wait_for(lambda: state(node, study.study_uid) == QUEUED, timeout=60, what="the study read and queued")
    wait_for(lambda: {i.state for i in node.store.outbox.items() if i.destination == "pacs"} == {OutboxState.SENT},
             timeout=30, what="the results delivered to Orthanc")
    found = [pydicom.dcmread(io.BytesIO(orthanc.file(i["ID"]))) for i in orthanc.instances(study.study_uid)]
    [sr] = [ds for ds in found if ds.Modality == "SR"]
    [pdf] = [ds for ds in found if ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE]
    assert sr.Manufacturer != "Viewer Vendor"

    # not a rejection: ignored as before
    _send_instance(orthanc, key_object_note([sr], tmp_path, "113000", "Of Interest"))
    assert not is_rejected(node.store, study.study_uid)
    pending = [i for i in node.store.outbox.items() if i.destination == "down"]
    assert pending and all(i.state == OutboxState.PENDING for i in pending)

    _send_instance(orthanc, key_object_note([sr], tmp_path, "113001", "Rejected for Quality Reasons"))
    assert is_rejected(node.store, study.study_uid, 1)
    [verdict] = [v for v in verdicts_of(node.store, study.study_uid) if v.source == "iocm"]
    assert (verdict.verdict, verdict.reason_code, verdict.version, verdict.task, verdict.ai_labels) == (
        "reject", "113001", 1, "chest_xray", ("Pneumonia",))
    text = node.metrics.render().decode()
    assert metric_value(text, "qoqnode_results_rejected_total", 'reason="113001"') == 1
    assert metric_value(text, "qoqnode_cstore_requests_total", 'outcome="ignored"') == 1
    assert metric_value(text, "qoqnode_cstore_requests_total", 'outcome="rejection_note"') == 1
    # what was not delivered is cancelled, and stays so; the study is settled at its one version
    assert {i.state for i in node.store.outbox.items() if i.destination == "down"} == {OutboxState.CANCELLED}
    node.store.outbox.retry(0.0)
    assert {i.state for i in node.store.outbox.items() if i.destination == "down"} == {OutboxState.CANCELLED}
    summary = study_of(node, study.study_uid)
    assert summary is not None and (summary.version, summary.state) == (1, COMPLETE)

    # a note that references the node's PDF report alone is a rejection of the same version too
    _send_instance(orthanc, key_object_note([pdf], tmp_path, "113037", "Rejected for Patient Safety Reasons"))
    by_code = {v.reason_code: v for v in verdicts_of(node.store, study.study_uid) if v.source == "iocm"}
    assert set(by_code) == {"113001", "113037"} and (by_code["113037"].version, by_code["113037"].verdict) == (
        1, "reject")
    text = node.metrics.render().decode()
    assert metric_value(text, "qoqnode_results_rejected_total", 'reason="113037"') == 1
    assert metric_value(text, "qoqnode_cstore_requests_total", 'outcome="rejection_note"') == 2
    summary = study_of(node, study.study_uid)
    assert summary is not None and summary.version == 1


def test_a_kos_that_cannot_be_read_as_a_note_is_none(tmp_path: Path) -> None:
    """Bytes that are no dataset, and a note titled with a code of another scheme, are no rejection note."""
    assert read_note(b"\x00\x01not a dataset", ExplicitVRLittleEndian) is None
    sr = pydicom.Dataset()
    sr.SOPClassUID, sr.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", generate_uid()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = generate_uid(), generate_uid()
    sr.PatientID, sr.PatientName, sr.PatientBirthDate, sr.PatientSex = "X", "X^Y", "", ""
    sr.AccessionNumber, sr.StudyID, sr.StudyDate, sr.StudyTime, sr.ReferringPhysicianName = "", "", "", "", ""
    sr.Modality = "SR"
    note = pydicom.dcmread(key_object_note([sr], tmp_path, "113037", "Rejected for Patient Safety Reasons"))
    assert read_note(_body(note), ExplicitVRLittleEndian).code == "113037"
    note.ConceptNameCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
    assert read_note(_body(note), ExplicitVRLittleEndian) is None


def _body(ds: pydicom.Dataset) -> bytes:
    """The dataset without File Meta, in Explicit VR Little Endian, as the receiver holds it."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return body.getvalue()
