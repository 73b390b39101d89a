"""The context on the command line: ``qoq-node infer --context FILE`` offline, and ``qoq-node context``
on a running node's state (terminal output only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom

from node.store.clinical import patient_key
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import LabValue, lab_message, order_message
from tests.conftest import wait_for
from tests.test_hl7_listener import _exchange

REPO = Path(__file__).resolve().parents[1]
TROPONIN = LabValue("10839-9", "Troponin I", "0.9", "ng/mL", "0-0.04", "H", "20260101100000")


def _texts(item) -> list[str]:
    """Every TEXT value in an SR content tree."""
    found = [str(item.TextValue)] if "TextValue" in item else []
    for child in item.get("ContentSequence", []):
        found += _texts(child)
    return found


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "QOQ_NODE__LOG__LEVEL": "WARNING", **(env or {})}, timeout=300)


def test_infer_takes_orders_and_labs_from_an_hl7_file(tmp_path: Path) -> None:
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="CLI-1", AccessionNumber="ACC-CLI")
    context = tmp_path / "context.hl7"
    context.write_text("\n\n".join([order_message("O1", "CLI-1", "ACC-CLI", "fall from a ladder"),
                                    lab_message("L1", "CLI-1", [TROPONIN]), "MSH|garbage"]))
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"*": "<think>ok</think>\\boxed{Fracture}"}))
    env = {"QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(responses),
           "QOQ_NODE__CONTEXT__DEFAULT_AUTHORITY": "HOSP"}
    result = _cli("infer", "--json", "--context", str(context), "--out", str(tmp_path / "out"), str(study.files[0]),
                  env=env)
    assert result.returncode == 0, result.stderr
    assert "message 3:" in result.stderr  # the unusable one is named, the others are used
    [outcome] = json.loads(result.stdout)
    assert "Reason for exam: fall from a ladder." in outcome["context"]
    assert "Troponin I (LN 10839-9): 0.9 ng/mL, high" in outcome["context"]
    sr = pydicom.dcmread(tmp_path / "out" / study.study_uid / "sr.dcm")
    assert any("Reason for exam: fall from a ladder." in text for text in _texts(sr))
    oru = (tmp_path / "out" / study.study_uid / "oru.hl7").read_text()
    assert "AI-INPUT" in oru and study.study_uid in oru


def test_the_context_command_shows_the_patient_and_the_study(make_node, tmp_path: Path, storescu) -> None:
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0},
                     context={"default_authority": "HOSP"})
    assert "|AA|" in _exchange(node.hl7.port, order_message("O1", "SHOW-1", "ACC-SHOW", "haemoptysis").encode())
    assert "|AA|" in _exchange(node.hl7.port, lab_message("L1", "SHOW-1", [TROPONIN]).encode())
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="SHOW-1", AccessionNumber="ACC-SHOW")
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: any(s.state == "complete" for s in node.store.studies.summaries()), timeout=30)
    config = tmp_path / "node.yaml"
    config.write_text(f"storage: {{root: {node.config.storage.root}}}\ncontext: {{default_authority: HOSP}}\n")
    key = patient_key("SHOW-1", "HOSP")
    shown = _cli("context", "--config", str(config), key)
    assert shown.returncode == 0, shown.stderr
    assert "reason: haemoptysis" in shown.stdout and "Troponin I (LN 10839-9): 0.9 ng/mL" in shown.stdout
    assert f"study {study.study_uid} CR" in shown.stdout and "(received)" in shown.stdout
    would = _cli("context", "--config", str(config), "--study", study.study_uid)
    assert would.returncode == 0, would.stderr
    assert f"patient {key}" in would.stdout and "Reason for exam: haemoptysis." in would.stdout
    assert "nothing is kept" in _cli("context", "--config", str(config), "0000000000000000").stdout
