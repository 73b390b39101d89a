"""State database and study assembly: versions, duplicates, stability, persistence."""

from __future__ import annotations

from pathlib import Path

import pydicom

from node.errors import DETAIL_CHARS
from node.ingest.assembler import StudyAssembler
from node.ops.metrics import Metrics
from node.store import POSTPONEMENT_DETAIL, RECEIVING, STABLE, InstanceRecord, Postponement, Store, StudyUpdate
from tests.helpers import instance_record


def _receive(store: Store, record: InstanceRecord) -> StudyUpdate:
    [update] = store.instances.record([record])
    return update


def test_duplicates_are_recorded_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert _receive(store, instance_record("1.1")).stored
    assert not _receive(store, instance_record("1.1")).stored
    assert store.instances.stored("1.1") is not None
    assert [s.instances for s in store.studies.summaries()] == [1]


def test_a_sop_instance_uid_resent_under_another_study_is_a_duplicate(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, instance_record("1.1", study="1.2.3"))
    resent = _receive(store, instance_record("1.1", study="9.9.9"))  # a sender reusing the UID in a study never seen
    assert (resent.stored, resent.study_version, resent.new_version) == (False, 1, False)
    assert [s.study_uid for s in store.studies.summaries()] == ["1.2.3"]


def test_late_instance_starts_a_new_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = _receive(store, instance_record("1.1", at=100))
    assert (first.study_version, first.new_version) == (1, True)
    assert not _receive(store, instance_record("1.2", at=101)).new_version
    assert store.studies.mark_stable("1.2.3", last_received=101, now=110)
    late = _receive(store, instance_record("1.3", at=120))
    assert (late.study_version, late.new_version) == (2, True)
    [study] = store.studies.summaries()
    assert (study.version, study.state, study.instances) == (2, RECEIVING, 3)


def test_mark_stable_loses_to_a_newer_instance(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, instance_record("1.1", at=100))
    _receive(store, instance_record("1.2", at=105))
    assert not store.studies.mark_stable("1.2.3", last_received=100, now=110)  # it saw the older time
    assert store.studies.counts() == {RECEIVING: 1}


def test_assembler_waits_for_quiet_and_for_open_associations(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assembler = StudyAssembler(store, Metrics(), stable_seconds=5)
    _receive(store, instance_record("1.1", at=100))
    assembler.carried_by(association_id=7, study_uid="1.2.3")
    assert assembler.sweep(now=103) == []  # not quiet long enough
    assert assembler.sweep(now=200) == []  # quiet, but an association still carries it
    assembler.association_closed(7)
    assert assembler.sweep(now=200) == ["1.2.3"]
    assert store.studies.counts() == {STABLE: 1}


def test_timers_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, instance_record("1.1", at=100))
    store.close()
    reopened = Store(tmp_path / "state.db")
    assembler = StudyAssembler(reopened, Metrics(), stable_seconds=5)
    assert assembler.sweep(now=102) == []
    assert assembler.sweep(now=106) == ["1.2.3"]


def test_a_database_of_the_ingest_only_schema_is_migrated(tmp_path: Path) -> None:
    """A state database written before the pipeline existed (schema 1) opens, keeps its studies, and
    those studies go on through the pipeline states."""
    import sqlite3

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(
        "CREATE TABLE studies (study_uid TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL,"
        " first_received REAL NOT NULL, last_received REAL NOT NULL, state_changed_at REAL NOT NULL);"
        "INSERT INTO studies VALUES ('1.2.3', 1, 'stable', 1, 2, 3); PRAGMA user_version=1;"
    )
    old.commit()
    old.close()
    store = Store(tmp_path / "state.db")
    [study] = store.studies.summaries()
    assert (study.study_uid, study.state, study.attempts, study.detail) == ("1.2.3", STABLE, 0, "")
    [due] = store.studies.stable(now=10, limit=5)
    assert store.studies.skip(due.study_uid, due.version, "no routing rule", now=11)
    assert store.studies.summaries()[0].state == "skipped"
    store.close()


