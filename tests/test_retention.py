"""Retention: finished studies and quarantined objects are deleted after storage.retention_days,
unfinished ones are kept, a purged study can be received again, and the quality record outlives it with no
identifier left in the database."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.app import STATE_DB_NAME
from node.cli import main
from node.config.quality import FeedbackConfig
from node.feedback.submit import FeedbackRefused, parse, submit
from node.ingest.spool import Spool
from node.store import COMPLETE
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import order_message, report_message
from tests.helpers import metric_value, replay_engine, send_hl7, state, verdicts_of, wait_for

DAY = 86_400.0


def test_finished_studies_are_purged_after_retention_and_can_be_received_again(make_node, tmp_path: Path,
                                                                               storescu) -> None:
    node = make_node(storage={"retention_days": 14})
    study = write_cr_study(tmp_path / "cr", size=256)
    no_study = pydicom.dcmread(study.files[0])
    del no_study.StudyInstanceUID
    no_study.SOPInstanceUID = generate_uid()
    no_study.file_meta.MediaStorageSOPInstanceUID = no_study.SOPInstanceUID
    no_study.save_as(tmp_path / "no-study.dcm", enforce_file_format=True)
    storescu(node.scp.port, [tmp_path / "no-study.dcm"])  # refused and quarantined
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE)
    root = node.config.storage.root
    spooled = root / "spool" / study.study_uid
    results = root / "results" / study.study_uid
    assert spooled.is_dir() and results.is_dir() and len(node.store.quarantine.items()) == 1

    assert node.retention.run_once(now=time.time() + 13 * DAY) == 0  # not yet
    assert spooled.is_dir()
    assert node.retention.run_once(now=time.time() + 15 * DAY) == 1
    assert not spooled.exists() and not results.exists()
    assert node.store.studies.summaries() == [] and node.store.outbox.items() == []
    assert node.store.quarantine.items() == []
    assert not list((root / "quarantine").iterdir())
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_retention_purged_total", 'kind="study"') == 1
    assert metric_value(metrics, "qoqnode_retention_purged_total", 'kind="quarantine"') == 1

    # The PACS sends it again: it is stored and read again, not taken for a duplicate.
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE)
    assert [p.name for p in spooled.iterdir()] == [f"{pydicom.dcmread(study.files[0]).SOPInstanceUID}.dcm"]


def test_unfinished_studies_are_kept_and_zero_keeps_everything(make_node, tmp_path: Path, storescu) -> None:
    waiting = make_node(engine={"model": tmp_path / "no-such-model"})  # cannot read: studies stay stable
    study = write_cr_study(tmp_path / "cr", size=256)
    assert storescu(waiting.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(waiting, study.study_uid) == "stable")
    assert waiting.retention.run_once(now=time.time() + 365 * DAY) == 0
    assert (waiting.config.storage.root / "spool" / study.study_uid).is_dir()

    forever = make_node(storage={"retention_days": 0})
    assert storescu(forever.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(forever, study.study_uid) == COMPLETE)
    assert forever.retention.run_once(now=time.time() + 365 * DAY) == 0
    assert len(forever.store.studies.summaries()) == 1


def test_the_spool_makes_a_study_folder_again_when_retention_removed_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    def keep(sop_instance_uid: str, data: bytes) -> Path:
        received = spool.temporary_path()
        received.write_bytes(data)
        return spool.keep(received, "1.2.3", sop_instance_uid)

    first = keep("1.2.3.4", b"first")
    assert spool.remove([first]) == 5 and not first.parent.exists()
    again = keep("1.2.3.5", b"again")  # the folder was known to the spool; it is made again
    assert again.read_bytes() == b"again"
    other = keep("1.2.3.6", b"x")
    assert spool.remove([again]) == 5 and other.parent.is_dir()  # a folder still holding files stays


def _text_values(path: Path) -> str:
    """Every text value of every table of a database, one per line."""
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(value) for table in tables for row in db.execute(f"SELECT * FROM {table}")
                         for value in row if isinstance(value, str))


def test_the_quality_record_outlives_a_purged_study_without_an_identifier(make_node, tmp_path: Path, storescu, capsys,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An order (placer ACC-RETP, filler ACC-RETF), the study read, the radiologist's report (agree) and an API
    verdict: after retention's purge no accession, order number, patient ID or study UID is left in any text
    column of the state database, and ``qoq-node quality --json`` still counts the answer and both verdicts."""
    node = make_node(engine=replay_engine(tmp_path / "replay", {"*": "<think>read</think> \\boxed{Pneumonia}"}),
                     hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0},
                     context={"default_authority": "HOSP"}, storage={"retention_days": 14})
    assert send_hl7(node.hl7.port, order_message("ORD1", "RET-0001", "ACC-RET", "Cough")) == "AA"
    study = restamp(write_cr_study(tmp_path / "cr", size=128), PatientID="RET-0001", AccessionNumber="ACC-RET")
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE, timeout=60, what="the study read")
    assert send_hl7(node.hl7.port, report_message("REP1", "RET-0001", "ACC-RET", "Right upper lobe pneumonia.")) == "AA"
    submit(node.store, {"chest_xray": ("Pneumonia",)}, FeedbackConfig(),
           parse({"study_instance_uid": study.study_uid, "verdict": "accept", "reader_role": "radiologist"}))
    database = node.config.storage.root / STATE_DB_NAME
    identifiers = (study.study_uid, "ACC-RET", "ACC-RETP", "ACC-RETF", "RET-0001")
    kept = _text_values(database)
    assert [identifier for identifier in identifiers if identifier in kept] == list(identifiers[:4])  # within retention

    assert node.retention.run_once(now=time.time() + 15 * DAY) == 1
    left = _text_values(database)
    assert not [identifier for identifier in identifiers if identifier in left]
    key = node.store.keys.study(study.study_uid)
    assert node.store.answers.for_study(key).labels == ("Pneumonia",)
    assert {v.verdict for v in verdicts_of(node.store, key)} == {"agree", "accept"}
    for late in ({"study_instance_uid": study.study_uid}, {"accession": "ACC-RET"}):  # no result to judge now
        with pytest.raises(FeedbackRefused) as refused:
            submit(node.store, {"chest_xray": ("Pneumonia",)}, FeedbackConfig(),
                   parse({**late, "verdict": "reject", "reader_role": "radiologist"}))
        assert refused.value.status == 404

    monkeypatch.setenv("QOQ_NODE__STORAGE__ROOT", str(node.config.storage.root))
    assert main(["quality", "--json"]) == 0
    [task] = json.loads(capsys.readouterr().out)["tasks"]
    assert (task["task"], task["studies"], task["verdicts"]) == ("chest_xray", 1, {"agree": 1, "accept": 1})
