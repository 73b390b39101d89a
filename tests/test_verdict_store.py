"""The quality record: the verdicts table (upsert per study, source and key; rejection), the answers table
kept with the queued results, no identifier kept past its study (source keys hashed, a purged study's UID
replaced by its key), and the migration of a schema 5 and a schema 7 database."""

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from node.store import Answer, Store, Verdict
from node.store.keys import KEY_FILE, legacy_key
from node.store.schema import SCHEMA_VERSION
from node.store.verdicts import Source
from tests.helpers import instance_record, is_rejected, verdicts_of


def _report(verdict: str, at: float, study: str = "1.2.3", key: str = "ACC1") -> Verdict:
    return Verdict(study, 1, "chest_xray", "report", key, verdict, received_at=at, ai_labels=("Pneumonia",),
                   found={"Pneumonia": "affirmed"})


def test_the_newest_judgement_per_study_source_and_key_wins(tmp_path: Path) -> None:
    """A corrected report replaces the earlier verdict; another source or key is another row; rows read back
    with their labels as tuples and dicts."""
    store = Store(tmp_path / "state.db")
    store.verdicts.record(_report("disagree", at=10))
    store.verdicts.record(_report("agree", at=20))
    store.verdicts.record(Verdict("1.2.3", None, "chest_xray", "api", "1.2.3|radiologist", "correct", 30,
                                  found=("Pneumothorax",), reader_role="radiologist"))
    first, second = verdicts_of(store, "1.2.3")
    assert (first.source_key, second.source_key) == (store.verdicts.source_key(Source.REPORT, "ACC1"),
                                                     store.verdicts.source_key(Source.API, "1.2.3|radiologist"))
    with store.database.reading() as db:  # the raw keys are nowhere
        assert "ACC1" not in repr(db.execute("SELECT * FROM verdicts").fetchall())
    assert (first.verdict, first.received_at, first.found, first.ai_labels) == (
        "agree", 20, {"Pneumonia": "affirmed"}, ("Pneumonia",))
    assert (second.verdict, second.found, second.reader_role, second.version) == (
        "correct", ("Pneumothorax",), "radiologist", None)
    assert second.recorded_at > 0
    assert [v.verdict for v in store.verdicts.since(25)] == ["correct"]
    assert store.verdicts.since(0, task="other") == []
    store.verdicts.record(_report("partial", at=40, study="9.9"))
    assert [v.study_instance_uid for v in store.verdicts.latest(2, "chest_xray")] == ["9.9", "1.2.3"]
    store.close()


def test_only_an_iocm_rejection_rejects_a_result(tmp_path: Path) -> None:
    """An API 'reject' is a verdict only; an IOCM rejection rejects its version (or every one when its
    version is not known)."""
    store = Store(tmp_path / "state.db")
    store.verdicts.record(Verdict("1.1", 1, "t", "api", "1.1|r", "reject", 1, reader_role="r"))
    assert not is_rejected(store, "1.1")
    store.verdicts.record(Verdict("1.1", 2, "t", "iocm", "2.25.1", "reject", 2, reason_code="113001"))
    assert is_rejected(store, "1.1") and is_rejected(store, "1.1", 2)
    assert not is_rejected(store, "1.1", 1)
    store.verdicts.record(Verdict("2.2", None, "t", "iocm", "2.25.2", "reject", 3, reason_code="113037"))
    assert is_rejected(store, "2.2", 5)
    store.close()


def test_a_verdict_its_source_does_not_give_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with pytest.raises(ValueError, match="is not one source"):
        store.verdicts.record(Verdict("1.1", 1, "t", "api", "k", "agree", 1))
    assert verdicts_of(store, "1.1") == []
    store.close()


def test_the_answer_is_kept_with_the_queued_results(tmp_path: Path) -> None:
    """The answer is written in the transaction that queues the results (found by study or by accession, of which
    only a hash is kept); a superseded read keeps none."""
    store = Store(tmp_path / "state.db")
    store.instances.record([instance_record("1.2.3.1", study="1.2.3", at=1)])
    assert store.studies.mark_stable("1.2.3", last_received=1, now=2)
    answer = Answer("1.2.3", 1, "chest_xray", ("Pneumonia",), "ACME", "X1", 5.0, store.answers.accession_key("ACC1"))
    assert store.studies.queue_results("1.2.3", 1, [], now=5, answer=answer)
    assert store.answers.for_study("1.2.3") == answer
    assert store.answers.since(0, "chest_xray") == [answer] == store.answers.first(10, "chest_xray")
    assert store.answers.for_accession(" ACC1") == answer and "ACC1" not in answer.accession_key
    assert store.answers.for_accession("ACC2") is None and store.answers.for_accession("") is None
    assert not store.studies.queue_results("1.2.3", 1, [], now=6, answer=Answer("1.2.3", 1, "x", (), "", "", 6))
    assert store.answers.for_study("1.2.3", 1) == answer
    store.close()


