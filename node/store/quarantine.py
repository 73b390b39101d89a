"""The quarantine table: objects the node refused and kept aside (the files are the spool's), why,
who sent them and when; forgotten after the retention period."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from node.store.database import Database


@dataclass(frozen=True)
class QuarantinedObject:
    """An object the node refused and kept aside: its file, why, who sent it and when."""

    path: str
    reason: str
    calling_ae: str
    received_at: float


class Quarantine:
    """The quarantine table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def record(self, path: str, reason: str, calling_ae: str) -> None:
        """Remember an object that was refused and kept aside."""
        with self._database.transaction() as db:
            db.execute(
                "INSERT INTO quarantine (path, reason, calling_ae, received_at) VALUES (?, ?, ?, ?)",
                (path, reason, calling_ae, time.time()),
            )

    def items(self) -> list[QuarantinedObject]:
        """Every quarantined object, oldest first."""
        with self._database.reading() as db:
            rows = db.execute("SELECT path, reason, calling_ae, received_at FROM quarantine ORDER BY id").fetchall()
        return [QuarantinedObject(*row) for row in rows]

    def expired(self, before: float) -> list[tuple[int, Path]]:
        """(id, file) of quarantined objects kept since before ``before``."""
        with self._database.reading() as db:
            rows = db.execute("SELECT id, path FROM quarantine WHERE received_at < ?", (before,)).fetchall()
        return [(item_id, Path(path)) for item_id, path in rows]

    def forget(self, item_id: int) -> None:
        """Drop a quarantine row (its files are gone)."""
        with self._database.transaction() as db:
            db.execute("DELETE FROM quarantine WHERE id = ?", (item_id,))
