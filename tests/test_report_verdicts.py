"""The radiologist's final report over MLLP to the node's own listener, against the answer the node really
gave (a study read with the replay engine): the verdict recorded in the node's state, a correction replacing
it, a report that comes first waiting for its study, and its text never in the log."""

from __future__ import annotations

import time
from pathlib import Path

from structlog.testing import capture_logs

from node.store import COMPLETE
from node.store.verdicts import Source
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import report_message
from tests.helpers import replay_engine, report_count, send_hl7, state, verdicts_of, wait_for


def _node(make_node, tmp_path: Path, answer: str):
    return make_node(engine=replay_engine(tmp_path / answer, {"*": f"<think>read</think> \\boxed{{{answer}}}"}),
                     hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0},
                     context={"default_authority": "HOSP"})


def _read(node, storescu, directory: Path, accession: str) -> str:
    """A chest radiograph with ``accession`` sent to the node and read; its study UID."""
    study = restamp(write_cr_study(directory, size=128), PatientID="REP-0001", AccessionNumber=accession)
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE, timeout=60, what="the study read")
    return study.study_uid


def _verdicts(node, study_uid: str) -> list[tuple[str, str, dict | None]]:
    """The study's verdicts: (the report's accession, verdict, labels found); the accession is kept hashed only."""
    verdicts = verdicts_of(node.store, study_uid)
    keys = {node.store.verdicts.source_key(Source.REPORT, f"ACC-{n}"): f"ACC-{n}" for n in range(1, 4)}
    return [(keys[v.source_key], v.verdict, v.found) for v in verdicts]


def test_reports_give_verdicts_against_the_answer(make_node, tmp_path: Path, storescu) -> None:
    """AI Pneumonia: "Right upper lobe pneumonia." agrees; its correction "Possible small effusion." replaces
    the verdict with unknown (uncertain); a report for an accession not yet read waits, kept, and is judged
    when its study is read. AI Pneumothorax: "No pneumothorax. Normal heart size." (MDM^T02) disagrees."""
    node = _node(make_node, tmp_path, "Pneumonia")
    first = _read(node, storescu, tmp_path / "s1", "ACC-1")
    port = node.hl7.port
    with capture_logs() as logs:
        assert send_hl7(port, report_message("REP1", "REP-0001", "ACC-1", "Right upper lobe pneumonia.")) == "AA"
    assert _verdicts(node, first) == [("ACC-1", "agree", {"Pneumonia": "affirmed"})]
    [verdict] = verdicts_of(node.store, first)
    assert (verdict.source, verdict.task, verdict.ai_labels, verdict.version) == ("report", "chest_xray",
                                                                                 ("Pneumonia",), 1)
    assert {"hl7.received", "verdict.recorded"} <= {event["event"] for event in logs}
    assert "pneumonia" not in repr(logs).lower()  # neither the report's text nor the labels found

    before = time.time()
    assert send_hl7(port, report_message("REP2", "REP-0001", "ACC-1", "Possible small effusion.", "C")) == "AA"
    assert _verdicts(node, first) == [("ACC-1", "unknown", {"Pleural Effusion": "uncertain"})]
    assert verdicts_of(node.store, first)[0].received_at >= before

    assert send_hl7(port, report_message("REP3", "REP-0001", "ACC-2", "No pneumonia.")) == "AA"
    assert report_count(node.store, waiting=True) == 1
    second = _read(node, storescu, tmp_path / "s2", "ACC-2")
    wait_for(lambda: _verdicts(node, second), timeout=10, what="the waiting report judged")
    assert _verdicts(node, second) == [("ACC-2", "disagree", {"Pneumonia": "negated"})]
    assert report_count(node.store, waiting=True) == 0

    other = _node(make_node, tmp_path, "Pneumothorax")
    third = _read(other, storescu, tmp_path / "s3", "ACC-3")
    assert send_hl7(other.hl7.port, report_message("REP4", "REP-0001", "ACC-3", "No pneumothorax. Normal heart size.",
                                                message_type="MDM^T02")) == "AA"
    assert _verdicts(other, third) == [("ACC-3", "disagree", {"Pneumothorax": "negated"})]
