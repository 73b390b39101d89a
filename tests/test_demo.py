"""``qoq-node demo``: the newcomer's first look at the whole loop, with and without Orthanc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from node import demo
from tests.helpers import LONGEST_WAIT_SECONDS


@pytest.mark.usefixtures("orthanc_installed")
def test_demo_with_orthanc_shows_every_result_in_the_pacs_and_the_ehr(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "node", "demo", "--workdir", "demo"], capture_output=True,
                         text=True, timeout=LONGEST_WAIT_SECONDS, cwd=tmp_path)  # a relative folder, as a user gives it
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": complete") == 2
    for kind in ("structured report", "segmentation", "presentation state"):
        assert run.stdout.count(f"PACS  {kind}") == 2
    assert run.stdout.count("PACS  key image, boxes burned in (SC)") == 1  # of the CR only
    assert run.stdout.count("PACS  key object selection") == 2
    assert run.stdout.count("PACS  AI report (Encapsulated PDF)") == 2
    assert run.stdout.count("EHR   ORU^R01 control ID QOQ") == 2
    # what the model answered, where its box is, and the ORU's key fields
    assert "answer   Lung Lesion" in run.stdout and "answer   Acute PE" in run.stdout
    assert run.stdout.count("finding  ") == 2 and "columns" in run.stdout and "rows" in run.stdout
    assert "patient (PID-3) SYN-0001" in run.stdout and "result status (OBR-25) preliminary" in run.stdout
    assert run.stdout.count("label    AI RESULT - RESEARCH USE ONLY") == 2
    assert "/instances/" not in run.stdout  # no links into a PACS that stops with the demo
    assert (tmp_path / "demo" / "pacs" / "db").is_dir() and not (tmp_path / "demo" / "pacs" / "demo").exists()
    # the chest CR went with its patient: the order and the troponin over HL7, the prior from Orthanc
    assert run.stdout.count("to the node's HL7 listener ... AA") == 2
    assert "given Reason for exam: cough and fever for 3 days, rule out pneumonia." in run.stdout
    assert "given - Troponin I (LN 10839-9): 0.09 ng/mL, high" in run.stdout
    assert "given Image 2: a prior CR study" in run.stdout


@pytest.mark.slow  # several seconds: qoq-node as child processes
def test_demo_without_orthanc_uses_the_built_in_pacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda _: None)
    said: list[str] = []
    assert demo.run_demo(tmp_path, say=said.append) == 0
    output = "\n".join(said)
    assert "built-in storage SCP" in output and output.count("PACS  ") == 11
    assert "given Reason for exam: cough" in output and "prior" not in output  # no PACS to query
    stored = [pydicom.dcmread(path) for path in (tmp_path / "pacs").glob("*.dcm")]
    # the CR's burned-in key image too (Modality OT): secondary captures of radiographs are on by default
    assert sorted(ds.Modality for ds in stored) == ["DOC", "DOC", "KO", "KO", "OT", "PR", "PR", "SEG", "SEG", "SR",
                                                    "SR"]
