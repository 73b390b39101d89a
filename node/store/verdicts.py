"""The verdicts table: each judgement of a result — the radiologist's final report, an IOCM rejection, a call
to the feedback API — one row per (study, source, source key), the newest replacing the earlier one (a
corrected report, a second call). Rows hold labels and codes only, never report text: they are the quality
record and outlive retention. The source key is kept as its key (:func:`node.store.keys.identifier_key` under
the source's name), never as written; the study UID is kept while the study is, and replaced by its key when
retention purges the study (:mod:`node.store.retention`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.store.database import Database
from node.store.keys import identifier_key

#: Where a judgement came from.
SOURCES = ("report", "iocm", "api")
#: The verdicts each source gives: a report's concordance, an API call's verdict, an IOCM rejection.
VERDICTS_BY_SOURCE = {
    "report": ("agree", "partial", "disagree", "unknown"),
    "api": ("accept", "reject", "correct"),
    "iocm": ("rejected",),
}
VERDICTS = tuple(kind for kinds in VERDICTS_BY_SOURCE.values() for kind in kinds)


@dataclass(frozen=True)
class Verdict:
    """One judgement of the result a study version got for its task."""

    study_instance_uid: str
    version: int | None  # the study version whose result was judged; None when not known
    task: str
    source: str  # one of SOURCES
    #: the judgement within its source (report key, KOS SOP Instance UID, study UID + role); the store keeps, and
    #: gives back, only its identifier_key under the source's name
    source_key: str
    verdict: str  # one of VERDICTS_BY_SOURCE[source]
    received_at: float  # when the report, KOS or call arrived
    ai_labels: tuple[str, ...] = ()
    #: report: {label: 'affirmed' | 'negated' | 'uncertain'}; api 'correct': the corrected labels; else None
    found: Mapping[str, str] | tuple[str, ...] | None = None
    reason_code: str | None = None  # iocm: '113001' …
    reader_role: str | None = None  # api
    recorded_at: float = field(default=0.0)  # set by record() when 0


_COLUMNS = ("study_instance_uid, version, task, source, source_key, verdict, received_at, ai_labels, found,"
            " reason_code, reader_role, recorded_at")


def source_key(source: str, key: str) -> str:
    """What the verdicts keep of a judgement's key within its source: its identifier_key under the source's name
    (a report's accession, filler or placer number, a KOS's UID, a study UID: identifiers all)."""
    return identifier_key(source, key)


def _found_json(found: Mapping[str, str] | tuple[str, ...] | None) -> str | None:
    if found is None:
        return None
    return json.dumps(dict(found) if isinstance(found, Mapping) else list(found), sort_keys=True)


def _verdict(row: sqlite3.Row | tuple) -> Verdict:
    uid, version, task, source, key, kind, received, ai_labels, found, code, role, recorded = row
    parsed = json.loads(found) if found is not None else None
    return Verdict(uid, version, task, source, key, kind, received, tuple(json.loads(ai_labels or "[]")),
                   tuple(parsed) if isinstance(parsed, list) else parsed, code, role, recorded)


class Verdicts:
    """The verdicts table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def record(self, verdict: Verdict) -> None:
        """Keep a judgement, replacing the one with its (study, source, source key), in one transaction that
        is on disk before this returns; the source key is kept hashed (:func:`source_key`). ValueError for a
        source or verdict not in :data:`VERDICTS_BY_SOURCE`."""
        if verdict.verdict not in VERDICTS_BY_SOURCE.get(verdict.source, ()):
            raise ValueError(f"verdict {verdict.verdict!r} is not one source {verdict.source!r} gives")
        with self._database.transaction() as db:
            db.execute(
                f"INSERT INTO verdicts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (study_instance_uid, source, source_key) DO UPDATE SET version = excluded.version,"
                " task = excluded.task, verdict = excluded.verdict, received_at = excluded.received_at,"
                " ai_labels = excluded.ai_labels, found = excluded.found, reason_code = excluded.reason_code,"
                " reader_role = excluded.reader_role, recorded_at = excluded.recorded_at",
                (verdict.study_instance_uid, verdict.version, verdict.task, verdict.source,
                 source_key(verdict.source, verdict.source_key),
                 verdict.verdict, verdict.received_at, json.dumps(list(verdict.ai_labels)),
                 _found_json(verdict.found), verdict.reason_code, verdict.reader_role,
                 verdict.recorded_at or time.time()))

    def _select(self, where: str, parameters: tuple, order: str = "received_at, rowid") -> list[Verdict]:
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM verdicts WHERE {where} ORDER BY {order}",  # noqa: S608
                              parameters)
            return [_verdict(row) for row in rows.fetchall()]

    def since(self, t: float, task: str | None = None) -> list[Verdict]:
        """The verdicts received at or after ``t`` (of ``task`` only, when given), oldest first."""
        if task is None:
            return self._select("received_at >= ?", (t,))
        return self._select("received_at >= ? AND task = ?", (t, task))

    def latest(self, n: int, task: str) -> list[Verdict]:
        """The ``n`` verdicts of ``task`` received last, newest first."""
        return self._select("task = ?", (task,), f"received_at DESC, rowid DESC LIMIT {int(n)}")

    def first(self, n: int, task: str) -> list[Verdict]:
        """The first ``n`` verdicts of ``task`` received, oldest first."""
        return self._select("task = ?", (task,), f"received_at, rowid LIMIT {int(n)}")

    def counts(self) -> dict[tuple[str, str, str], int]:
        """How many verdicts there are per (task, source, verdict)."""
        with self._database.reading() as db:
            rows = db.execute("SELECT task, source, verdict, COUNT(*) FROM verdicts GROUP BY task, source, verdict")
            return {(task, source, kind): count for task, source, kind, count in rows.fetchall()}

    def tasks(self) -> list[str]:
        """Every task there is a verdict on, by name."""
        with self._database.reading() as db:
            return [task for (task,) in db.execute("SELECT DISTINCT task FROM verdicts ORDER BY task").fetchall()]

    def for_study(self, study_instance_uid: str) -> list[Verdict]:
        """Every verdict on a study's results, oldest first."""
        return self._select("study_instance_uid = ?", (study_instance_uid,))

    def is_rejected(self, study_instance_uid: str, version: int | None = None) -> bool:
        """Whether an IOCM rejection marks the study's result rejected (of ``version``, when given; a rejection
        whose version is not known rejects every version). An API 'reject' is a verdict only: it rejects nothing."""
        if version is None:
            rows = self._select("study_instance_uid = ? AND source = 'iocm'", (study_instance_uid,))
        else:
            rows = self._select("study_instance_uid = ? AND source = 'iocm' AND (version IS NULL OR version = ?)",
                                (study_instance_uid, version))
        return bool(rows)