def test_a_schema_5_database_is_migrated(tmp_path: Path) -> None:
    """A database a schema 5 node wrote (no quality tables) opens at schema 6 with its rows kept, and takes
    verdicts and answers."""
    path = tmp_path / "state.db"
    store = Store(path)
    store.instances.record([instance_record("1.2.3.1", study="1.2.3", at=1)])
    store.close()
    old = sqlite3.connect(path)
    old.executescript("DROP TABLE verdicts; DROP TABLE answers; PRAGMA user_version=5;")
    old.close()
    store = Store(path)
    assert store.database.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
    assert [s.study_uid for s in store.studies.summaries()] == ["1.2.3"]
    store.verdicts.record(_report("agree", at=1))
    assert verdicts_of(store, "1.2.3")[0].verdict == "agree"
    assert store.answers.for_study("1.2.3") is None
    store.close()


def _purgeable(store: Store, study: str = "1.2.3") -> None:
    """A finished study, answered, with a report verdict, an API verdict and a matched report."""
    store.instances.record([instance_record(f"{study}.1", study=study, at=1)])
    assert store.studies.mark_stable(study, last_received=1, now=2)
    accession = store.answers.accession_key("ACC1")
    assert store.studies.queue_results(study, 1, [], now=3, answer=Answer(study, 1, "chest_xray", ("Pneumonia",),
                                                                          "ACME", "X1", 3, accession))
    store.verdicts.record(_report("agree", at=4, study=study))
    store.verdicts.record(Verdict(study, 1, "chest_xray", "api", f"{study}|radiologist", "accept", 5,
                                  reader_role="radiologist"))
    with store.database.transaction() as db:
        message = db.execute("INSERT INTO hl7_messages (control_id, message_type, sending_application, patient_key,"
                             " path, received_at) VALUES (?, 'ORU^R01', 'RIS', 'K', 'hl7/r', 4)", (study,)).lastrowid
        db.execute("INSERT INTO reports (message_id, patient_key, placer, filler, accession, status, text,"
                   " received_at, study_uid) VALUES (?, 'K', 'P1', 'F1', 'ACC1', 'F', 'x', 4, ?)", (message, study))


def test_a_purged_study_leaves_only_its_key_in_the_quality_record(tmp_path: Path) -> None:
    """Retention's purge replaces the study UID by its key in answers, verdicts and reports, in one go; the rows
    stay, still told apart per study and still counted."""
    store = Store(tmp_path / "state.db")
    _purgeable(store)
    assert store.retention.purge_study("1.2.3", before=1e12, remove=lambda paths: None) == 1
    key = store.keys.study("1.2.3")
    assert store.answers.for_study("1.2.3") is None and verdicts_of(store, "1.2.3") == []
    assert store.answers.for_study(key).labels == ("Pneumonia",)
    assert store.answers.for_accession("ACC1") is None  # the feedback API: 404, as for the study's UID
    assert {v.verdict for v in verdicts_of(store, key)} == {"agree", "accept"}
    assert store.verdicts.counts() == {("chest_xray", "report", "agree"): 1, ("chest_xray", "api", "accept"): 1}
    with store.database.reading() as db:
        assert db.execute("SELECT study_uid FROM reports").fetchall() == [(key,)]
        assert "1.2.3'" not in repr([db.execute(f"SELECT * FROM {t}").fetchall() for t in ("answers", "verdicts")])
    store.close()


def test_a_schema_7_database_keeps_no_identifier_in_its_quality_record(tmp_path: Path) -> None:
    """A schema 7 node kept the verdicts' source keys as written and purged studies' UIDs in clear: at schema 8
    the keys are hashed (once: opening again changes nothing), a purged study's rows keep only its key, and a
    study still kept keeps its UID (a correction still replaces its verdict)."""
    path = tmp_path / "state.db"
    store = Store(path)
    _purgeable(store, "1.2.3")
    _purgeable(store, "4.5.6")
    with store.database.transaction() as db:
        db.execute("UPDATE verdicts SET source_key = CASE source WHEN 'report' THEN 'ACC1'"
                   " ELSE study_instance_uid || '|radiologist' END")
        db.execute("DELETE FROM instances WHERE study_uid = '4.5.6'")
        db.execute("DELETE FROM studies WHERE study_uid = '4.5.6'")  # purged by a schema 7 node
        db.execute("PRAGMA user_version=7")
    store.close()
    for _ in range(2):
        store = Store(path)
        assert store.database.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 9
        kept = {(v.source, v.source_key) for v in verdicts_of(store, "1.2.3")}
        assert kept == {("report", legacy_key("report", "ACC1")), ("api", legacy_key("api", "1.2.3|radiologist"))}
        assert len(verdicts_of(store, legacy_key("study", "4.5.6"))) == 2
        assert store.answers.for_study(legacy_key("study", "4.5.6")) is not None
        store.close()
    store = Store(path)
    store.verdicts.record(_report("disagree", at=9))
    assert sorted(v.verdict for v in verdicts_of(store, "1.2.3")) == ["accept", "disagree"]
    with store.database.reading() as db:
        quality = repr([db.execute(f"SELECT * FROM {t}").fetchall() for t in ("answers", "verdicts")])
        reports = repr(db.execute("SELECT * FROM reports").fetchall())
    assert "ACC1" not in quality and "4.5.6" not in quality + reports
    assert legacy_key("study", "4.5.6") in reports
    store.close()


