"""State database and study assembly: versions, duplicates, stability, persistence."""

from __future__ import annotations

from pathlib import Path

import pydicom

from node.ingest.assembler import StudyAssembler
from node.ops.metrics import Metrics
from node.store import RECEIVING, STABLE, InstanceRecord, Store, StudyUpdate


def _record(sop: str, study: str = "1.2.3", at: float = 100.0) -> InstanceRecord:
    return InstanceRecord(sop, study, "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
                          "CT", f"spool/{study}/{sop}.dcm", 10, "PACS", at)


def _receive(store: Store, record: InstanceRecord) -> StudyUpdate:
    [update] = store.record_instances([record])
    return update


def test_duplicates_are_recorded_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert _receive(store, _record("1.1")).stored
    assert not _receive(store, _record("1.1")).stored
    assert store.stored_instance("1.1") is not None
    assert [s.instances for s in store.studies()] == [1]


def test_a_sop_instance_uid_resent_under_another_study_is_a_duplicate(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, _record("1.1", study="1.2.3"))
    resent = _receive(store, _record("1.1", study="9.9.9"))  # a sender reusing the UID in a study never seen
    assert (resent.stored, resent.study_version, resent.new_version) == (False, 1, False)
    assert [s.study_uid for s in store.studies()] == ["1.2.3"]


def test_late_instance_starts_a_new_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = _receive(store, _record("1.1", at=100))
    assert (first.study_version, first.new_version) == (1, True)
    assert not _receive(store, _record("1.2", at=101)).new_version
    assert store.mark_stable("1.2.3", last_received=101, now=110)
    late = _receive(store, _record("1.3", at=120))
    assert (late.study_version, late.new_version) == (2, True)
    [study] = store.studies()
    assert (study.version, study.state, study.instances) == (2, RECEIVING, 3)


def test_mark_stable_loses_to_a_newer_instance(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, _record("1.1", at=100))
    _receive(store, _record("1.2", at=105))
    assert not store.mark_stable("1.2.3", last_received=100, now=110)  # it saw the older time
    assert store.studies_by_state() == {RECEIVING: 1}


def test_assembler_waits_for_quiet_and_for_open_associations(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assembler = StudyAssembler(store, Metrics(), stable_seconds=5)
    _receive(store, _record("1.1", at=100))
    assembler.carried_by(association_id=7, study_uid="1.2.3")
    assert assembler.sweep(now=103) == []  # not quiet long enough
    assert assembler.sweep(now=200) == []  # quiet, but an association still carries it
    assembler.association_closed(7)
    assert assembler.sweep(now=200) == ["1.2.3"]
    assert store.studies_by_state() == {STABLE: 1}


def test_timers_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _receive(store, _record("1.1", at=100))
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
    [study] = store.studies()
    assert (study.study_uid, study.state, study.attempts, study.detail) == ("1.2.3", STABLE, 0, "")
    [due] = store.stable_studies(now=10, limit=5)
    assert store.skip_study(due.study_uid, due.version, "no routing rule", now=11)
    assert store.studies()[0].state == "skipped"
    store.close()


def test_a_refused_instance_with_a_non_ascii_uid_is_still_quarantined(node, tmp_path: Path) -> None:
    """A command whose SOP Instance UID is not ASCII is refused (it is not the dataset's) and — though
    File Meta cannot hold that UID — kept in the quarantine with its note, not lost with a log line."""
    from node.ingest.receiver import Receiver, StoreRequest
    from node.testing.synthetic import write_ct_study
    from tests.conftest import dataset_bytes

    [path] = write_ct_study(tmp_path / "ct", slices=1, size=32).files
    ds = pydicom.dcmread(path)
    receiver = Receiver(node.store, node.spool, node.commits, node.metrics, 0)
    command = (str(ds.SOPClassUID), f"{ds.SOPInstanceUID}.é")
    received = receiver.open_incoming(*command, str(ds.file_meta.TransferSyntaxUID), "SENDER")
    received.write(dataset_bytes(path))
    outcome = receiver.receive(StoreRequest(received, *command, "SENDER"))
    assert outcome.status != 0
    [kept] = node.store.quarantined()
    assert kept.reason == "sop_instance_mismatch" and Path(kept.path).is_file()
