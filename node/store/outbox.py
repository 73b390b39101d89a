"""The outbox: every result object or message waiting for, or done with, delivery to one destination.

A study's results are queued with its move to ``queued`` (:meth:`node.store.studies.Studies.queue_results`,
through :func:`insert_items`); the delivery workers take due items, record each attempt, and back off.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from node.errors import clip_detail
from node.store.database import Database


class OutboxState(StrEnum):
    """An outbox item's state, as ``outbox.state`` stores it: waiting for (another) attempt, delivered,
    given up on (dead letter), or cancelled (its result rejected)."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"  # its result was rejected (IHE IOCM): never sent, never retried


@dataclass(frozen=True)
class QueuedItem:
    """One result to deliver: a file, the destination, and the key that makes a resend harmless."""

    destination: str
    kind: str
    key: str
    payload_path: str


@dataclass(frozen=True)
class OutboxItem:
    """One object or message waiting for, or done with, delivery to one destination."""

    id: int
    destination: str
    kind: str  # "dicom" (C-STORE), "dicomweb" (STOW-RS) or "hl7"
    key: str  # SOP Instance UID or MSH-10: what makes a resend harmless
    payload_path: str
    study_uid: str
    state: OutboxState
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    updated_at: float


#: The columns an :class:`OutboxItem` is read from, in its fields' order.
_COLUMNS = ("id, destination, kind, key, payload_path, study_uid, state, attempts, next_attempt_at, last_error,"
            " created_at, updated_at")


def _item(row: tuple) -> OutboxItem:
    item_id, destination, kind, key, payload_path, study_uid, state, *rest = row
    return OutboxItem(item_id, destination, kind, key, payload_path, study_uid, OutboxState(state), *rest)


@dataclass(frozen=True)
class ResultRef:
    """Where a result object the node queued belongs: its study, the study version whose result it is (None
    for an item queued before schema 9), and the folder of that version's results."""

    study_uid: str
    version: int | None
    folder: str


def insert_items(db: sqlite3.Connection, study_uid: str, items: list[QueuedItem], now: float,
                 version: int | None = None) -> int:
    """Insert outbox items due now (inside the caller's transaction) of a study (``version``: the study version
    whose results they are), skipping any key already queued for its destination; how many were new."""
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO outbox (destination, kind, key, payload_path, study_uid, study_version, state,"
        " attempts, next_attempt_at, last_error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, '', ?, ?)",
        [(item.destination, item.kind, item.key, item.payload_path, study_uid, version, OutboxState.PENDING, now,
          now, now) for item in items],
    )
    return db.total_changes - before


def cancel_pending(db: sqlite3.Connection, payload_prefix: str, now: float) -> int:
    """Cancel (inside the caller's transaction) every item not yet delivered whose payload lies under
    ``payload_prefix`` (a study version's results folder): it is never sent, nor retried. How many."""
    cursor = db.execute(
        "UPDATE outbox SET state = ?, updated_at = ? WHERE state IN (?, ?) AND substr(payload_path, 1, ?) = ?",
        (OutboxState.CANCELLED, now, OutboxState.PENDING, OutboxState.DEAD, len(payload_prefix), payload_prefix))
    return cursor.rowcount


class Outbox:
    """The outbox table: what the delivery workers take, and what operators list and retry."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def enqueue(self, destination: str, kind: str, key: str, payload_path: str, study_uid: str, now: float) -> bool:
        """Queue a payload for a destination; False when that key is already queued there."""
        with self._database.transaction() as db:
            return insert_items(db, study_uid, [QueuedItem(destination, kind, key, payload_path)], now) == 1

    def due(self, destination: str, now: float, limit: int = 32) -> list[OutboxItem]:
        """Pending items of a destination whose next attempt is due, oldest first."""
        with self._database.reading() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE destination = ? AND state = ? AND next_attempt_at <= ?"  # noqa: S608
                " ORDER BY next_attempt_at, id LIMIT ?",
                (destination, OutboxState.PENDING, now, limit),
            ).fetchall()
        return [_item(row) for row in rows]

    def waiting(self, destination: str, now: float) -> int:
        """How many items of a destination wait for a later retry (it failed them)."""
        with self._database.reading() as db:
            return db.execute(
                "SELECT COUNT(*) FROM outbox WHERE destination = ? AND state = ? AND next_attempt_at > ?",
                (destination, OutboxState.PENDING, now)).fetchone()[0]

    def release_destination(self, destination: str, now: float) -> int:
        """Make every waiting item of a destination due now (it answers again); how many."""
        with self._database.transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at = ?, updated_at = ? WHERE destination = ? AND state = ?"
                " AND next_attempt_at > ?", (now, now, destination, OutboxState.PENDING, now))
        return cursor.rowcount

    def record_attempt(self, item_id: int, state: OutboxState, error: str, now: float,
                       next_attempt_at: float) -> None:
        """Record an attempt's outcome: ``state`` SENT, PENDING (retry at ``next_attempt_at``) or DEAD."""
        with self._database.transaction() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE id = ? AND state != ?",  # a cancelled item stays cancelled
                (state, clip_detail(error), next_attempt_at, now, item_id, OutboxState.CANCELLED),
            )

    def retry(self, now: float, item_id: int | None = None) -> int:
        """Make one item (or every dead or waiting item) due now; returns how many. A delivered item is never
        made due again (that would send it twice), nor a cancelled one (its result was rejected)."""
        with self._database.transaction() as db:
            if item_id is not None:
                cursor = db.execute(
                    "UPDATE outbox SET state = ?, next_attempt_at = ?, updated_at = ? WHERE id = ? AND state NOT IN"
                    " (?, ?)", (OutboxState.PENDING, now, now, item_id, OutboxState.SENT, OutboxState.CANCELLED),
                )
            else:
                cursor = db.execute(
                    "UPDATE outbox SET state = ?, next_attempt_at = ?, updated_at = ? WHERE state NOT IN (?, ?)",
                    (OutboxState.PENDING, now, now, OutboxState.SENT, OutboxState.CANCELLED),
                )
        return cursor.rowcount

    def results_of(self, sop_instance_uids: list[str]) -> dict[str, ResultRef]:
        """Which of these SOP Instance UIDs are result objects the node queued (for any DICOM destination: an
        HL7 item's key is a control ID): where each belongs."""
        marks = ",".join("?" * len(sop_instance_uids))
        with self._database.reading() as db:
            rows = db.execute(f"SELECT key, study_uid, study_version, payload_path FROM outbox"  # noqa: S608
                              f" WHERE kind != 'hl7' AND key IN ({marks})", sop_instance_uids).fetchall()
        return {key: ResultRef(study_uid, version, f"{Path(path).parent}/")
                for key, study_uid, version, path in rows}

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of outbox items per (destination, state)."""
        with self._database.reading() as db:
            rows = db.execute("SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state")
            return {(destination, state): count for destination, state, count in rows.fetchall()}

    def items(self, state: str | None = None) -> list[OutboxItem]:
        """Every outbox item (or those in ``state``), newest first."""
        with self._database.reading() as db:
            if state:
                rows = db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY id DESC",  # noqa: S608
                                  (state,)).fetchall()
            else:
                rows = db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id DESC").fetchall()  # noqa: S608
        return [_item(row) for row in rows]
