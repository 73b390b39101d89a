"""``qoq-node demo``: the newcomer's first look at the whole loop, with and without Orthanc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from node import demo


def test_demo_with_orthanc_shows_every_result_in_the_pacs_and_the_ehr(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "node", "demo", "--workdir", str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": complete") == 2
    for kind in ("structured report", "segmentation", "presentation state"):
        assert run.stdout.count(f"PACS  {kind}") == 2
    assert run.stdout.count("PACS  key image, boxes burned in (SC)") == 1  # of the CR only
    assert run.stdout.count("PACS  key object selection") == 2
    assert run.stdout.count("EHR   ORU^R01 control ID QOQ") == 2


def test_demo_without_orthanc_uses_the_built_in_pacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda _: None)
    said: list[str] = []
    assert demo.run_demo(tmp_path, say=said.append) == 0
    output = "\n".join(said)
    assert "built-in storage SCP" in output and output.count("PACS  ") == 9
    stored = [pydicom.dcmread(path) for path in (tmp_path / "pacs").glob("*.dcm")]
    # the CR's burned-in key image too (Modality OT): secondary captures of radiographs are on by default
    assert sorted(ds.Modality for ds in stored) == ["KO", "KO", "OT", "PR", "PR", "SEG", "SEG", "SR", "SR"]
