"""The reports table (schema 7): kept with their HL7 message and forgotten with it when retention ends,
matched or not; a schema 6 database gains it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.store import Store
from node.store.clinical import InboundMessage, patient_key
from node.store.reports import Report
from node.store.schema import SCHEMA_VERSION

KEY = patient_key("REP-0001", "HOSP")


def _report(store: Store, control: str, accession: str, at: float) -> None:
    report = Report(KEY, f"{accession}P", f"{accession}F", accession, "F", "No pneumothorax.")
    assert store.clinical.record_message(InboundMessage(control, "ORU^R01", "RIS", KEY, reports=(report,)),
                                         f"hl7/{control}.hl7", at)


def test_a_waiting_report_is_forgotten_when_its_message_is(tmp_path: Path) -> None:
    """A report for a study never read waits until its message's retention ends, then goes with it."""
    store = Store(tmp_path / "state.db")
    _report(store, "R1", "ACC-OLD", 100.0)
    _report(store, "R2", "ACC-NEW", 200.0)
    assert store.reports.count(waiting=True) == 2 and store.reports.matches() == []
    messages, _ = store.clinical.forget_before(150.0)
    assert [p.name for p in messages] == ["R1.hl7"]
    assert store.reports.count() == 1
    with store.database.reading() as db:
        assert db.execute("SELECT accession FROM reports").fetchall() == [("ACC-NEW",)]


def test_a_schema_6_database_gains_the_reports_table(tmp_path: Path) -> None:
    """A database a schema 6 node wrote (no reports table) opens at the current schema with its rows kept."""
    path = tmp_path / "state.db"
    Store(path).close()
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE reports")
    connection.execute("INSERT INTO hl7_messages (control_id, message_type, sending_application, patient_key, path,"
                       " received_at) VALUES ('O1', 'ORM^O01', 'RIS', ?, 'hl7/o1.hl7', 1.0)", (KEY,))
    connection.execute("PRAGMA user_version=6")
    connection.commit()
    connection.close()
    store = Store(path)
    with store.database.reading() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 7
    assert [m.message_type for m in store.clinical.messages_of(KEY)] == ["ORM^O01"]
    _report(store, "R1", "ACC-1", 2.0)
    assert store.reports.count(waiting=True) == 1


def test_the_report_benchmark_judges_every_report(tmp_path: Path) -> None:
    """benchmarks/report_verdicts.py on a few reports: each is matched and judged."""
    from benchmarks.report_verdicts import run

    figures = run(20, tmp_path)
    assert sum(figures["verdicts"].values()) == 20
    assert figures["extract_only"]["median_ms"] < 50