def _stable(store: Store, study: str) -> None:
    store.instances.record([instance_record(f"{study}.1", study=study, at=1)])
    assert store.studies.mark_stable(study, last_received=1, now=2)


def test_a_postponed_study_is_released_by_its_code_not_its_words(tmp_path: Path) -> None:
    """Waiting for an order is a code: release finds the studies waiting for it whatever their detail
    says; a study whose read failed since no longer waits."""
    store = Store(tmp_path / "state.db")
    for study in ("1.1", "2.2", "3.3"):
        _stable(store, study)
        assert store.studies.postpone(study, 1, until=100, reason=Postponement.ORDER)
    assert store.studies.fail_attempt("3.3", 1, "cannot read", now=3, max_attempts=3, retry_seconds=50) == STABLE
    assert store.studies.stable(now=10, limit=5) == []
    with store.database.transaction() as db:  # the words may change; what is matched is the code
        db.execute("UPDATE studies SET detail = 'reworded' WHERE study_uid = '2.2'")
    assert store.studies.release_postponed(Postponement.ORDER, now=10) == 2
    assert [s.study_uid for s in store.studies.stable(now=10, limit=5)] == ["1.1", "2.2"]
    [summary] = [s for s in store.studies.summaries() if s.study_uid == "1.1"]
    assert summary.detail == POSTPONEMENT_DETAIL[Postponement.ORDER]
    store.close()


def test_a_study_an_older_node_postponed_is_still_released(tmp_path: Path) -> None:
    """A schema 3 database knew a postponed study by its detail's sentence: migrated, it has the code."""
    store = Store(tmp_path / "state.db")
    _stable(store, "1.1")
    _stable(store, "2.2")
    with store.database.transaction() as db:  # as schema 3 left them: no code column, the sentence in detail
        db.execute("UPDATE studies SET next_try_at = 100, detail = ? WHERE study_uid = '1.1'",
                   (POSTPONEMENT_DETAIL[Postponement.ORDER],))
        db.execute("UPDATE studies SET next_try_at = 100, detail = 'cannot read' WHERE study_uid = '2.2'")
        db.execute("ALTER TABLE studies DROP COLUMN postponed_for")
    store.close()
    reopened = Store(tmp_path / "state.db")
    assert reopened.studies.release_postponed(Postponement.ORDER, now=10) == 1
    assert [s.study_uid for s in reopened.studies.stable(now=10, limit=5)] == ["1.1"]
    reopened.close()


def test_details_are_clipped_where_they_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _stable(store, "1.1")
    assert store.studies.skip("1.1", 1, "x" * 2000, now=3)
    assert len(store.studies.summaries()[0].detail) == DETAIL_CHARS
    store.close()


def test_a_refused_instance_with_a_non_ascii_uid_is_still_quarantined(node, tmp_path: Path) -> None:
    """A command whose SOP Instance UID is not ASCII is refused (it is not the dataset's) and — though
    File Meta cannot hold that UID — kept in the quarantine with its note, not lost with a log line."""
    from node.ingest.receiver import Receiver, StoreRequest
    from node.testing.synthetic import write_ct_study
    from tests.helpers import dataset_bytes

    [path] = write_ct_study(tmp_path / "ct", slices=1, size=32).files
    ds = pydicom.dcmread(path)
    receiver = Receiver(node.store, node.spool, node.commits, node.metrics, 0)
    command = (str(ds.SOPClassUID), f"{ds.SOPInstanceUID}.é")
    received = receiver.open_incoming(*command, str(ds.file_meta.TransferSyntaxUID), "SENDER")
    received.write(dataset_bytes(path))
    outcome = receiver.receive(StoreRequest(received, *command, "SENDER"))
    assert outcome.status != 0
    [kept] = node.store.quarantine.items()
    assert kept.reason == "sop_instance_mismatch" and Path(kept.path).is_file()
