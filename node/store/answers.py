"""The answers table: what the node answered for each study version it read — the task, the closed-set labels,
and the manufacturer and model of the equipment that made the images — written in the transaction that queues
the results. Labels and equipment names only, no patient data: it is the quality record (answers by label, the
label and input drift, the AI side of a verdict) and outlives retention. The accession number is kept as its
key (:mod:`node.store.keys`) only; the study UID is kept while the study is, and replaced by its key when
retention purges the study (:mod:`node.store.retention`)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from node.store.database import Database
from node.store.keys import identifier_key


@dataclass(frozen=True)
class Answer:
    """The node's answer for one study version."""

    study_instance_uid: str
    version: int
    task: str
    labels: tuple[str, ...]
    manufacturer: str  # the source images' Manufacturer (0008,0070), '' when absent
    model: str  # their Manufacturer's Model Name (0008,1090), '' when absent
    answered_at: float
    accession_key: str = ""  # accession_key() of the study's Accession Number, '' when it has none


_COLUMNS = "study_instance_uid, version, task, labels, manufacturer, model, answered_at, accession_key"


def accession_key(accession: str) -> str:
    """What the answers keep of an Accession Number: its SHA-256, enough to find the study by it and no more
    (the table outlives retention)."""
    return identifier_key("accession", accession)


def insert_answer(db: sqlite3.Connection, answer: Answer) -> None:
    """Keep an answer inside the caller's transaction (a study version answered again replaces it)."""
    db.execute(
        f"INSERT OR REPLACE INTO answers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (answer.study_instance_uid, answer.version, answer.task, json.dumps(list(answer.labels)),
         answer.manufacturer, answer.model, answer.answered_at, answer.accession_key))


def _answer(row: tuple) -> Answer:
    uid, version, task, labels, manufacturer, model, answered_at, accession = row
    return Answer(uid, version, task, tuple(json.loads(labels)), manufacturer, model, answered_at, accession)


class Answers:
    """The answers table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def _select(self, where: str, parameters: tuple, order: str = "answered_at, rowid") -> list[Answer]:
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM answers WHERE {where} ORDER BY {order}",  # noqa: S608
                              parameters)
            return [_answer(row) for row in rows.fetchall()]

    def for_study(self, study_instance_uid: str, version: int | None = None) -> Answer | None:
        """The answer of a study version (its newest version's, when ``version`` is None); None when the
        node has not answered it."""
        if version is None:
            found = self._select("study_instance_uid = ?", (study_instance_uid,), "version DESC LIMIT 1")
        else:
            found = self._select("study_instance_uid = ? AND version = ?", (study_instance_uid, version))
        return found[0] if found else None

    def for_accession(self, accession: str) -> Answer | None:
        """The newest answer of the study with this Accession Number; None when the node answered none, or
        retention has purged the study (its answer outlives it, keyed, for the quality record only)."""
        key = accession_key(accession)
        kept = "accession_key = ? AND study_instance_uid IN (SELECT study_uid FROM studies)"
        found = self._select(kept, (key,), "answered_at DESC, rowid DESC LIMIT 1") if key else []
        return found[0] if found else None

    def since(self, t: float, task: str | None = None) -> list[Answer]:
        """The answers given at or after ``t`` (of ``task`` only, when given), oldest first."""
        if task is None:
            return self._select("answered_at >= ?", (t,))
        return self._select("answered_at >= ? AND task = ?", (t, task))

    def latest(self, n: int, task: str) -> list[Answer]:
        """The ``n`` answers of ``task`` given last, newest first."""
        return self._select("task = ?", (task,), f"answered_at DESC, rowid DESC LIMIT {int(n)}")

    def tasks(self) -> list[str]:
        """Every task the node has answered, by name."""
        with self._database.reading() as db:
            return [task for (task,) in db.execute("SELECT DISTINCT task FROM answers ORDER BY task").fetchall()]

    def first(self, n: int, task: str) -> list[Answer]:
        """The first ``n`` answers of ``task`` (the baseline when no evaluation has been run), oldest first."""
        return self._select("task = ?", (task,), f"answered_at, rowid LIMIT {int(n)}")
