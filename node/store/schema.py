"""The state database's tables, and the migration of a database written by an older node.

Every concern module (:mod:`~node.store.instances`, :mod:`~node.store.studies`, :mod:`~node.store.outbox`,
:mod:`~node.store.quarantine`, :mod:`~node.store.retention`, :mod:`~node.store.clinical`,
:mod:`~node.store.answers`, :mod:`~node.store.verdicts`) reads and writes
these tables; :func:`create` makes them (and brings an older database up to them) when the store opens.
"""

from __future__ import annotations

import sqlite3

from node.store.keys import legacy_key
from node.store.retention import STUDY_REFERENCES, keep_only_key
from node.store.studies import POSTPONEMENT_DETAIL, StudyState
from node.store.verdicts import Judgement, Source

#: 3: the clinical context's tables; 4: ``studies.postponed_for`` (why a stable study waits, as a code);
#: 6: the quality record (``answers``, ``verdicts``).
#: 7: radiology reports (:mod:`node.store.reports`); 8: the quality record keeps no identifier (the verdicts'
#: source keys hashed, a purged study's UID replaced by its key: :mod:`node.store.keys`); 9: those keys under the
#: node's own key (HMAC), the rows of older plain SHA-256 keys kept and marked ``keyed = 0``; an outbox item's
#: ``study_version``; an IOCM rejection's verdict spelled ``reject``, as the API's; 10: the study version a matched
#: report's verdict judged (``reports.version``), so that a report is judged again when its study gets a newer answer.
SCHEMA_VERSION = 10

