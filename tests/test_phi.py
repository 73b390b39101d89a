"""Patient data never reaches what the node writes for people and machines (logs, ``qoq-node studies``,
metrics), even when the source is malformed and libraries quote it; and malformed or absent Type 2
attributes still give valid results (issue 17: PHI in text, read what can be read)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom

from node.context.pacs import PacsError
from node.engine.errors import EngineUnavailable
from node.errors import is_permanent, reason
from node.imaging.decode import ImagingError
from node.ingest.hl7v2 import Hl7Error
from node.ingest.part10 import MalformedDataset
from node.store import COMPLETE, FAILED
from node.testing.synthetic import restamp, write_cr_study, write_file
from tests.helpers import qoq_node, stored_studies, wait_for

#: Distinctive values, one per patient/study attribute, so a grep finds any of them anywhere.
PHI = {"PatientName": "ZEBRAFISH^QUAGGAMARE", "PatientID": "PID-7730215", "PatientBirthDate": "1923-04-05",
       "AccessionNumber": "ACC-5531977", "ReferringPhysicianName": "OKAPIDOC^WOMBAT",
       "StudyDescription": "STUDY-DESC-AARDVARK", "IssuerOfPatientID": "ISSUER-NARWHAL", "StudyID": "SID-48151"}


def test_malformed_sources_are_read_and_nothing_of_the_patient_is_written_out(tmp_path: Path, storescu,
                                                                              dciodvfy_errors, node_process) -> None:
    """Three studies: every attribute distinctive and the birth date in ISO form, the name with control
    characters and 10 KB long; one without a Patient ID; one whose pixel data are cut short. The
    first two complete with valid objects; the third fails at once (no retries) with a reason naming
    no value; the log, the studies listing and the metrics name none of the values."""
    odd = restamp(write_cr_study(tmp_path / "odd", size=256), **PHI)
    long_name = restamp(write_cr_study(tmp_path / "long", size=256),
                        PatientName="ZEBRAFISH\x07^" + "QUAGGAMARE" * 1000, PatientSex="f", StudyTime="12:30:00")
    anonymous = write_cr_study(tmp_path / "anonymous", size=256)
    ds = pydicom.dcmread(anonymous.files[0])
    del ds.PatientID
    write_file(ds, anonymous.files[0])
    broken = restamp(write_cr_study(tmp_path / "broken", size=256), **PHI)
    ds = pydicom.dcmread(broken.files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # a third of the pixels: they cannot be decoded
    write_file(ds, broken.files[0])
    node = node_process("node", {"QOQ_NODE__STUDY__STABLE_SECONDS": "1"},
                        replay={"*": "<think>A dense focus.</think>\\boxed{Lung Lesion}"}).start()
    for study in (odd, long_name, anonymous, broken):
        assert storescu(node.dicom_port, list(study.files)).returncode == 0
    wait_for(lambda: sorted(s.state for s in stored_studies(node)) == [COMPLETE] * 3 + [FAILED],
             timeout=90)
    listing, metrics = qoq_node("studies", env=node.env).stdout, node.metrics()
    node.stop()
    [failed] = [s for s in stored_studies(node) if s.study_uid == broken.study_uid]
    assert failed.state == FAILED and failed.detail.startswith("cannot decode")
    assert failed.attempts == 1  # settled at once: the next try would fail the same way
    for study in (odd, long_name, anonymous):
        [version] = (tmp_path / "node" / "var" / "results" / study.study_uid).iterdir()
        for made in version.glob("*.dcm"):
            assert dciodvfy_errors(made) == [], f"{study.study_uid} {made.name}"
    sr = pydicom.dcmread(next((tmp_path / "node" / "var" / "results" / odd.study_uid).iterdir()) / "sr.dcm")
    assert sr.PatientBirthDate == "19230405" and sr.PatientID == PHI["PatientID"]  # repaired, not dropped
    written = "\n".join([listing, metrics, node.log_path.read_text()])
    # (the birth date also as repaired; not its year alone, which a hash or a byte count may hold by chance)
    for value in [*PHI.values(), "ZEBRAFISH", "QUAGGAMARE", "OKAPIDOC", "19230405"]:
        assert value not in written, value
    assert all(line.startswith("{") for line in node.log_path.read_text().splitlines())  # JSON lines only


def test_reasons_keep_only_the_node_s_own_messages_and_only_data_faults_are_permanent() -> None:
    library = ValueError("Unable to convert '1923-04-05' to 'DA' object")
    assert "1923" not in reason(library) and reason(library).startswith("ValueError")
    assert reason(ImagingError("cannot decode x.dcm: ValueError")) == "ImagingError: cannot decode x.dcm: ValueError"
    assert is_permanent(ImagingError("x")) and is_permanent(MalformedDataset("x")) and is_permanent(Hl7Error("x"))
    for transient in (OSError(28, "No space left on device"), sqlite3.OperationalError("database is locked"),
                      TimeoutError(), ConnectionResetError(), EngineUnavailable("x"), PacsError("x"),
                      library, KeyError("PatientID"), RuntimeError("a bug")):
        assert not is_permanent(transient), transient  # the moment's fault, or a surprise: retried
