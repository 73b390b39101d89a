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
from node.store.keys import IdentifierKeys
from node.store.task_records import TaskRecords


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
    accession_key: str = ""  # Answers.accession_key() of the study's Accession Number, '' when it has none


_COLUMNS = "study_instance_uid, version, task, labels, manufacturer, model, answered_at, accession_key"


def insert_answer(db: sqlite3.Connection, answer: Answer) -> None:
    """Keep an answer inside the caller's transaction (a study version answered again replaces it)."""
    db.execute(
        f"INSERT OR REPLACE INTO answers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (answer.study_instance_uid, answer.version, answer.task, json.dumps(list(answer.labels)),
         answer.manufacturer, answer.model, answer.answered_at, answer.accession_key))


def _answer(row: tuple) -> Answer:
    uid, version, task, labels, manufacturer, model, answered_at, accession = row
    return Answer(uid, version, task, tuple(json.loads(labels)), manufacturer, model, answered_at, accession)


class Answers(TaskRecords[Answer]):
    """The answers table."""

    def __init__(self, database: Database, keys: IdentifierKeys) -> None:
        super().__init__(database, "answers", _COLUMNS, "answered_at", _answer)
        self._keys = keys

    def accession_key(self, accession: str) -> str:
        """What the answers keep of an Accession Number: its key (:mod:`node.store.keys`), enough to find the
        study by it and no more (the table outlives retention)."""
        return self._keys.key("accession", accession)

    def for_study(self, study_instance_uid: str, version: int | None = None) -> Answer | None:
        """The answer of a study version (its newest version's, when ``version`` is None); None when the
        node has not answered it."""
        if version is None:
            found = self._select("study_instance_uid = ?", (study_instance_uid,), "version DESC LIMIT 1")
        else:
            found = self._select("study_instance_uid = ? AND version = ?", (study_instance_uid, version))
        return found[0] if found else None

    def for_accession(self, accession: str) -> Answer | None:
        """The newest answer of the study with this Accession Number (kept under its key, or under its plain
        SHA-256 by a node before schema 9); None when the node answered none, or retention has purged the study
        (its answer outlives it, keyed, for the quality record only)."""
        kept, keys = self._keys.where_kept("accession_key", "accession", accession)
        found = self._select(f"{kept} AND study_instance_uid IN (SELECT study_uid FROM studies)",  # noqa: S608
                             keys, "answered_at DESC, rowid DESC LIMIT 1") if keys[0] else []
        return found[0] if found else None
