"""The quality record: the verdicts table (upsert per study, source and key; rejection), the answers table
kept with the queued results, and the migration of a schema 5 database."""

import sqlite3
from pathlib import Path

import pytest

from node.store import Answer, Store, Verdict
from node.store.answers import accession_key
from node.store.schema import SCHEMA_VERSION
from tests.helpers import instance_record


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
    first, second = store.verdicts.for_study("1.2.3")
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
    assert not store.verdicts.is_rejected("1.1")
    store.verdicts.record(Verdict("1.1", 2, "t", "iocm", "2.25.1", "rejected", 2, reason_code="113001"))
    assert store.verdicts.is_rejected("1.1") and store.verdicts.is_rejected("1.1", 2)
    assert not store.verdicts.is_rejected("1.1", 1)
    store.verdicts.record(Verdict("2.2", None, "t", "iocm", "2.25.2", "rejected", 3, reason_code="113037"))
    assert store.verdicts.is_rejected("2.2", 5)
    store.close()


def test_a_verdict_its_source_does_not_give_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with pytest.raises(ValueError, match="is not one source"):
        store.verdicts.record(Verdict("1.1", 1, "t", "api", "k", "agree", 1))
    assert store.verdicts.for_study("1.1") == []
    store.close()


def test_the_answer_is_kept_with_the_queued_results(tmp_path: Path) -> None:
    """The answer is written in the transaction that queues the results (found by study or by accession, of which
    only a hash is kept); a superseded read keeps none."""
    store = Store(tmp_path / "state.db")
    store.instances.record([instance_record("1.2.3.1", study="1.2.3", at=1)])
    assert store.studies.mark_stable("1.2.3", last_received=1, now=2)
    answer = Answer("1.2.3", 1, "chest_xray", ("Pneumonia",), "ACME", "X1", 5.0, accession_key("ACC1"))
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
    assert store.verdicts.for_study("1.2.3")[0].verdict == "agree"
    assert store.answers.for_study("1.2.3") is None
    store.close()
