"""The state database's received side: instances, studies, the outbox and quarantined objects.

:class:`Store` is what every stage talks to; it owns the one :class:`~node.store.database.Database`
and hands it to the clinical context's tables (:attr:`Store.clinical`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.store.clinical import ClinicalStore
from node.store.database import Database

SCHEMA_VERSION = 3  # 3: the clinical context's tables (node/store/clinical.py)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid        TEXT PRIMARY KEY,
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    first_received   REAL NOT NULL,
    last_received    REAL NOT NULL,
    state_changed_at REAL NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_try_at      REAL NOT NULL DEFAULT 0,
    detail           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies (state);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    study_version       INTEGER NOT NULL,
    series_uid          TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    modality            TEXT NOT NULL,
    path                TEXT NOT NULL,
    size                INTEGER NOT NULL,
    calling_ae          TEXT NOT NULL,
    received_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    destination     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    key             TEXT NOT NULL,
    payload_path    TEXT NOT NULL,
    study_uid       TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    UNIQUE (destination, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    calling_ae  TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""

#: Study states. receiving → stable (complete, waiting to be read) → queued (results made, being
#: delivered) → complete (every destination has them). Off the main path: skipped (no task for it,
#: or nothing readable), failed (reading failed ``pipeline.max_attempts`` times), undelivered (a result
#: was dead-lettered). A new instance makes any of them receiving again, as a new version.
RECEIVING = "receiving"
STABLE = "stable"
QUEUED = "queued"
COMPLETE = "complete"
SKIPPED = "skipped"
FAILED = "failed"
UNDELIVERED = "undelivered"
STUDY_STATES = (RECEIVING, STABLE, QUEUED, COMPLETE, SKIPPED, FAILED, UNDELIVERED)

#: States a study leaves only when new instances arrive: its data may be purged after the retention period.
FINISHED = (COMPLETE, SKIPPED)

#: Outbox message states: waiting for (another) attempt, delivered, or given up on (dead letter).
PENDING = "pending"
SENT = "sent"
DEAD = "dead"


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


@dataclass(frozen=True)
class StudySummary:
    """A study as ``qoq-node studies`` lists it: UIDs and counts, no patient identity."""

    study_uid: str
    version: int
    state: str
    instances: int
    series: int
    modalities: str
    first_received: float
    last_received: float
    state_changed_at: float
    attempts: int
    detail: str  # why a study was skipped or failed


@dataclass(frozen=True)
class StableStudy:
    """A stable study waiting to be read."""

    study_uid: str
    version: int
    attempts: int
    stable_at: float
    last_received: float


@dataclass(frozen=True)
class QueuedItem:
    """One result to deliver: a file, the destination, and the key that makes a resend harmless."""

    destination: str
    kind: str
    key: str
    payload_path: str


@dataclass(frozen=True)
class Settled:
    """A study whose deliveries are all done: its new state and when it was queued and last received."""

    study_uid: str
    state: str
    queued_at: float
    last_received: float


@dataclass(frozen=True)
class OutboxItem:
    """One object or message waiting for, or done with, delivery to one destination."""

    id: int
    destination: str
    kind: str  # "dicom" or "hl7"
    key: str  # SOP Instance UID or MSH-10: what makes a resend harmless
    payload_path: str
    study_uid: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class QuarantinedObject:
    """An object the node refused and kept aside: its file, why, who sent it and when."""

    path: str
    reason: str
    calling_ae: str
    received_at: float


def _insert_instance(db: sqlite3.Connection, record: InstanceRecord) -> StudyUpdate:
    """Insert one instance (unless its SOP Instance UID is stored) and bring its study to ``receiving``."""
    stored = db.execute("SELECT study_version FROM instances WHERE sop_instance_uid = ?",
                        (record.sop_instance_uid,)).fetchone()
    if stored is not None:  # a duplicate, possibly sent under another study: report the copy's own version
        return StudyUpdate(stored=False, study_version=stored[0], new_version=False)
    study = db.execute("SELECT version, state FROM studies WHERE study_uid = ?", (record.study_uid,)).fetchone()
    now = record.received_at
    if study is None:
        version, new_version = 1, True
        db.execute(
            "INSERT INTO studies (study_uid, version, state, first_received, last_received, state_changed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (record.study_uid, version, RECEIVING, now, now, now),
        )
    else:
        version, state = study
        new_version = state != RECEIVING
        if new_version:
            version += 1
        db.execute(
            "UPDATE studies SET version = ?, state = ?, last_received = ?,"
            " state_changed_at = CASE WHEN state = ? THEN state_changed_at ELSE ? END,"
            " attempts = CASE WHEN state = ? THEN attempts ELSE 0 END,"
            " detail = CASE WHEN state = ? THEN detail ELSE '' END"
            " WHERE study_uid = ?",
            (version, RECEIVING, now, RECEIVING, now, RECEIVING, RECEIVING, record.study_uid),
        )
    db.execute(
        "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (record.sop_instance_uid, record.study_uid, version, record.series_uid, record.sop_class_uid,
         record.transfer_syntax_uid, record.modality, record.path, record.size, record.calling_ae,
         record.received_at),
    )
    return StudyUpdate(stored=True, study_version=version, new_version=new_version)


def _insert_outbox(db: sqlite3.Connection, study_uid: str, items: list[QueuedItem], now: float) -> int:
    """Insert outbox items due now, skipping any key already queued for its destination; how many were new."""
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO outbox (destination, kind, key, payload_path, study_uid, state, attempts,"
        " next_attempt_at, last_error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, '', ?, ?)",
        [(item.destination, item.kind, item.key, item.payload_path, study_uid, PENDING, now, now, now)
         for item in items],
    )
    return db.total_changes - before


class Store:
    """The node's state database."""

    def __init__(self, path: Path) -> None:
        self.database = Database(path)
        self._root = self.database.root  # instance paths are kept relative to it (the storage root)
        self._db, self._lock, self._transaction = self.database.connection, self.database.lock, \
            self.database.transaction
        self._db.executescript(_SCHEMA)
        self._migrate()
        #: Orders, lab results, patients and retrieved priors: the clinical context, on the same connection.
        self.clinical = ClinicalStore(self.database)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate(self) -> None:
        """Bring a database written by an older node up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(studies)")}
        for column, definition in (("attempts", "INTEGER NOT NULL DEFAULT 0"),
                                   ("next_try_at", "REAL NOT NULL DEFAULT 0"), ("detail", "TEXT NOT NULL DEFAULT ''")):
            if column not in columns:  # schema 1 (ingest only)
                self._db.execute(f"ALTER TABLE studies ADD COLUMN {column} {definition}")

    def close(self) -> None:
        """Close the connection."""
        self.database.close()

    def stored_instance(self, sop_instance_uid: str) -> StoredFile | None:
        """The file and size recorded for a stored instance; None when there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT study_uid, path, size FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else StoredFile(sop_instance_uid, row[0], self._root / row[1], row[2])

    def record_instances(self, records: list[InstanceRecord]) -> list[StudyUpdate]:
        """Commit received instances, in order, in one transaction (one fsync), and bring their
        studies to ``receiving``. A stable (or later) study that gets a new instance starts a new version."""
        with self._transaction() as db:
            return [_insert_instance(db, record) for record in records]

    def forget_instances(self, sop_instance_uids: list[str]) -> None:
        """Drop the rows of instances that were never acknowledged (their file may not be whole);
        a study left with no instance is dropped too."""
        with self._transaction() as db:
            for uid in sop_instance_uids:
                row = db.execute("DELETE FROM instances WHERE sop_instance_uid = ? RETURNING study_uid",
                                 (uid,)).fetchone()
                if row is not None and not db.execute("SELECT 1 FROM instances WHERE study_uid = ?",
                                                      row).fetchone():
                    db.execute("DELETE FROM studies WHERE study_uid = ? AND state = ?", (row[0], RECEIVING))

    def receiving_files(self) -> list[StoredFile]:
        """The recorded file and size of every instance of every study still receiving."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.sop_instance_uid, i.study_uid, i.path, i.size FROM instances i"
                " JOIN studies s ON s.study_uid = i.study_uid WHERE s.state = ?", (RECEIVING,)
            ).fetchall()
        return [StoredFile(uid, study_uid, self._root / path, size) for uid, study_uid, path, size in rows]

    def record_quarantine(self, path: str, reason: str, calling_ae: str) -> None:
        """Remember an object that was refused and kept aside."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO quarantine (path, reason, calling_ae, received_at) VALUES (?, ?, ?, ?)",
                (path, reason, calling_ae, time.time()),
            )

    def receiving_studies(self) -> list[tuple[str, int, float]]:
        """(study UID, version, last received) of every study still receiving."""
        with self._lock:
            return self._db.execute(
                "SELECT study_uid, version, last_received FROM studies WHERE state = ?", (RECEIVING,)
            ).fetchall()

    def mark_stable(self, study_uid: str, last_received: float, now: float) -> bool:
        """Make a receiving study stable, unless an instance arrived since ``last_received``."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET state = ?, state_changed_at = ?, next_try_at = ?"
                " WHERE study_uid = ? AND state = ? AND last_received = ?",
                (STABLE, now, now, study_uid, RECEIVING, last_received),
            )
        return cursor.rowcount == 1

    # --- pipeline -----------------------------------------------------------------------------

    def stable_studies(self, now: float, limit: int) -> list[StableStudy]:
        """Stable studies due to be read (first tries and due retries), longest waiting first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT study_uid, version, attempts, state_changed_at, last_received FROM studies"
                " WHERE state = ? AND next_try_at <= ? ORDER BY state_changed_at LIMIT ?",
                (STABLE, now, limit),
            ).fetchall()
        return [StableStudy(*row) for row in rows]

    def study_files(self, study_uid: str) -> list[Path]:
        """The stored files of every instance of a study (all versions), in arrival order, as full paths."""
        with self._lock:
            rows = self._db.execute(
                "SELECT path FROM instances WHERE study_uid = ? ORDER BY received_at, sop_instance_uid", (study_uid,)
            ).fetchall()
        return [self._root / row[0] for row in rows]

    def _leave_stable(self, db: sqlite3.Connection, study_uid: str, version: int, state: str, detail: str,
                      now: float, attempts_delta: int = 0, next_try_at: float = 0.0) -> bool:
        """Move a study out of ``stable`` unless it has become another version meanwhile."""
        cursor = db.execute(
            "UPDATE studies SET state = ?, detail = ?, state_changed_at = ?, attempts = attempts + ?,"
            " next_try_at = ? WHERE study_uid = ? AND version = ? AND state = ?",
            (state, detail[:500], now, attempts_delta, next_try_at, study_uid, version, STABLE),
        )
        return cursor.rowcount == 1

    def queue_results(self, study_uid: str, version: int, items: list[QueuedItem], now: float) -> bool:
        """In one transaction: queue a study version's results for delivery and mark it queued
        (complete when there is nowhere to deliver). False, queueing nothing, when a newer
        version has arrived meanwhile (its own read supersedes this one)."""
        with self._transaction() as db:
            if not self._leave_stable(db, study_uid, version, QUEUED if items else COMPLETE, "", now):
                return False
            _insert_outbox(db, study_uid, items, now)
        return True

    def postpone(self, study_uid: str, version: int, until: float, reason: str) -> bool:
        """Leave a stable study to be read at ``until`` (no attempt counted), saying why in its detail."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET next_try_at = ?, detail = ? WHERE study_uid = ? AND version = ? AND state = ?",
                (until, reason[:500], study_uid, version, STABLE))
        return cursor.rowcount == 1

    def release_postponed(self, reason: str, now: float) -> int:
        """Make the stable studies postponed with ``reason`` due now (what they waited for may have come)."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE studies SET next_try_at = ? WHERE state = ? AND detail = ? AND next_try_at > ?",
                                (now, STABLE, reason[:500], now))
        return cursor.rowcount

    def skip_study(self, study_uid: str, version: int, reason: str, now: float) -> bool:
        """A stable study the node has nothing to do with (no routing rule, no readable image)."""
        with self._transaction() as db:
            return self._leave_stable(db, study_uid, version, SKIPPED, reason, now)

    def fail_attempt(self, study_uid: str, version: int, reason: str, now: float, max_attempts: int,
                     retry_seconds: float) -> str | None:
        """Record a failed read: retried after ``retry_seconds``, or parked as failed after
        ``max_attempts``. Returns the study's new state (None: it changed version meanwhile)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT attempts FROM studies WHERE study_uid = ? AND version = ? AND state = ?",
                (study_uid, version, STABLE),
            ).fetchone()
            if row is None:
                return None
            if row[0] + 1 >= max_attempts:
                self._leave_stable(db, study_uid, version, FAILED, reason, now, attempts_delta=1)
                return FAILED
            db.execute(
                "UPDATE studies SET attempts = attempts + 1, detail = ?, next_try_at = ? WHERE study_uid = ?",
                (reason[:500], now + retry_seconds, study_uid),
            )
            return STABLE

    def settle(self, study_uid: str, now: float) -> Settled | None:
        """After a delivery attempt: a queued (or undelivered) study with nothing pending any more
        becomes complete, or undelivered when an item of it is a dead letter. None: not settled."""
        with self._transaction() as db:
            study = db.execute(
                "SELECT state, state_changed_at, last_received FROM studies WHERE study_uid = ?", (study_uid,)
            ).fetchone()
            if study is None or study[0] not in (QUEUED, UNDELIVERED):
                return None
            counts = dict(db.execute(
                "SELECT state, COUNT(*) FROM outbox WHERE study_uid = ? GROUP BY state", (study_uid,)
            ).fetchall())
            if counts.get(PENDING):
                return None
            state = UNDELIVERED if counts.get(DEAD) else COMPLETE
            if state == study[0]:
                return None
            detail = f"{counts[DEAD]} item(s) dead-lettered: see 'qoq-node outbox list'" if counts.get(DEAD) else ""
            db.execute("UPDATE studies SET state = ?, detail = ?, state_changed_at = ? WHERE study_uid = ?",
                       (state, detail, now, study_uid))
        return Settled(study_uid, state, study[1], study[2])

    def studies_by_state(self) -> dict[str, int]:
        """Number of studies in each state."""
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())

    def studies(self) -> list[StudySummary]:
        """Every study, most recently received first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_uid, s.version, s.state, COUNT(i.sop_instance_uid),"
                " COUNT(DISTINCT i.series_uid), COALESCE(GROUP_CONCAT(DISTINCT i.modality), ''),"
                " s.first_received, s.last_received, s.state_changed_at, s.attempts, s.detail"
                " FROM studies s LEFT JOIN instances i ON i.study_uid = s.study_uid"
                " GROUP BY s.study_uid ORDER BY s.last_received DESC"
            ).fetchall()
        return [StudySummary(*row) for row in rows]

    def quarantined(self) -> list[QuarantinedObject]:
        """Every quarantined object, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT path, reason, calling_ae, received_at FROM quarantine ORDER BY id"
            ).fetchall()
        return [QuarantinedObject(*row) for row in rows]

    # --- retention ----------------------------------------------------------------------------

    def expired_studies(self, before: float, limit: int = 100) -> list[str]:
        """Finished studies (complete or skipped) whose state last changed before ``before``."""
        marks = ",".join("?" * len(FINISHED))
        with self._lock:
            rows = self._db.execute(
                f"SELECT study_uid FROM studies WHERE state IN ({marks}) AND state_changed_at < ? "  # noqa: S608
                "ORDER BY state_changed_at LIMIT ?", (*FINISHED, before, limit)).fetchall()
        return [row[0] for row in rows]

    def purge_study(self, study_uid: str, before: float, remove: Callable[[list[Path]], None]) -> int | None:
        """Forget a finished study: ``remove`` is given its instance files (it deletes them and the
        results) while no instance can be recorded, then its rows go. None when the study is no longer
        finished and expired (an instance arrived): it is kept. Returns how many instance files it had."""
        with self._transaction() as db:
            row = db.execute("SELECT state, state_changed_at FROM studies WHERE study_uid = ?",
                             (study_uid,)).fetchone()
            if row is None or row[0] not in FINISHED or row[1] >= before:
                return None
            paths = [self._root / path for (path,) in
                     db.execute("SELECT path FROM instances WHERE study_uid = ?", (study_uid,))]
            remove(paths)
            for table in ("outbox", "instances", "studies"):
                db.execute(f"DELETE FROM {table} WHERE study_uid = ?", (study_uid,))  # noqa: S608
        return len(paths)

    def expired_quarantine(self, before: float) -> list[tuple[int, Path]]:
        """(id, file) of quarantined objects kept since before ``before``."""
        with self._lock:
            rows = self._db.execute("SELECT id, path FROM quarantine WHERE received_at < ?", (before,)).fetchall()
        return [(item_id, Path(path)) for item_id, path in rows]

    def forget_quarantined(self, item_id: int) -> None:
        """Drop a quarantine row (its files are gone)."""
        with self._transaction() as db:
            db.execute("DELETE FROM quarantine WHERE id = ?", (item_id,))

    # --- outbox -------------------------------------------------------------------------------

    def enqueue(self, destination: str, kind: str, key: str, payload_path: str, study_uid: str, now: float) -> bool:
        """Queue a payload for a destination; False when that key is already queued there."""
        with self._transaction() as db:
            return _insert_outbox(db, study_uid, [QueuedItem(destination, kind, key, payload_path)], now) == 1

    def due(self, destination: str, now: float, limit: int = 32) -> list[OutboxItem]:
        """Pending items of a destination whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE destination = ? AND state = ? AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (destination, PENDING, now, limit),
            ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def waiting(self, destination: str, now: float) -> int:
        """How many items of a destination wait for a later retry (it failed them)."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE destination = ? AND state = ? AND next_attempt_at > ?",
                (destination, PENDING, now)).fetchone()[0]

    def release_destination(self, destination: str, now: float) -> int:
        """Make every waiting item of a destination due now (it answers again); how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at = ?, updated_at = ? WHERE destination = ? AND state = ?"
                " AND next_attempt_at > ?", (now, now, destination, PENDING, now))
        return cursor.rowcount

    def record_attempt(self, item_id: int, state: str, error: str, now: float, next_attempt_at: float) -> None:
        """Record an attempt's outcome: ``state`` SENT, PENDING (retry at ``next_attempt_at``) or DEAD."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE id = ?",
                (state, error[:500], next_attempt_at, now, item_id),
            )

    def retry(self, now: float, item_id: int | None = None) -> int:
        """Make one item (or every dead or waiting item) due now; returns how many."""
        with self._transaction() as db:
            if item_id is not None:
                cursor = db.execute(
                    "UPDATE outbox SET state = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    (PENDING, now, now, item_id),
                )
            else:
                cursor = db.execute(
                    "UPDATE outbox SET state = ?, next_attempt_at = ?, updated_at = ? WHERE state != ?",
                    (PENDING, now, now, SENT),
                )
        return cursor.rowcount

    def outbox_counts(self) -> dict[tuple[str, str], int]:
        """Number of outbox items per (destination, state)."""
        with self._lock:
            rows = self._db.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state")
            return {(destination, state): count for destination, state, count in rows.fetchall()}

    def outbox(self, state: str | None = None) -> list[OutboxItem]:
        """Every outbox item (or those in ``state``), newest first."""
        with self._lock:
            if state:
                rows = self._db.execute("SELECT * FROM outbox WHERE state = ? ORDER BY id DESC", (state,)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM outbox ORDER BY id DESC").fetchall()
        return [OutboxItem(*row) for row in rows]
