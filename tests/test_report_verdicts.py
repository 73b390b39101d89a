"""The radiologist's final report over MLLP to the node's own listener, against the answer the node really
gave (a study read with the replay engine): the verdict recorded in the node's state, a correction replacing
it, a report that comes first waiting for its study, a newer version of the study (late instances) judged
again by the report already kept, and its text never in the log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from structlog.testing import capture_logs

from node.cli import main
from node.config.quality import FeedbackConfig
from node.feedback.submit import parse, submit
from node.ops.logging import uid_hash
from node.store import COMPLETE
from node.store.verdicts import Source
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import report_message
from tests.helpers import replay_engine, report_count, send_hl7, state, verdicts_of, wait_for


def _node(make_node, tmp_path: Path, answer: str, **sections: dict):
    return make_node(engine=replay_engine(tmp_path / answer, {"*": f"<think>read</think> \\boxed{{{answer}}}"}),
                     hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0},
                     context={"default_authority": "HOSP"}, **sections)


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


def test_a_newer_version_of_the_study_is_judged_again_by_its_report(make_node, tmp_path: Path, storescu,
                                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """AI Pneumonia on version 1: "Right upper lobe pneumonia." agrees, and a reader accepts the answer through
    the feedback API. A late instance makes version 2, which the node (now answering No Finding) reads: the same
    report's verdict becomes disagree on version 2, replacing the first (one row, received when the report
    was), logged without identifier or text; the reader's verdict on version 1 stays as it was."""
    storage = {"root": str(tmp_path / "state")}
    node = _node(make_node, tmp_path, "Pneumonia", storage=storage)
    study_uid = _read(node, storescu, tmp_path / "s1", "ACC-1")
    assert send_hl7(node.hl7.port, report_message("REP1", "REP-0001", "ACC-1", "Right upper lobe pneumonia.")) == "AA"
    assert _verdicts(node, study_uid) == [("ACC-1", "agree", {"Pneumonia": "affirmed"})]
    submit(node.store, {"chest_xray": ("Pneumonia", "No Finding")}, FeedbackConfig(),
           parse({"study_instance_uid": study_uid, "verdict": "accept", "reader_role": "radiologist"}))
    reported, [accepted] = ([v for v in verdicts_of(node.store, study_uid) if v.source == source]
                            for source in (Source.REPORT, Source.API))
    node.stop()

    node = _node(make_node, tmp_path, "No Finding", storage=storage)
    late = pydicom.dcmread(tmp_path / "s1" / "cr.dcm")
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late.InstanceNumber = 2
    late.save_as(tmp_path / "late.dcm", enforce_file_format=True)
    with capture_logs() as logs:
        assert storescu(node.scp.port, [tmp_path / "late.dcm"]).returncode == 0
        wait_for(lambda: [v.version for v in verdicts_of(node.store, study_uid) if v.source == Source.REPORT] == [2],
                 timeout=60, what="the report judged again on version 2")
    assert node.store.answers.for_study(study_uid).labels == ("No Finding",)
    report, api = ([v for v in verdicts_of(node.store, study_uid) if v.source == source]
                   for source in (Source.REPORT, Source.API))
    assert [(v.verdict, v.version, v.ai_labels, v.received_at) for v in report] == [
        ("disagree", 2, ("No Finding",), reported[0].received_at)]
    assert report[0].recorded_at > reported[0].recorded_at
    assert api == [accepted] and accepted.version == 1
    [event] = [e for e in logs if e["event"] == "verdict.rejudged"]
    assert {k: event[k] for k in ("study", "old_version", "new_version", "old_verdict", "new_verdict")} == {
        "study": uid_hash(study_uid), "old_version": 1, "new_version": 2, "old_verdict": "agree",
        "new_verdict": "disagree"}
    assert study_uid not in repr(logs) and "pneumonia" not in repr(logs).lower()

    node.stop()
    monkeypatch.setenv("QOQ_NODE__STORAGE__ROOT", storage["root"])
    assert main(["quality", "--json"]) == 0
    [task] = json.loads(capsys.readouterr().out)["tasks"]
    assert task["verdicts"] == {"disagree": 1, "accept": 1}