_RECEIVED = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid        TEXT PRIMARY KEY,
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    first_received   REAL NOT NULL,
    last_received    REAL NOT NULL,
    state_changed_at REAL NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_try_at      REAL NOT NULL DEFAULT 0,
    detail           TEXT NOT NULL DEFAULT '',
    postponed_for    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies (state);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_uid           TEXT NOT NULL REFERENCES studies (study_uid),
    study_version       INTEGER NOT NULL,
    series_uid          TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    modality            TEXT NOT NULL,
    path                TEXT NOT NULL,
    size                INTEGER NOT NULL,
    calling_ae          TEXT NOT NULL,
    received_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    destination     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    key             TEXT NOT NULL,
    payload_path    TEXT NOT NULL,
    study_uid       TEXT NOT NULL,
    study_version   INTEGER,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    UNIQUE (destination, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    calling_ae  TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""

_CLINICAL = """
CREATE TABLE IF NOT EXISTS hl7_messages (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    control_id          TEXT NOT NULL,
    message_type        TEXT NOT NULL,
    sending_application TEXT NOT NULL,
    patient_key         TEXT NOT NULL,
    path                TEXT NOT NULL,
    received_at         REAL NOT NULL,
    UNIQUE (sending_application, control_id)
);
CREATE TABLE IF NOT EXISTS orders (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    INTEGER NOT NULL REFERENCES hl7_messages (id) ON DELETE CASCADE,
    patient_key   TEXT NOT NULL,
    placer        TEXT NOT NULL,
    filler        TEXT NOT NULL,
    accession     TEXT NOT NULL,
    procedure     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    clinical_info TEXT NOT NULL,
    priority      TEXT NOT NULL,
    ordered_at    REAL,
    received_at   REAL NOT NULL,
    procedure_codes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS orders_by_patient ON orders (patient_key);
CREATE TABLE IF NOT EXISTS lab_results (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      INTEGER NOT NULL REFERENCES hl7_messages (id) ON DELETE CASCADE,
    patient_key     TEXT NOT NULL,
    code            TEXT NOT NULL,
    coding_system   TEXT NOT NULL,
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    unit            TEXT NOT NULL,
    reference_range TEXT NOT NULL,
    flag            TEXT NOT NULL,
    observed_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lab_results_by_patient ON lab_results (patient_key, code);
CREATE TABLE IF NOT EXISTS patient_merges (
    merged_key   TEXT PRIMARY KEY,
    surviving_key TEXT NOT NULL,
    merged_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS known_studies (
    study_uid   TEXT PRIMARY KEY,
    patient_key TEXT NOT NULL,
    accession   TEXT NOT NULL,
    modality    TEXT NOT NULL,
    study_time  REAL,
    description TEXT NOT NULL,
    retrieved   TEXT,
    used_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS known_studies_by_patient ON known_studies (patient_key);
"""

_QUALITY = """
CREATE TABLE IF NOT EXISTS answers (
    study_instance_uid TEXT NOT NULL,
    version            INTEGER NOT NULL,
    task               TEXT NOT NULL,
    labels             TEXT NOT NULL,
    manufacturer       TEXT NOT NULL,
    model              TEXT NOT NULL,
    answered_at        REAL NOT NULL,
    accession_key      TEXT NOT NULL DEFAULT '',
    keyed              INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (study_instance_uid, version)
);
CREATE INDEX IF NOT EXISTS answers_by_task ON answers (task, answered_at);
CREATE INDEX IF NOT EXISTS answers_by_accession ON answers (accession_key);
CREATE TABLE IF NOT EXISTS verdicts (
    study_instance_uid TEXT NOT NULL,
    version            INTEGER,
    task               TEXT NOT NULL,
    source             TEXT NOT NULL,
    source_key         TEXT NOT NULL,
    verdict            TEXT NOT NULL,
    ai_labels          TEXT,
    found              TEXT,
    reason_code        TEXT,
    reader_role        TEXT,
    received_at        REAL NOT NULL,
    recorded_at        REAL NOT NULL,
    keyed              INTEGER NOT NULL DEFAULT 1,
    UNIQUE (study_instance_uid, source, source_key)
);
CREATE INDEX IF NOT EXISTS verdicts_by_task ON verdicts (task, received_at);
CREATE INDEX IF NOT EXISTS verdicts_by_kind ON verdicts (task, source, verdict);
"""

#: Radiology reports (schema 7; ``node/store/reports.py``), deleted with their HL7 message.
_REPORTS = """
CREATE TABLE IF NOT EXISTS reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  INTEGER NOT NULL REFERENCES hl7_messages (id) ON DELETE CASCADE,
    patient_key TEXT NOT NULL,
    placer      TEXT NOT NULL,
    filler      TEXT NOT NULL,
    accession   TEXT NOT NULL,
    status      TEXT NOT NULL,
    text        TEXT NOT NULL,
    received_at REAL NOT NULL,
    study_uid   TEXT,
    version     INTEGER
);
CREATE INDEX IF NOT EXISTS reports_waiting ON reports (study_uid);
"""

#: Columns added by schema 9: (table, column, definition).
_ADDED_COLUMNS_9 = (("outbox", "study_version", "INTEGER"), ("answers", "keyed", "INTEGER NOT NULL DEFAULT 1"),
                    ("verdicts", "keyed", "INTEGER NOT NULL DEFAULT 1"))
#: Columns added to ``studies`` since schema 1 (ingest only), with their definitions, in the order added.
_ADDED_STUDY_COLUMNS = (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("next_try_at", "REAL NOT NULL DEFAULT 0"),
                        ("detail", "TEXT NOT NULL DEFAULT ''"), ("postponed_for", "TEXT NOT NULL DEFAULT ''"))


def create(connection: sqlite3.Connection) -> None:
    """Make every table (those there are kept), bring an older database up to this schema, and stamp
    its version."""
    written_by = connection.execute("PRAGMA user_version").fetchone()[0]
    connection.executescript(_RECEIVED)
    _migrate(connection)
    connection.executescript(_CLINICAL)
    _add_missing_columns(connection, "orders", (("procedure_codes", "TEXT NOT NULL DEFAULT ''"),))  # schema 4
    connection.executescript(_QUALITY)  # schema 6
    connection.executescript(_REPORTS)  # schema 7
    for table, column, definition in _ADDED_COLUMNS_9:
        _add_missing_columns(connection, table, ((column, definition),))
    _add_missing_columns(connection, "reports", (("version", "INTEGER"),))  # schema 10
    if written_by < SCHEMA_VERSION:
        _upgrade_rows(connection, written_by)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _migrate(connection: sqlite3.Connection) -> None:
    """Add the columns an older node did not write. A study an older node postponed was known by its
    detail's sentence: it gets the code of that sentence, so it is still released when what it waits for comes."""
    if "postponed_for" not in _add_missing_columns(connection, "studies", _ADDED_STUDY_COLUMNS):  # schema 3, older
        connection.executemany("UPDATE studies SET postponed_for = ? WHERE state = ? AND detail = ?",
                               [(code, StudyState.STABLE, detail) for code, detail in POSTPONEMENT_DETAIL.items()])


def _add_missing_columns(connection: sqlite3.Connection, table: str,
                         columns: tuple[tuple[str, str], ...]) -> set[str]:
    """Add those of ``columns`` (name, definition) that ``table`` lacks; the columns it had before."""
    had = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    for column, definition in columns:
        if column not in had:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    return had


def _upgrade_rows(connection: sqlite3.Connection, written_by: int) -> None:
    """In one transaction with the version stamp, so that no key is hashed twice. Schema 8: the verdicts' source
    keys as written become their (plain SHA-256) keys, and the quality record's rows of studies retention has
    already purged keep only the key of the study UID. Schema 9: every row kept so far is marked as keyed by the
    plain SHA-256 (``keyed = 0``: its identifier cannot be keyed again without it; it is still found by it), and
    an IOCM rejection's verdict is spelled ``reject``. Schema 10: a matched report gets the oldest version its
    study's report verdicts judged (0 when none is kept): a report an older node left on a
    superseded answer is judged again on the latest one at the first settling after start."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if written_by < 8:
            rows = connection.execute("SELECT rowid, source, source_key FROM verdicts").fetchall()
            connection.executemany("UPDATE verdicts SET source_key = ? WHERE rowid = ?",
                                   [(legacy_key(source, key), rowid) for rowid, source, key in rows])
            purged: set[str] = set()
            for table, column in STUDY_REFERENCES:
                purged.update(uid for (uid,) in connection.execute(
                    f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
                    f" AND {column} NOT IN (SELECT study_uid FROM studies)"))
            for uid in sorted(purged):
                keep_only_key(connection, uid, legacy_key("study", uid))
        if written_by < 9:
            connection.execute("UPDATE answers SET keyed = 0")
            connection.execute("UPDATE verdicts SET keyed = 0, verdict = CASE WHEN verdict = 'rejected' THEN ?"
                               " ELSE verdict END", (Judgement.REJECT,))
        connection.execute("UPDATE reports SET version = COALESCE((SELECT MIN(v.version) FROM verdicts AS v"
                           " WHERE v.study_instance_uid = reports.study_uid AND v.source = ?), 0)"
                           " WHERE study_uid IS NOT NULL AND version IS NULL", (Source.REPORT,))
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
