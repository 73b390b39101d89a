"""Crash recovery of the whole loop: ``kill -9`` of ``qoq-node serve`` while it receives, while the
model reads the study and while it waits for the EHR's ACK; after each restart the node picks up
where it stood. Runs the newcomer default: no weights configured, so the node builds the tiny test
model on first start and reads with the real ``transformers`` backend on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study
from tests.helpers import DCMTK_ENV, metric_value, stored_studies, wait_for


def _events(node: NodeProcess) -> list[str]:
    return [json.loads(line)["event"] for line in node.log_path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("dcmtk", "orthanc_installed")
def test_kill_9_while_receiving_reading_and_sending_still_delivers_exactly_once(tmp_path: Path, node_process,
                                                                               spawn) -> None:
    ct = write_ct_study(tmp_path / "ct", slices=40, size=128)
    with Orthanc(tmp_path / "pacs") as pacs, MllpListener(["silent"]) as ehr:
        destinations = {
            "dicom": [{"name": "pacs", "ae_title": pacs.aet, "host": LOOPBACK, "port": pacs.dicom_port}],
            "hl7": [{"name": "ehr", "host": LOOPBACK, "port": ehr.port, "timeout_seconds": 5}],
            "retry_base_seconds": 0.2, "retry_cap_seconds": 1,
        }
        node = node_process("node", {"QOQ_NODE__STUDY__STABLE_SECONDS": "1",
                                     "QOQ_NODE__DESTINATIONS": json.dumps(destinations)})
        try:
            # 1. During ingest.
            node.start()
            sender = spawn(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port),
                           *map(str, ct.files)], stderr=subprocess.DEVNULL, env=DCMTK_ENV)
            wait_for(lambda: metric_value(node.metrics(), "qoqnode_cstore_requests_total", 'outcome="stored"') >= 10,
                     interval=0.02)
            node.kill()
            sender.wait(60)
            node.start()
            subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, ct.files)],
                           check=True, capture_output=True, env=DCMTK_ENV)  # the PACS sends the study again
            # 2. While the model reads the study (the test model is built on the first start).
            wait_for(lambda: "study.prepared" in _events(node), timeout=120, interval=0.01)
            node.kill()
            [study] = stored_studies(node)
            assert (study.state, study.instances) == ("stable", 40)  # not read yet: read again after restart
            # 3. While waiting for the EHR's acknowledgment (the EHR stays silent on the first message).
            node.start()
            wait_for(lambda: ehr.received, timeout=120, interval=0.01)
            node.kill()
            node.start()
            wait_for(lambda: stored_studies(node)[0].state == "complete", timeout=120)
        finally:
            node.stop()
        events = _events(node)
        assert "engine.TEST_MODEL_IN_USE" in events  # the loud line: results come from a test model
        # The PACS holds each result object once: the second read made the same objects (same UIDs).
        in_pacs = [instance["MainDicomTags"]["SOPInstanceUID"] for instance in pacs.instances(ct.study_uid)]
        # v1, or v2 when the study went stable between the restart and the PACS's resend (a loaded machine)
        versions = sorted((node.root / "var" / "results" / ct.study_uid).iterdir(), key=lambda p: int(p.name[1:]))
        written = {pydicom.dcmread(path).SOPInstanceUID for path in versions[-1].glob("*.dcm")}
        assert sorted(in_pacs) == sorted(written) and len(written) >= 2  # SR and GSPS (SEG only with boxes)
        # The EHR got the ORU exactly twice, the same message (same MSH-10) both times: unanswered before the last
        # kill, acknowledged after the restart. No kill falls between an ACK and its being recorded (the node was
        # killed only while the first send waited for its ACK), so no third copy is legitimate here.
        control_ids = {message.split("\r")[0].split("|")[9] for message in ehr.received}
        assert len(ehr.received) == 2 and len(set(ehr.received)) == 1 and len(control_ids) == 1
        sr = pydicom.dcmread(versions[-1] / "sr.dcm")
        assert "TEST MODEL" in sr.SeriesDescription
