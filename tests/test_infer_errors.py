"""``qoq-node infer`` on real-world files: one bad study is reported and the others go on, and it leaves out
what ``serve`` leaves out (issue 26, item 11: ``badVR.dcm`` ended the run in a traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

from node.testing.synthetic import restamp, write_cr_study, write_file
from tests.helpers import PYDICOM_TEST_FILES

REPO = Path(__file__).resolve().parents[1]


def test_infer_reports_a_bad_study_goes_on_and_skips_what_serve_ignores(tmp_path: Path) -> None:
    """A radiograph whose Number of Frames is '1A' (as badVR.dcm's) fails in the imaging stage with a
    library error; a good radiograph with an SR of the same study is read without the SR (a class in
    ``dicom.ignored_sop_classes``); the run says why the bad one failed, with no traceback, and exits 1."""
    bad = write_cr_study(tmp_path / "bad", size=128)
    ds = pydicom.dcmread(bad.files[0])
    ds.NumberOfFrames = "1"
    write_file(ds, bad.files[0])
    number_of_frames = b"\x28\x00\x08\x00IS\x02\x001 "  # (0028,0008) IS "1", as pydicom writes it
    encoded = bad.files[0].read_bytes()
    assert encoded.count(number_of_frames) == 1
    bad.files[0].write_bytes(encoded.replace(number_of_frames, number_of_frames[:-2] + b"1A"))
    good = write_cr_study(tmp_path / "good", size=128)
    report = tmp_path / "good" / "report.dcm"
    shutil.copy(PYDICOM_TEST_FILES / "test-SR.dcm", report)
    restamp(type(good)(good.study_uid, good.series_uids, (report,)), StudyInstanceUID=good.study_uid)
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"*": "<think>clear</think>\\boxed{No Finding}"}))
    result = subprocess.run(
        [sys.executable, "-m", "node", "infer", "--json", str(bad.files[0]), str(tmp_path / "good")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "QOQ_NODE__LOG__LEVEL": "WARNING",
             "QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(responses)})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    outcomes = {outcome["study_uid"]: outcome for outcome in json.loads(result.stdout)}
    assert set(outcomes) == {bad.study_uid, good.study_uid}
    assert outcomes[bad.study_uid]["error"].startswith("cannot prepare the study: ValueError")
    assert outcomes[good.study_uid]["labels"] == ["No Finding"] and outcomes[good.study_uid]["files"] == 1
    assert "report.dcm: not read: SOP class 1.2.840.10008.5.1.4.1.1.88.33 is in dicom.ignored_sop_classes" \
        in result.stderr
