"""The clinical context's tables: HL7 messages received, orders, lab results, patient merges, the
studies the node knows per patient (its own and the priors it retrieved from the PACS).

A patient is known by a key — a hash of the identifier and its assigning authority (PID-3 /
Patient ID + Issuer of Patient ID) — never by name or identifier in clear, so the key can be shown
to operators. A merge (ADT^A40) moves everything of the merged key to the surviving one and makes
later data of the merged key follow it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from node.store.database import Database
from node.store.reports import Report, insert_reports

#: The columns each record type is read from, in its fields' order.
_ORDER_COLUMNS = ("patient_key, placer, filler, accession, procedure, reason, clinical_info, priority, ordered_at,"
                  " received_at, procedure_codes")
_LAB_COLUMNS = "patient_key, code, coding_system, name, value, unit, reference_range, flag, observed_at"
_STUDY_COLUMNS = "study_uid, patient_key, accession, modality, study_time, description, retrieved"

#: Tables that hold a patient key, in the order a merge moves them.
_KEYED_TABLES = ("hl7_messages", "orders", "lab_results", "known_studies", "reports")


def patient_key(identifier: str, authority: str = "") -> str:
    """The key of a patient: a hash of the identifier and its assigning authority (case of the authority
    ignored). Empty when there is no identifier."""
    identifier = identifier.strip()
    if not identifier:
        return ""
    digest = hashlib.sha256(f"qoq-patient\0{authority.strip().upper()}\0{identifier}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Order:
    """An imaging order (ORM^O01 / OMI^O23): its numbers and what the requester wrote."""

    patient_key: str
    placer: str
    filler: str
    accession: str
    procedure: str
    reason: str  # OBR-31 reason for study
    clinical_info: str  # OBR-13 relevant clinical information
    priority: str
    ordered_at: float | None
    received_at: float = 0.0
    procedure_codes: tuple[str, ...] = ()  # OBR-4's codes as SCHEME:VALUE (its coding system and identifier)


def _order(row: tuple) -> Order:
    """An order from its row (``_ORDER_COLUMNS``; the codes one per line)."""
    return replace(Order(*row[:-1]), procedure_codes=tuple(code for code in row[-1].split("\n") if code))


@dataclass(frozen=True)
class LabResult:
    """One laboratory observation (ORU^R01 OBX)."""

    patient_key: str
    code: str  # LOINC where the laboratory sends it
    coding_system: str
    name: str
    value: str
    unit: str
    reference_range: str
    flag: str  # OBX-8: H, L, HH, LL, A, N or empty
    observed_at: float

    @property
    def numeric(self) -> float | None:
        """The value as a number, when it is one."""
        try:
            return float(self.value)
        except ValueError:
            return None


@dataclass(frozen=True)
class Merge:
    """ADT^A40: ``merged_key`` is now ``surviving_key``."""

    surviving_key: str
    merged_key: str


@dataclass(frozen=True)
class InboundMessage:
    """What one accepted HL7 message adds to the context."""

    control_id: str
    message_type: str  # e.g. ORM^O01
    sending_application: str
    patient_key: str
    orders: tuple[Order, ...] = ()
    results: tuple[LabResult, ...] = ()
    merges: tuple[Merge, ...] = ()
    reports: tuple[Report, ...] = ()  # radiology reports (ORU^R01 with report text, MDM^T02)


@dataclass(frozen=True)
class KnownStudy:
    """A study of a patient the node knows: received for reading, or retrieved from the PACS as a prior."""

    study_uid: str
    patient_key: str
    accession: str
    modality: str  # the study's modalities, comma-separated
    study_time: float | None
    description: str
    retrieved: str | None  # the folder of a retrieved prior's files (relative to the storage root); None: received


@dataclass(frozen=True)
class StoredMessage:
    """An HL7 message kept as context: its row and its file."""

    id: int
    message_type: str
    sending_application: str
    received_at: float
    path: str


class ClinicalStore:
    """The clinical context's tables (made by :mod:`node.store.schema`), on the state database's one connection."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @staticmethod
    def _resolve(db: sqlite3.Connection, key: str) -> str:
        row = db.execute("SELECT surviving_key FROM patient_merges WHERE merged_key = ?", (key,)).fetchone()
        return row[0] if row else key

    def resolve(self, key: str) -> str:
        """The key data of ``key`` is kept under now (the surviving patient after merges)."""
        with self._database.reading() as db:
            return self._resolve(db, key)

    def record_message(self, message: InboundMessage, path: str, received_at: float) -> bool:
        """Keep one accepted message and what it says, in one transaction. False (nothing kept) when the
        same sending application already sent this control ID: a resend."""
        with self._database.transaction() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO hl7_messages (control_id, message_type, sending_application, patient_key, path,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (message.control_id, message.message_type, message.sending_application,
                     self._resolve(db, message.patient_key), path, received_at))
            except sqlite3.IntegrityError:
                return False
            message_id = cursor.lastrowid
            for order in message.orders:
                db.execute(
                    "INSERT INTO orders (message_id, patient_key, placer, filler, accession, procedure, reason,"
                    " clinical_info, priority, ordered_at, received_at, procedure_codes)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (message_id, self._resolve(db, order.patient_key), order.placer, order.filler, order.accession,
                     order.procedure, order.reason, order.clinical_info, order.priority, order.ordered_at,
                     received_at, "\n".join(order.procedure_codes)))
            db.executemany(
                "INSERT INTO lab_results (message_id, patient_key, code, coding_system, name, value, unit,"
                " reference_range, flag, observed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(message_id, self._resolve(db, r.patient_key), r.code, r.coding_system, r.name, r.value, r.unit,
                  r.reference_range, r.flag, r.observed_at) for r in message.results])
            insert_reports(db, message_id, message.reports, self._resolve(db, message.patient_key), received_at)
            for merge in message.merges:
                self._merge(db, merge, received_at)
        return True

    def _merge(self, db: sqlite3.Connection, merge: Merge, at: float) -> None:
        surviving = self._resolve(db, merge.surviving_key)
        if not merge.merged_key or merge.merged_key == surviving:
            return
        for table in _KEYED_TABLES:
            db.execute(f"UPDATE {table} SET patient_key = ? WHERE patient_key = ?",  # noqa: S608
                       (surviving, merge.merged_key))
        db.execute("UPDATE patient_merges SET surviving_key = ? WHERE surviving_key = ?", (surviving, merge.merged_key))
        db.execute("INSERT OR REPLACE INTO patient_merges (merged_key, surviving_key, merged_at) VALUES (?, ?, ?)",
                   (merge.merged_key, surviving, at))

    def order_for(self, key: str, numbers: tuple[str, ...]) -> Order | None:
        """The latest order of the patient whose accession, placer or filler number is one of ``numbers``."""
        numbers = tuple(n for n in numbers if n)
        if not key or not numbers:
            return None
        marks = ",".join("?" * len(numbers))
        with self._database.reading() as db:
            query = (f"SELECT {_ORDER_COLUMNS} FROM orders WHERE patient_key = ? AND (accession IN ({marks})"  # noqa: S608
                     f" OR placer IN ({marks}) OR filler IN ({marks})) ORDER BY received_at DESC, id DESC LIMIT 1")
            row = db.execute(query, (self._resolve(db, key), *numbers, *numbers, *numbers)).fetchone()
        return _order(row) if row else None

    def order_kept_elsewhere(self, key: str, numbers: tuple[str, ...]) -> bool:
        """Whether an order whose accession, placer or filler number is one of ``numbers`` is kept for a patient
        other than the one with ``key`` (the identifiers' authorities differ, or the patient does)."""
        numbers = tuple(n for n in numbers if n)
        if not numbers:
            return False
        marks = ",".join("?" * len(numbers))
        with self._database.reading() as db:
            query = (f"SELECT 1 FROM orders WHERE patient_key != ? AND (accession IN ({marks})"  # noqa: S608
                     f" OR placer IN ({marks}) OR filler IN ({marks})) LIMIT 1")
            return db.execute(query, (self._resolve(db, key), *numbers, *numbers, *numbers)).fetchone() is not None

    def lab_results(self, key: str, codes: tuple[str, ...], since: float, until: float) -> list[LabResult]:
        """The patient's latest result of each code in ``codes`` observed in [since, until], in ``codes`` order."""
        if not key or not codes:
            return []
        marks = ",".join("?" * len(codes))
        with self._database.reading() as db:
            query = (f"SELECT {_LAB_COLUMNS} FROM lab_results WHERE patient_key = ? AND code IN ({marks})"  # noqa: S608
                     " AND observed_at BETWEEN ? AND ? ORDER BY observed_at DESC, id DESC")
            rows = db.execute(query, (self._resolve(db, key), *codes, since, until)).fetchall()
        latest: dict[str, LabResult] = {}
        for row in rows:
            latest.setdefault(row[1], LabResult(*row))
        return [latest[code] for code in codes if code in latest]

    def know_study(self, study: KnownStudy, now: float) -> None:
        """Remember a study of a patient (received or retrieved), or refresh what is known of it."""
        with self._database.transaction() as db:
            db.execute(
                f"INSERT INTO known_studies ({_STUDY_COLUMNS}, used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                " ON CONFLICT (study_uid) DO UPDATE SET"
                " patient_key = excluded.patient_key, accession = excluded.accession, modality = excluded.modality,"
                " study_time = excluded.study_time, description = excluded.description,"
                " retrieved = COALESCE(known_studies.retrieved, excluded.retrieved), used_at = excluded.used_at",
                (study.study_uid, self._resolve(db, study.patient_key), study.accession, study.modality,
                 study.study_time, study.description, study.retrieved, now))

    def studies_of(self, key: str) -> list[KnownStudy]:
        """Every study known of the patient, most recent first."""
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {_STUDY_COLUMNS} FROM known_studies WHERE patient_key = ?"  # noqa: S608
                              " ORDER BY study_time DESC", (self._resolve(db, key),)).fetchall()
        return [KnownStudy(*row) for row in rows]

    def mark_used(self, study_uids: list[str], now: float) -> None:
        """Studies given to the model as context now (their retention counts from their last use)."""
        with self._database.transaction() as db:
            db.executemany("UPDATE known_studies SET used_at = ? WHERE study_uid = ?",
                           [(now, uid) for uid in study_uids])

    def orders_of(self, key: str) -> list[Order]:
        """Every order kept for a patient, newest first."""
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE patient_key = ?"  # noqa: S608
                              " ORDER BY received_at DESC, id DESC", (self._resolve(db, key),)).fetchall()
        return [_order(row) for row in rows]

    def results_of(self, key: str) -> list[LabResult]:
        """Every lab result kept for a patient, newest first."""
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {_LAB_COLUMNS} FROM lab_results WHERE patient_key = ?"  # noqa: S608
                              " ORDER BY observed_at DESC, id DESC", (self._resolve(db, key),)).fetchall()
        return [LabResult(*row) for row in rows]

    def messages_of(self, key: str) -> list[StoredMessage]:
        """The HL7 messages kept for a patient, oldest first."""
        with self._database.reading() as db:
            rows = db.execute("SELECT id, message_type, sending_application, received_at, path FROM hl7_messages"
                              " WHERE patient_key = ? ORDER BY id", (self._resolve(db, key),)).fetchall()
        return [StoredMessage(*row) for row in rows]

    def forget_before(self, before: float) -> tuple[list[Path], list[Path]]:
        """Forget messages received before ``before`` (with their orders and results) and retrieved priors
        last used before it; returns (message files, prior folders) for the caller to delete."""
        root = self._database.root
        with self._database.transaction() as db:
            messages = [root / path for (path,) in db.execute(
                "DELETE FROM hl7_messages WHERE received_at < ? RETURNING path", (before,)).fetchall()]
            priors = [root / path for (path,) in db.execute(
                "DELETE FROM known_studies WHERE retrieved IS NOT NULL AND used_at < ? RETURNING retrieved",
                (before,)).fetchall()]
            db.execute("DELETE FROM known_studies WHERE retrieved IS NULL AND used_at < ?"
                       " AND study_uid NOT IN (SELECT study_uid FROM studies)", (before,))
        return messages, priors
