"""The study state machine: a study's version, state, read attempts, postponement and detail.

receiving → stable (complete, waiting to be read) → queued (results made, being delivered) → complete
(every destination has them). Off the main path: skipped (no task for it, or nothing readable), failed
(reading failed ``pipeline.max_attempts`` times), undelivered (a result was dead-lettered). A new
instance makes any of them receiving again, as a new version (:func:`receive`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from node.errors import clip_detail
from node.store.answers import Answer, insert_answer
from node.store.database import Database
from node.store.outbox import OutboxState, QueuedItem, insert_items


class StudyState(StrEnum):
    """A study's state, as ``studies.state`` stores it."""

    RECEIVING = "receiving"
    STABLE = "stable"
    QUEUED = "queued"
    COMPLETE = "complete"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNDELIVERED = "undelivered"


class Postponement(StrEnum):
    """Why a stable study waits to be read, as ``studies.postponed_for`` stores it (empty: it does not)."""

    ORDER = "order"  # its task wants the order, none has come yet


#: What a study's detail says while it waits, for operators (``qoq-node studies``).
POSTPONEMENT_DETAIL = {Postponement.ORDER: "waiting for its order (context.order_wait_seconds)"}

#: States a study leaves only when new instances arrive: its data may be purged after the retention period.
FINISHED = (StudyState.COMPLETE, StudyState.SKIPPED)


@dataclass(frozen=True)
class StudySummary:
    """A study as ``qoq-node studies`` lists it: UIDs and counts, no patient identity."""

    study_uid: str
    version: int
    state: StudyState
    instances: int
    series: int
    modalities: str
    first_received: float
    last_received: float
    state_changed_at: float
    attempts: int
    detail: str  # why a study was skipped, failed or waits


@dataclass(frozen=True)
class StableStudy:
    """A stable study waiting to be read."""

    study_uid: str
    version: int
    attempts: int
    stable_at: float
    last_received: float


@dataclass(frozen=True)
class Settled:
    """A study whose deliveries are all done: its new state and when it was queued and last received."""

    study_uid: str
    state: StudyState
    queued_at: float
    last_received: float


