"""The context on the command line: ``qoq-node infer --context FILE`` offline, and ``qoq-node context``
on a running node's state (terminal output only)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from node.store.clinical import patient_key
from node.testing.loopback import LOOPBACK
from node.testing.node_process import replay_settings
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import LabValue, lab_message, order_message
from tests.helpers import mllp_exchange, qoq_node, sr_texts, wait_for

#: The CLI's log at warnings only: stderr holds what the test reads.
QUIET = {"QOQ_NODE__LOG__LEVEL": "WARNING"}
TROPONIN = LabValue("10839-9", "Troponin I", "0.9", "ng/mL", "0-0.04", "H", "20260101100000")


def test_infer_takes_orders_and_labs_from_an_hl7_file(tmp_path: Path) -> None:
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="CLI-1", AccessionNumber="ACC-CLI")
    context = tmp_path / "context.hl7"
    context.write_text("\n\n".join([order_message("O1", "CLI-1", "ACC-CLI", "fall from a ladder"),
                                    lab_message("L1", "CLI-1", [TROPONIN]), "MSH|garbage"]))
    env = {**QUIET, **replay_settings(tmp_path / "responses.json", {"*": "<think>ok</think>\\boxed{Fracture}"}),
           "QOQ_NODE__CONTEXT__DEFAULT_AUTHORITY": "HOSP"}
    result = qoq_node("infer", "--json", "--context", str(context), "--out", str(tmp_path / "out"),
                      str(study.files[0]), env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "message 3:" in result.stderr  # the unusable one is named, the others are used
    [outcome] = json.loads(result.stdout)
    assert "Reason for exam: fall from a ladder." in outcome["context"]
    assert "Troponin I (LN 10839-9): 0.9 ng/mL, high" in outcome["context"]
    sr = pydicom.dcmread(tmp_path / "out" / study.study_uid / "sr.dcm")
    assert any("Reason for exam: fall from a ladder." in text for text in sr_texts(sr))
    oru = (tmp_path / "out" / study.study_uid / "oru.hl7").read_text()
    assert "AI-INPUT" in oru and study.study_uid in oru


def test_the_context_command_shows_the_patient_and_the_study(make_node, tmp_path: Path, storescu) -> None:
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0},
                     context={"default_authority": "HOSP"})
    assert "|AA|" in mllp_exchange(node.hl7.port, order_message("O1", "SHOW-1", "ACC-SHOW", "haemoptysis").encode())
    assert "|AA|" in mllp_exchange(node.hl7.port, lab_message("L1", "SHOW-1", [TROPONIN]).encode())
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="SHOW-1", AccessionNumber="ACC-SHOW")
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: any(s.state == "complete" for s in node.store.studies.summaries()), timeout=30)
    config = tmp_path / "node.yaml"
    config.write_text(f"storage: {{root: {node.config.storage.root}}}\ncontext: {{default_authority: HOSP}}\n")
    key = patient_key("SHOW-1", "HOSP")
    shown = qoq_node("context", "--config", str(config), key, env=QUIET, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "reason: haemoptysis" in shown.stdout and "Troponin I (LN 10839-9): 0.9 ng/mL" in shown.stdout
    assert f"study {study.study_uid} CR" in shown.stdout and "(received)" in shown.stdout
    would = qoq_node("context", "--config", str(config), "--study", study.study_uid, env=QUIET, check=False)
    assert would.returncode == 0, would.stderr
    assert f"patient {key}" in would.stdout and "Reason for exam: haemoptysis." in would.stdout
    unknown = qoq_node("context", "--config", str(config), "0000000000000000", env=QUIET, check=False)
    assert "nothing is kept" in unknown.stdout
