"""The verdicts table: each judgement of a result — the radiologist's final report, an IOCM rejection, a call
to the feedback API — one row per (study, source, source key), the newest replacing the earlier one (a
corrected report, a second call). Rows hold labels and codes only, never report text: they are the quality
record and outlive retention. The source key is kept as its key (:class:`node.store.keys.IdentifierKeys` under
the source's name), never as written; the study UID is kept while the study is, and replaced by its key when
retention purges the study (:mod:`node.store.retention`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from node.store.database import Database
from node.store.keys import IdentifierKeys, legacy_key
from node.store.outbox import cancel_pending
from node.store.task_records import TaskRecords


class Source(StrEnum):
    """Where a judgement came from, as the verdicts table and ``qoqnode_verdicts{source}`` spell it."""

    REPORT = "report"  # the radiologist's final report (HL7 ORU)
    IOCM = "iocm"  # an IHE IOCM rejection note
    API = "api"  # a call to the feedback API


class Concordance(StrEnum):
    """A report's verdict: how the AI's answer compares with the report (:mod:`node.verdicts.concordance`)."""

    AGREE = "agree"
    PARTIAL = "partial"
    DISAGREE = "disagree"
    UNKNOWN = "unknown"


class Judgement(StrEnum):
    """A reader's verdict through the feedback API; an IOCM rejection note's is :attr:`REJECT` too."""

    ACCEPT = "accept"
    REJECT = "reject"
    CORRECT = "correct"


#: The verdicts each source gives: a report's concordance, an API call's judgement, an IOCM rejection.
VERDICTS_BY_SOURCE: dict[Source, tuple[str, ...]] = {
    Source.REPORT: tuple(Concordance), Source.API: tuple(Judgement), Source.IOCM: (Judgement.REJECT,)}


@dataclass(frozen=True)
class Verdict:
    """One judgement of the result a study version got for its task."""

    study_instance_uid: str
    version: int | None  # the study version whose result was judged; None when not known
    task: str
    source: Source
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


def _found_json(found: Mapping[str, str] | tuple[str, ...] | None) -> str | None:
    if found is None:
        return None
    return json.dumps(dict(found) if isinstance(found, Mapping) else list(found), sort_keys=True)


def _verdict(row: tuple) -> Verdict:
    uid, version, task, source, key, kind, received, ai_labels, found, code, role, recorded = row
    parsed = json.loads(found) if found is not None else None
    return Verdict(uid, version, task, Source(source), key, kind, received, tuple(json.loads(ai_labels or "[]")),
                   tuple(parsed) if isinstance(parsed, list) else parsed, code, role, recorded)


class Verdicts(TaskRecords[Verdict]):
    """The verdicts table."""

    def __init__(self, database: Database, keys: IdentifierKeys) -> None:
        super().__init__(database, "verdicts", _COLUMNS, "received_at", _verdict)
        self._keys = keys

    def source_key(self, source: Source, key: str) -> str:
        """What the verdicts keep of a judgement's key within its source: its key under the source's name (a
        report's accession, filler or placer number, a KOS's UID, a study UID: identifiers all)."""
        return self._keys.key(source, key)

    def kept(self, study_instance_uid: str, source: Source, source_key: str) -> Verdict | None:
        """The verdict kept for a study, source and source key as written (found by its key, or by the plain
        SHA-256 of a node before schema 9); None when there is none."""
        kept, keys = self._keys.where_kept("source_key", source, source_key)
        found = self._select(f"study_instance_uid = ? AND source = ? AND {kept}", (study_instance_uid, source, *keys))
        return found[0] if found else None

    def record(self, verdict: Verdict, cancel_results: str | None = None, now: float | None = None) -> int:
        """Keep a judgement, replacing the one with its (study, source, source key), in one transaction that
        is on disk before this returns; the source key is kept as its key (:meth:`source_key`; a row a node
        before schema 9 kept under the plain SHA-256 is re-keyed, so that it is replaced too). With
        ``cancel_results`` (a study version's results folder, as its outbox items' payloads begin), the outbox
        items of those results not yet delivered are cancelled in the same transaction: both happen, or
        neither. How many items were cancelled. ValueError for a source or verdict not in
        :data:`VERDICTS_BY_SOURCE`."""
        if verdict.verdict not in VERDICTS_BY_SOURCE.get(verdict.source, ()):
            raise ValueError(f"verdict {verdict.verdict!r} is not one source {verdict.source!r} gives")
        key = self.source_key(verdict.source, verdict.source_key)
        with self._database.transaction() as db:
            db.execute("UPDATE OR REPLACE verdicts SET source_key = ?, keyed = 1 WHERE study_instance_uid = ?"
                       " AND source = ? AND keyed = 0 AND source_key = ?",
                       (key, verdict.study_instance_uid, verdict.source,
                        legacy_key(verdict.source, verdict.source_key)))
            db.execute(
                f"INSERT INTO verdicts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (study_instance_uid, source, source_key) DO UPDATE SET version = excluded.version,"
                " task = excluded.task, verdict = excluded.verdict, received_at = excluded.received_at,"
                " ai_labels = excluded.ai_labels, found = excluded.found, reason_code = excluded.reason_code,"
                " reader_role = excluded.reader_role, recorded_at = excluded.recorded_at",
                (verdict.study_instance_uid, verdict.version, verdict.task, verdict.source, key,
                 verdict.verdict, verdict.received_at, json.dumps(list(verdict.ai_labels)),
                 _found_json(verdict.found), verdict.reason_code, verdict.reader_role,
                 verdict.recorded_at or time.time()))
            return cancel_pending(db, cancel_results, now or time.time()) if cancel_results else 0

    def counts(self) -> dict[tuple[str, str, str], int]:
        """How many verdicts there are per (task, source, verdict)."""
        with self._database.reading() as db:
            rows = db.execute("SELECT task, source, verdict, COUNT(*) FROM verdicts GROUP BY task, source, verdict")
            return {(task, source, kind): count for task, source, kind, count in rows.fetchall()}
