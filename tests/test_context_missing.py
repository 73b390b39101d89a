"""Context that is not there says why, without patient data: in ``infer --json``, in ``qoq-node context`` and,
in ``serve``, as a log event and a metric (issue 26, item 12: an order whose PID-3 names an authority, for a
study whose Patient ID names none, with ``context.default_authority`` unset, gave ``context: null``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from structlog.testing import capture_logs

from node.testing.loopback import LOOPBACK
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import LabValue, lab_message, order_message
from tests.helpers import metric_value, mllp_exchange, wait_for

REPO = Path(__file__).resolve().parents[1]
TROPONIN = LabValue("10839-9", "Troponin I", "0.9", "ng/mL", "0-0.04", "H", "20260101100000")
#: What the study's context lacks, and why: the order is kept under the identity with the authority the
#: DICOM does not name; the labs are kept for no one the study names.
EXPECTED = [{"item": "order", "reason": "other_patient"}, {"item": "labs", "reason": "no_issuer"}]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "QOQ_NODE__LOG__LEVEL": "WARNING",
                               **(env or {})}, timeout=300)


def _coded(missing: list[dict]) -> list[dict]:
    return [{"item": m["item"], "reason": m["reason"]} for m in missing]


def test_infer_says_why_the_context_is_missing(tmp_path: Path) -> None:
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="MISS-1", AccessionNumber="ACC-MISS")
    context = tmp_path / "context.hl7"
    context.write_text("\n\n".join([order_message("O1", "MISS-1", "ACC-MISS", "fall from a ladder"),
                                    lab_message("L1", "MISS-1", [TROPONIN])]))
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"*": "<think>ok</think>\\boxed{Fracture}"}))
    result = _cli("infer", "--json", "--context", str(context), str(study.files[0]),
                  env={"QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(responses)})
    assert result.returncode == 0, result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome["context"] is None
    assert _coded(outcome["context_missing"]) == EXPECTED
    said = json.dumps(outcome["context_missing"])
    assert "default_authority" in said and "MISS-1" not in said and "ACC-MISS" not in said
    alone = _cli("infer", "--json", str(study.files[0]),
                 env={"QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(responses)})
    [outcome] = json.loads(alone.stdout)  # no HL7 file given: that is why
    assert _coded(outcome["context_missing"]) == [{"item": "order", "reason": "no_messages"},
                                                  {"item": "labs", "reason": "no_messages"}]


def test_serve_logs_and_counts_missing_context_and_the_context_command_says_why(make_node, tmp_path: Path,
                                                                                 storescu) -> None:
    with capture_logs() as logged:
        node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0})
        order = order_message("O1", "MISS-2", "ACC-MISS2", "haemoptysis")
        assert "|AA|" in mllp_exchange(node.hl7.port, order.encode())
        assert "|AA|" in mllp_exchange(node.hl7.port, lab_message("L1", "MISS-2", [TROPONIN]).encode())
        study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID="MISS-2", AccessionNumber="ACC-MISS2")
        assert storescu(node.scp.port, list(study.files)).returncode == 0
        wait_for(lambda: any(s.state == "complete" for s in node.store.studies.summaries()), timeout=60)
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_context_missing_total", 'item="order",reason="other_patient"') == 1
    assert metric_value(metrics, "qoqnode_context_missing_total", 'item="labs",reason="no_issuer"') == 1
    events = [event for event in logged if event["event"] == "context.missing"]
    assert sorted((e["item"], e["reason"]) for e in events) == [("labs", "no_issuer"), ("order", "other_patient")]
    assert all("MISS-2" not in json.dumps(e) and "ACC-MISS2" not in json.dumps(e) for e in events)
    config = tmp_path / "node.yaml"
    config.write_text(f"storage: {{root: {node.config.storage.root}}}\n")
    would = _cli("context", "--config", str(config), "--study", study.study_uid)
    assert would.returncode == 0, would.stderr
    assert "  order missing: an order with the study's accession or order number is kept for another patient" \
        in would.stdout
    assert "  labs missing: nothing is kept for the study's patient" in would.stdout