def receive(db: sqlite3.Connection, study_uid: str, now: float) -> tuple[int, bool]:
    """Bring the study of an instance received ``now`` to ``receiving`` (inside the caller's transaction):
    a new study is version 1; one in any other state starts a new version, its attempts and detail
    cleared. Returns (version, whether it is a new version)."""
    study = db.execute("SELECT version, state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
    receiving = StudyState.RECEIVING
    if study is None:
        db.execute(
            "INSERT INTO studies (study_uid, version, state, first_received, last_received, state_changed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (study_uid, 1, receiving, now, now, now),
        )
        return 1, True
    version, state = study
    new_version = state != receiving
    if new_version:
        version += 1
    db.execute(
        "UPDATE studies SET version = ?, state = ?, last_received = ?,"
        " state_changed_at = CASE WHEN state = ? THEN state_changed_at ELSE ? END,"
        " attempts = CASE WHEN state = ? THEN attempts ELSE 0 END,"
        " detail = CASE WHEN state = ? THEN detail ELSE '' END,"
        " postponed_for = CASE WHEN state = ? THEN postponed_for ELSE '' END"
        " WHERE study_uid = ?",
        (version, receiving, now, receiving, now, receiving, receiving, receiving, study_uid),
    )
    return version, new_version


def _leave_stable(db: sqlite3.Connection, study_uid: str, version: int, state: StudyState, detail: str,
                  now: float, attempts_delta: int = 0, next_try_at: float = 0.0) -> bool:
    """Move a study out of ``stable`` unless it has become another version meanwhile."""
    cursor = db.execute(
        "UPDATE studies SET state = ?, detail = ?, postponed_for = '', state_changed_at = ?,"
        " attempts = attempts + ?, next_try_at = ? WHERE study_uid = ? AND version = ? AND state = ?",
        (state, clip_detail(detail), now, attempts_delta, next_try_at, study_uid, version, StudyState.STABLE),
    )
    return cursor.rowcount == 1


class Studies:
    """The studies table: each study's way through the states."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def receiving(self) -> list[tuple[str, int, float]]:
        """(study UID, version, last received) of every study still receiving."""
        with self._database.reading() as db:
            return db.execute("SELECT study_uid, version, last_received FROM studies WHERE state = ?",
                              (StudyState.RECEIVING,)).fetchall()

    def mark_stable(self, study_uid: str, last_received: float, now: float) -> bool:
        """Make a receiving study stable, unless an instance arrived since ``last_received``."""
        with self._database.transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET state = ?, state_changed_at = ?, next_try_at = ?"
                " WHERE study_uid = ? AND state = ? AND last_received = ?",
                (StudyState.STABLE, now, now, study_uid, StudyState.RECEIVING, last_received),
            )
        return cursor.rowcount == 1

    def stable(self, now: float, limit: int) -> list[StableStudy]:
        """Stable studies due to be read (first tries and due retries), longest waiting first."""
        with self._database.reading() as db:
            rows = db.execute(
                "SELECT study_uid, version, attempts, state_changed_at, last_received FROM studies"
                " WHERE state = ? AND next_try_at <= ? ORDER BY state_changed_at LIMIT ?",
                (StudyState.STABLE, now, limit),
            ).fetchall()
        return [StableStudy(*row) for row in rows]

    def queue_results(self, study_uid: str, version: int, items: list[QueuedItem], now: float,
                      answer: Answer | None = None) -> bool:
        """In one transaction: queue a study version's results for delivery, mark it queued
        (complete when there is nowhere to deliver) and keep its ``answer`` (the quality record). False,
        queueing nothing, when a newer version has arrived meanwhile (its own read supersedes this one)."""
        with self._database.transaction() as db:
            state = StudyState.QUEUED if items else StudyState.COMPLETE
            if not _leave_stable(db, study_uid, version, state, "", now):
                return False
            insert_items(db, study_uid, items, now, version)
            if answer is not None:
                insert_answer(db, answer)
        return True

    def postpone(self, study_uid: str, version: int, until: float, reason: Postponement) -> bool:
        """Leave a stable study to be read at ``until`` (no attempt counted), for ``reason``; its detail
        says why in words."""
        with self._database.transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET next_try_at = ?, postponed_for = ?, detail = ?"
                " WHERE study_uid = ? AND version = ? AND state = ?",
                (until, reason, clip_detail(POSTPONEMENT_DETAIL[reason]), study_uid, version, StudyState.STABLE))
        return cursor.rowcount == 1

    def release_postponed(self, reason: Postponement, now: float) -> int:
        """Make the stable studies postponed for ``reason`` due now (what they waited for may have come)."""
        with self._database.transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET next_try_at = ? WHERE state = ? AND postponed_for = ? AND next_try_at > ?",
                (now, StudyState.STABLE, reason, now))
        return cursor.rowcount

    def skip(self, study_uid: str, version: int, reason: str, now: float) -> bool:
        """A stable study the node has nothing to do with (no routing rule, no readable image)."""
        with self._database.transaction() as db:
            return _leave_stable(db, study_uid, version, StudyState.SKIPPED, reason, now)

    def fail_attempt(self, study_uid: str, version: int, reason: str, now: float, max_attempts: int,
                     retry_seconds: float) -> StudyState | None:
        """Record a failed read: retried after ``retry_seconds``, or parked as failed after
        ``max_attempts``. Returns the study's new state (None: it changed version meanwhile)."""
        with self._database.transaction() as db:
            row = db.execute(
                "SELECT attempts FROM studies WHERE study_uid = ? AND version = ? AND state = ?",
                (study_uid, version, StudyState.STABLE),
            ).fetchone()
            if row is None:
                return None
            if row[0] + 1 >= max_attempts:
                _leave_stable(db, study_uid, version, StudyState.FAILED, reason, now, attempts_delta=1)
                return StudyState.FAILED
            db.execute(
                "UPDATE studies SET attempts = attempts + 1, detail = ?, postponed_for = '', next_try_at = ?"
                " WHERE study_uid = ?",
                (clip_detail(reason), now + retry_seconds, study_uid),
            )
            return StudyState.STABLE

    def retry_failed(self, now: float, study_uids: Sequence[str] | None = None) -> list[str]:
        """Make failed studies (those named, or every one) stable again with their tries reset, to be read
        at once (after a fix or an upgrade); the UIDs of those it moved."""
        with self._database.transaction() as db:
            failed = [row[0] for row in db.execute("SELECT study_uid FROM studies WHERE state = ?",
                                                   (StudyState.FAILED,))]
            chosen = [uid for uid in failed if study_uids is None or uid in set(study_uids)]
            db.executemany(
                "UPDATE studies SET state = ?, attempts = 0, detail = '', postponed_for = '', state_changed_at = ?,"
                " next_try_at = ? WHERE study_uid = ? AND state = ?",
                [(StudyState.STABLE, now, now, uid, StudyState.FAILED) for uid in chosen])
        return chosen

    def settle(self, study_uid: str, now: float) -> Settled | None:
        """After a delivery attempt: a queued (or undelivered) study with nothing pending any more
        becomes complete, or undelivered when an item of it is a dead letter. None: not settled."""
        with self._database.transaction() as db:
            study = db.execute(
                "SELECT state, state_changed_at, last_received FROM studies WHERE study_uid = ?", (study_uid,)
            ).fetchone()
            if study is None or study[0] not in (StudyState.QUEUED, StudyState.UNDELIVERED):
                return None
            counts = dict(db.execute(
                "SELECT state, COUNT(*) FROM outbox WHERE study_uid = ? GROUP BY state", (study_uid,)
            ).fetchall())
            if counts.get(OutboxState.PENDING):
                return None
            dead = counts.get(OutboxState.DEAD)
            state = StudyState.UNDELIVERED if dead else StudyState.COMPLETE
            if state == study[0]:
                return None
            detail = f"{dead} item(s) dead-lettered: see 'qoq-node outbox list'" if dead else ""
            db.execute("UPDATE studies SET state = ?, detail = ?, state_changed_at = ? WHERE study_uid = ?",
                       (state, detail, now, study_uid))
        return Settled(study_uid, state, study[1], study[2])

    def counts(self) -> dict[str, int]:
        """Number of studies in each state."""
        with self._database.reading() as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())

    def summaries(self) -> list[StudySummary]:
        """Every study, most recently received first."""
        with self._database.reading() as db:
            rows = db.execute(
                "SELECT s.study_uid, s.version, s.state, COUNT(i.sop_instance_uid),"
                " COUNT(DISTINCT i.series_uid), COALESCE(GROUP_CONCAT(DISTINCT i.modality), ''),"
                " s.first_received, s.last_received, s.state_changed_at, s.attempts, s.detail"
                " FROM studies s LEFT JOIN instances i ON i.study_uid = s.study_uid"
                " GROUP BY s.study_uid ORDER BY s.last_received DESC"
            ).fetchall()
        return [StudySummary(uid, version, StudyState(state), *rest) for uid, version, state, *rest in rows]