def test_a_rejection_and_the_cancelling_of_its_items_are_one_transaction(tmp_path: Path) -> None:
    """An IOCM verdict with its results folder cancels that folder's undelivered items with it: both are kept,
    or (the cancelling fails) neither."""
    store = Store(tmp_path / "state.db")
    for key, path in (("2.25.1", "results/1.1/v1/sr.dcm"), ("2.25.2", "results/1.1/v2/sr.dcm")):
        assert store.outbox.enqueue("pacs", "dicom", key, path, "1.1", now=1)
    rejection = Verdict("1.1", 1, "t", Source.IOCM, "2.25.9", "reject", 2, reason_code="113001")
    with store.database.transaction() as db:
        db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON outbox BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.IntegrityError):
        store.verdicts.record(rejection, cancel_results="results/1.1/v1/", now=3)
    assert verdicts_of(store, "1.1") == [] and {item.state for item in store.outbox.items()} == {"pending"}
    with store.database.transaction() as db:
        db.execute("DROP TRIGGER refuse")
    assert store.verdicts.record(rejection, cancel_results="results/1.1/v1/", now=3) == 1
    assert is_rejected(store, "1.1", 1)
    assert {item.key: item.state for item in store.outbox.items()} == {"2.25.1": "cancelled", "2.25.2": "pending"}
    store.close()


def test_the_identifier_key_is_made_once_and_kept(tmp_path: Path) -> None:
    """The node's key file is made on the first start (32 bytes, 0600) and reused on the next: an accession keyed
    before a restart is found after it; the keys are no plain SHA-256. A lost key file is made anew, with a
    warning (nothing keyed before it is found by its identifier any more)."""
    store = Store(tmp_path / "state.db")
    key_file = tmp_path / KEY_FILE
    secret = key_file.read_bytes()
    assert len(secret) == 32 and key_file.stat().st_mode & 0o777 == 0o600
    store.instances.record([instance_record("1.2.3.1", study="1.2.3", at=1)])
    assert store.studies.mark_stable("1.2.3", last_received=1, now=2)
    answer = Answer("1.2.3", 1, "chest_xray", (), "", "", 3, store.answers.accession_key("ACC1"))
    assert store.studies.queue_results("1.2.3", 1, [], now=3, answer=answer)
    assert answer.accession_key not in ("", legacy_key("accession", "ACC1"))
    store.close()
    store = Store(tmp_path / "state.db")
    assert key_file.read_bytes() == secret and store.answers.for_accession("ACC1") == answer
    store.close()
    key_file.unlink()
    with capture_logs() as logged:
        store = Store(tmp_path / "state.db")
    assert key_file.read_bytes() != secret and store.answers.for_accession("ACC1") is None
    assert [event["event"] for event in logged] == ["store.identifier_key_made"]
    store.close()


def test_a_schema_8_database_keeps_its_plain_keys_usable(tmp_path: Path) -> None:
    """Schema 8 kept plain SHA-256 keys: at schema 9 its rows are marked so, still found by their identifiers
    (an answer by accession; a corrected report re-keys and replaces its verdict), and an IOCM verdict spelled
    'rejected' is 'reject'."""
    path = tmp_path / "state.db"
    store = Store(path)
    _purgeable(store, "1.2.3")
    store.verdicts.record(Verdict("1.2.3", 1, "chest_xray", Source.IOCM, "2.25.7", "reject", 6, reason_code="113001"))
    with store.database.transaction() as db:
        db.execute("UPDATE answers SET accession_key = ?", (legacy_key("accession", "ACC1"),))
        db.execute("UPDATE verdicts SET source_key = CASE source WHEN 'report' THEN ? ELSE 'old' END,"
                   " verdict = CASE source WHEN 'iocm' THEN 'rejected' ELSE verdict END",
                   (legacy_key("report", "ACC1"),))
        db.execute("PRAGMA user_version=8")
    store.close()
    store = Store(path)
    with store.database.reading() as db:
        assert db.execute("SELECT DISTINCT keyed FROM verdicts").fetchall() == [(0,)]
    assert store.answers.for_accession("ACC1") is not None
    assert store.verdicts.counts()[("chest_xray", "iocm", "reject")] == 1
    store.verdicts.record(_report("disagree", at=9))
    reports = [v for v in verdicts_of(store, "1.2.3") if v.source == Source.REPORT]
    assert [(v.verdict, v.source_key) for v in reports] == [("disagree", store.verdicts.source_key(Source.REPORT,
                                                                                                  "ACC1"))]
    store.close()
