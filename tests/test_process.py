"""The node as its own process: Orthanc as the sending PACS, kill -9 mid-transfer, SIGTERM drain,
and no patient identity in its logs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest

from node.store import COMPLETE, RECEIVING, StudySummary
from node.testing.loopback import LOOPBACK, http_json
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study
from tests.helpers import (
    DCMTK_ENV,
    NO_FINDINGS,
    dataset_bytes,
    loopback_settings,
    metric_value,
    stored_studies,
    wait_for,
)


def _stored(node: NodeProcess) -> float:
    """How many C-STORE requests the node has stored (its Prometheus counter)."""
    return metric_value(node.metrics(), "qoqnode_cstore_requests_total", 'outcome="stored"')


def _wait_assembled(node: NodeProcess, timeout: float = 30) -> StudySummary:
    """Wait until every study has been assembled (stable, or already further down the pipeline)."""
    def assembled() -> list[StudySummary]:
        studies = stored_studies(node)
        return studies if studies and all(s.state != RECEIVING for s in studies) else []

    return wait_for(assembled, timeout, interval=0.2)[0]


@pytest.mark.usefixtures("orthanc_installed")
def test_orthanc_sends_a_study_that_arrives_byte_identical(tmp_path: Path, node_process) -> None:
    study = write_ct_study(tmp_path / "study", slices=6, series=2, size=64)
    with node_process("node", {"QOQ_NODE__STUDY__STABLE_SECONDS": "1"}, NO_FINDINGS) as node, \
            Orthanc(tmp_path / "orthanc", modalities={"qoqnode": ("QOQNODE", node.dicom_port)}) as orthanc:
        for path in study.files:
            orthanc.upload(path)
        [orthanc_study] = http_json(f"{orthanc.url}/studies")
        orthanc.send_study(orthanc_study, "qoqnode")
        arrived = _wait_assembled(node)
        assert arrived.study_uid == study.study_uid and arrived.instances == 12
        for orthanc_instance in http_json(f"{orthanc.url}/studies/{orthanc_study}/instances"):
            sent = tmp_path / "sent.dcm"
            with urllib.request.urlopen(f"{orthanc.url}/instances/{orthanc_instance['ID']}/file") as response:
                sent.write_bytes(response.read())
            uid = pydicom.dcmread(sent, stop_before_pixels=True).SOPInstanceUID
            [stored] = (node.root / "var" / "spool").glob(f"*/{uid}.dcm")
            assert dataset_bytes(stored) == dataset_bytes(sent)
            assert pydicom.dcmread(stored, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle == "ORTHANC"


@pytest.mark.usefixtures("dcmtk")
def test_kill_9_mid_transfer_loses_no_acknowledged_instance(tmp_path: Path, node_process, spawn) -> None:
    study = write_ct_study(tmp_path / "study", slices=200, size=128)
    node = node_process("node", {"QOQ_NODE__STUDY__STABLE_SECONDS": "2"}, NO_FINDINGS).start()
    sender = spawn(["storescu", "-v", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, study.files)],
                   stderr=subprocess.PIPE, text=True, env=DCMTK_ENV)
    wait_for(lambda: _stored(node) >= 60, timeout=60, interval=0.02)  # the transfer is under way
    node.kill()
    _, log = sender.communicate(timeout=60)
    # Pair each "Sending file" with its response: the instances the node acknowledged.
    acknowledged = re.findall(r"Sending file: (\S+)\n(?:.*\n)*?I: Received Store Response \(Success\)", log)
    assert 60 <= len(acknowledged) < 200, log[-2000:]
    node.start()  # restart on the same storage
    try:
        stored = {s.study_uid: s for s in stored_studies(node)}
        assert stored[study.study_uid].instances >= len(acknowledged)
        spool = node.root / "var" / "spool" / study.study_uid
        for sent in map(Path, acknowledged):
            uid = pydicom.dcmread(sent, stop_before_pixels=True).SOPInstanceUID
            assert pydicom.dcmread(spool / f"{uid}.dcm") == pydicom.dcmread(sent)  # present and whole
        assert list((node.root / "var" / "tmp").iterdir()) == []  # partial writes were swept at start
        study_after = _wait_assembled(node)  # the interrupted study's timer continues after restart
        assert study_after.study_uid == study.study_uid
        # The PACS resends the whole study: duplicates are acknowledged, the study is complete.
        resend = subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, study.files)],
                                capture_output=True, env=DCMTK_ENV)
        assert resend.returncode == 0
        assert stored_studies(node)[0].instances == 200
    finally:
        node.stop()


@pytest.mark.usefixtures("dcmtk")
def test_sigterm_lets_the_open_association_finish(tmp_path: Path, node_process, spawn) -> None:
    study = write_ct_study(tmp_path / "study", slices=120, size=128)
    node = node_process("node", replay=NO_FINDINGS).start()
    sender = spawn(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, study.files)],
                   stderr=subprocess.PIPE, env=DCMTK_ENV)
    wait_for(lambda: _stored(node) >= 10, timeout=60, interval=0.02)
    node.process.send_signal(signal.SIGTERM)
    assert sender.wait(120) == 0, sender.stderr.read()
    assert node.process.wait(60) == 0
    # Once stopped, nothing listens any more.
    refused = subprocess.run(["echoscu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port)], capture_output=True)
    assert refused.returncode != 0
    node.start()
    try:
        assert stored_studies(node)[0].instances == 120
    finally:
        node.stop()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
@pytest.mark.usefixtures("dcmtk")
def test_logs_carry_no_patient_identity(tmp_path: Path, level: str, node_process) -> None:
    study = write_ct_study(tmp_path / "study", slices=3, size=32)
    settings = {"QOQ_NODE__LOG__LEVEL": level, "QOQ_NODE__STUDY__STABLE_SECONDS": "1"}
    with node_process("node", settings, NO_FINDINGS) as node:
        subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, study.files)],
                       check=True, capture_output=True, env=DCMTK_ENV)
        wait_for(lambda: stored_studies(node)[0].state == COMPLETE, timeout=30)
    log = node.log_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {"association.established", "association.closed", "study.receiving", "study.stable", "study.queued"} <= {
        e["event"] for e in events}
    ds = pydicom.dcmread(study.files[0])
    for identity in (str(ds.PatientName), "SYNTHETIC", ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber,
                     study.study_uid):
        assert identity not in log


@pytest.mark.parametrize(("section", "names"), [("DICOM", "dicom.host, dicom.port"), ("HTTP", "http.host, http.port")])
def test_a_taken_port_is_named(tmp_path: Path, section: str, names: str) -> None:
    """'Address already in use' alone does not say which of the node's two ports: the message does."""
    import os
    import socket

    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **loopback_settings(tmp_path / "var"), f"QOQ_NODE__{section}__PORT": str(port)}
        run = subprocess.run([sys.executable, "-m", "node", "serve"], capture_output=True, text=True, env=env,
                             timeout=120)
    assert run.returncode == 1
    assert f"{section} port {LOOPBACK}:{port} ({names})" in run.stderr and "in use" in run.stderr

