"""Finished studies past the retention period: which they are, and forgetting one (its files, results
and rows) while no instance of it can be recorded. The quality record outlives the study: its answers and
verdicts (and a matched report still within its own message's retention) keep, in place of the study UID,
only its key (:meth:`node.store.keys.IdentifierKeys.study`), so they still count, are still told apart per study, and
identify nobody."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from node.store.database import Database
from node.store.keys import IdentifierKeys
from node.store.studies import FINISHED

#: The rows that name a study by its UID and outlive it: (table, column).
STUDY_REFERENCES = (("answers", "study_instance_uid"), ("verdicts", "study_instance_uid"), ("reports", "study_uid"))


def keep_only_key(db: sqlite3.Connection, study_uid: str, key: str) -> None:
    """Replace ``study_uid`` by its ``key`` wherever it outlives its study (inside the caller's transaction). A
    row already keyed the same (the study was received, read and purged again) gives way to the newer one."""
    for table, column in STUDY_REFERENCES:
        db.execute(f"UPDATE OR REPLACE {table} SET {column} = ? WHERE {column} = ?", (key, study_uid))  # noqa: S608


class Expiry:
    """Finished studies (complete or skipped) and their purge."""

    def __init__(self, database: Database, keys: IdentifierKeys) -> None:
        self._database, self._keys = database, keys

    def expired_studies(self, before: float, limit: int = 100) -> list[str]:
        """Finished studies (complete or skipped) whose state last changed before ``before``."""
        marks = ",".join("?" * len(FINISHED))
        with self._database.reading() as db:
            rows = db.execute(
                f"SELECT study_uid FROM studies WHERE state IN ({marks}) AND state_changed_at < ? "  # noqa: S608
                "ORDER BY state_changed_at LIMIT ?", (*FINISHED, before, limit)).fetchall()
        return [row[0] for row in rows]

    def purge_study(self, study_uid: str, before: float, remove: Callable[[list[Path]], None]) -> int | None:
        """Forget a finished study: ``remove`` is given its instance files (it deletes them and the
        results) while no instance can be recorded, then its rows go. None when the study is no longer
        finished and expired (an instance arrived): it is kept. Returns how many instance files it had."""
        with self._database.transaction() as db:
            row = db.execute("SELECT state, state_changed_at FROM studies WHERE study_uid = ?",
                             (study_uid,)).fetchone()
            if row is None or row[0] not in FINISHED or row[1] >= before:
                return None
            paths = [self._database.root / path for (path,) in
                     db.execute("SELECT path FROM instances WHERE study_uid = ?", (study_uid,))]
            remove(paths)
            keep_only_key(db, study_uid, self._keys.study(study_uid))
            for table in ("outbox", "instances", "studies"):
                db.execute(f"DELETE FROM {table} WHERE study_uid = ?", (study_uid,))  # noqa: S608
        return len(paths)
