"""The instances table: every stored instance, its file (relative to the storage root) and its study.

Recording an instance brings its study to ``receiving`` in the same transaction
(:func:`node.store.studies.receive`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from node.store.database import Database
from node.store.studies import StudyState, receive


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance, as the state database keeps it."""

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    path: str
    size: int
    calling_ae: str
    received_at: float


@dataclass(frozen=True)
class StudyUpdate:
    """What recording an instance did to its study."""

    stored: bool  # False: the SOP Instance UID was already stored (duplicate)
    study_version: int
    new_version: bool  # True: a new study, or a stable study made to receive again


@dataclass(frozen=True)
class StoredFile:
    """Where a stored instance's file is and how long it was when it was received."""

    sop_instance_uid: str
    study_uid: str
    path: Path
    size: int


def _insert(db: sqlite3.Connection, record: InstanceRecord) -> StudyUpdate:
    """Insert one instance (unless its SOP Instance UID is stored) and bring its study to ``receiving``."""
    stored = db.execute("SELECT study_version FROM instances WHERE sop_instance_uid = ?",
                        (record.sop_instance_uid,)).fetchone()
    if stored is not None:  # a duplicate, possibly sent under another study: report the copy's own version
        return StudyUpdate(stored=False, study_version=stored[0], new_version=False)
    version, new_version = receive(db, record.study_uid, record.received_at)
    db.execute(
        "INSERT INTO instances (sop_instance_uid, study_uid, study_version, series_uid, sop_class_uid,"
        " transfer_syntax_uid, modality, path, size, calling_ae, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (record.sop_instance_uid, record.study_uid, version, record.series_uid, record.sop_class_uid,
         record.transfer_syntax_uid, record.modality, record.path, record.size, record.calling_ae,
         record.received_at),
    )
    return StudyUpdate(stored=True, study_version=version, new_version=new_version)


class Instances:
    """The instances table: what is stored, and where."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def stored(self, sop_instance_uid: str) -> StoredFile | None:
        """The file and size recorded for a stored instance; None when there is none."""
        with self._database.reading() as db:
            row = db.execute(
                "SELECT study_uid, path, size FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else StoredFile(sop_instance_uid, row[0], self._database.root / row[1], row[2])

    def record(self, records: list[InstanceRecord]) -> list[StudyUpdate]:
        """Commit received instances, in order, in one transaction (one fsync), and bring their
        studies to ``receiving``. A stable (or later) study that gets a new instance starts a new version."""
        with self._database.transaction() as db:
            return [_insert(db, record) for record in records]

    def forget(self, sop_instance_uids: list[str]) -> None:
        """Drop the rows of instances that were never acknowledged (their file may not be whole);
        a study left with no instance is dropped too."""
        with self._database.transaction() as db:
            for uid in sop_instance_uids:
                row = db.execute("DELETE FROM instances WHERE sop_instance_uid = ? RETURNING study_uid",
                                 (uid,)).fetchone()
                if row is not None and not db.execute("SELECT 1 FROM instances WHERE study_uid = ?",
                                                      row).fetchone():
                    db.execute("DELETE FROM studies WHERE study_uid = ? AND state = ?",
                               (row[0], StudyState.RECEIVING))

    def receiving_files(self) -> list[StoredFile]:
        """The recorded file and size of every instance of every study still receiving."""
        with self._database.reading() as db:
            rows = db.execute(
                "SELECT i.sop_instance_uid, i.study_uid, i.path, i.size FROM instances i"
                " JOIN studies s ON s.study_uid = i.study_uid WHERE s.state = ?", (StudyState.RECEIVING,)
            ).fetchall()
        root = self._database.root
        return [StoredFile(uid, study_uid, root / path, size) for uid, study_uid, path, size in rows]

    def study_files(self, study_uid: str) -> list[Path]:
        """The stored files of every instance of a study (all versions), in arrival order, as full paths."""
        with self._database.reading() as db:
            rows = db.execute(
                "SELECT path FROM instances WHERE study_uid = ? ORDER BY received_at, sop_instance_uid", (study_uid,)
            ).fetchall()
        return [self._database.root / row[0] for row in rows]
