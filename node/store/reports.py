"""Radiology reports received over HL7 (ORU^R01 with report text, MDM^T02), waiting for the study they
report or matched with it.

A report is clinical context: its row (with its text) belongs to the HL7 message it came in, and goes
with it when the message's retention ends (``ON DELETE CASCADE``), matched or not. It waits, unmatched,
until the node has answered a study of the same patient (resolved through merges, as every keyed table is)
whose accession number is one of the report's numbers, or is the accession of an order whose placer or
filler number is: the study's accession is what ``known_studies`` keeps of each study the node read. A matched
report keeps the study version whose answer its verdict judged; when the node answers a newer version, the
report (the latest of its key: a correction rather than the report it corrects) is :meth:`Reports.outdated`
and judged again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from node.store.database import Database

#: A waiting report's row with the study it reports (known, and answered: read by the node, not only a prior),
#: the study answered last first.
_MATCHES = """
SELECT r.id, r.patient_key, r.placer, r.filler, r.accession, r.status, r.text, r.received_at, k.study_uid
FROM reports AS r
JOIN known_studies AS k ON k.patient_key = r.patient_key AND k.accession != ''
JOIN answers AS a ON a.study_instance_uid = k.study_uid
WHERE r.study_uid IS NULL AND (
    k.accession IN (r.accession, r.placer, r.filler)
    OR k.accession IN (SELECT o.accession FROM orders AS o WHERE o.patient_key = r.patient_key
                       AND ((o.placer != '' AND o.placer IN (r.placer, r.accession))
                            OR (o.filler != '' AND o.filler IN (r.filler, r.accession)))))
GROUP BY r.id, k.study_uid
ORDER BY r.id, MAX(a.answered_at) DESC
"""

#: The matched reports, each the latest of its study and key (:attr:`Report.key`), whose verdict judged a version
#: older than their study's latest answer, among the studies of the answers of a later version in a range of
#: rowids (a first version's answer outdates no verdict): the range walks the answers table's rowids, and each
#: study's reports are found by ``reports_waiting``, so that no report is read that no new answer concerns.
_OUTDATED = """
WITH answered AS (SELECT DISTINCT study_instance_uid AS study_uid FROM answers
                  WHERE rowid > ? AND rowid <= ? AND version > 1),
latest AS (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY r.study_uid,
                                          COALESCE(NULLIF(r.accession, ''), NULLIF(r.filler, ''), r.placer)
                                          ORDER BY r.id DESC) AS nth,
                  (SELECT MAX(a.version) FROM answers AS a WHERE a.study_instance_uid = r.study_uid) AS answered
           FROM answered JOIN reports AS r ON r.study_uid = answered.study_uid)
SELECT id, patient_key, placer, filler, accession, status, text, received_at, study_uid, version, answered
FROM latest WHERE nth = 1 AND COALESCE(version, 0) < answered
ORDER BY id
"""


@dataclass(frozen=True)
class Report:
    """A radiologist's report: its patient, order numbers, result status (OBX-11 / TXA-17) and text."""

    patient_key: str
    placer: str
    filler: str
    accession: str
    status: str  # F final, C corrected
    text: str

    @property
    def key(self) -> str:
        """What identifies the report among a study's reports (a correction has the same key)."""
        return self.accession or self.filler or self.placer


@dataclass(frozen=True)
class StoredReport:
    """A report kept, with its row id and when it arrived."""

    id: int
    report: Report
    received_at: float


@dataclass(frozen=True)
class Outdated:
    """A matched report whose verdict judged an older version of its study than the study's latest answer."""

    stored: StoredReport
    study_uid: str
    judged: int  # the study version its verdict judged (0: not known, a database an older node wrote)
    latest: int  # the study's latest answered version


def insert_reports(db: sqlite3.Connection, message_id: int | None, reports: tuple[Report, ...], patient_key: str,
                   received_at: float) -> None:
    """Keep a message's reports (inside the caller's transaction), under ``patient_key`` (merges resolved)."""
    db.executemany(
        "INSERT INTO reports (message_id, patient_key, placer, filler, accession, status, text, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(message_id, patient_key, r.placer, r.filler, r.accession, r.status, r.text, received_at) for r in reports])


class Reports:
    """The reports table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def matches(self) -> list[tuple[StoredReport, str]]:
        """Each waiting report whose study the node has answered, with that study's UID (one study per report:
        the one answered last), oldest report first."""
        with self._database.reading() as db:
            rows = db.execute(_MATCHES).fetchall()
        found: dict[int, tuple[StoredReport, str]] = {}
        for row in rows:
            found.setdefault(row[0], (StoredReport(row[0], Report(*row[1:7]), row[7]), row[8]))
        return list(found.values())

    def outdated(self, after: int) -> tuple[list[Outdated], int]:
        """The matched reports to judge again (:data:`_OUTDATED`) among the studies of the answers kept after
        the answers table's rowid ``after``, oldest report first, and the last rowid looked at (the next call's
        ``after``: 0 looks at every answer)."""
        with self._database.reading() as db:
            last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM answers").fetchone()[0]
            rows = db.execute(_OUTDATED, (after, last)).fetchall() if last > after else []
        return [Outdated(StoredReport(row[0], Report(*row[1:7]), row[7]), row[8], row[9] or 0, row[10])
                for row in rows], last

    def matched(self, report_id: int, study_uid: str, version: int) -> None:
        """A report's verdict is recorded for ``study_uid``'s ``version``: it waits no more."""
        with self._database.transaction() as db:
            db.execute("UPDATE reports SET study_uid = ?, version = ? WHERE id = ?", (study_uid, version, report_id))
