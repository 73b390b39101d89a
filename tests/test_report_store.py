"""The reports table (schema 7): kept with their HL7 message and forgotten with it when retention ends,
matched or not; matched to the study the node answered by accession, or by the placer or filler number of
the study's order; a schema 6 database gains it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.store import Store
from node.store.answers import Answer, insert_answer
from node.store.clinical import InboundMessage, KnownStudy, Order, patient_key
from node.store.reports import Report
from node.store.schema import SCHEMA_VERSION
from tests.helpers import report_count

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
    assert report_count(store, waiting=True) == 2 and store.reports.matches() == []
    messages, _ = store.clinical.forget_before(150.0)
    assert [p.name for p in messages] == ["R1.hl7"]
    assert report_count(store) == 1
    with store.database.reading() as db:
        assert db.execute("SELECT accession FROM reports").fetchall() == [("ACC-NEW",)]


def test_a_report_is_matched_by_its_orders_placer_or_filler_number(tmp_path: Path) -> None:
    """A report that names only the order's placer number, or only its filler number (in OBR-3 or in the
    accession's place), is matched through the order to the study of the order's accession; numbers of another
    order, or the order's numbers for another patient, match nothing."""
    store = Store(tmp_path / "state.db")
    with store.database.transaction() as db:
        insert_answer(db, Answer("1.2.3.1", 1, "chest_xray", ("Pneumothorax",), "", "", 10.0))
    store.clinical.know_study(KnownStudy("1.2.3.1", KEY, "ACC-S", "CR", None, "", None), 10.0)
    order = Order(KEY, "PL-1", "FL-1", "ACC-S", "CHEST XR", "", "", "R", None)
    assert store.clinical.record_message(InboundMessage("O1", "ORM^O01", "RIS", KEY, orders=(order,)),
                                         "hl7/O1.hl7", 5.0)
    other = patient_key("REP-0002", "HOSP")
    reports = {"placer": Report(KEY, "PL-1", "", "", "F", "No pneumothorax."),
               "filler": Report(KEY, "", "FL-1", "", "F", "No pneumothorax."),
               "filler as accession": Report(KEY, "", "", "FL-1", "F", "No pneumothorax."),
               "another order": Report(KEY, "PL-2", "FL-2", "", "F", "No pneumothorax."),
               "another patient": Report(other, "PL-1", "FL-1", "", "F", "No pneumothorax.")}
    for n, report in enumerate(reports.values()):
        assert store.clinical.record_message(InboundMessage(f"R{n}", "ORU^R01", "RIS", report.patient_key,
                                                            reports=(report,)), f"hl7/R{n}.hl7", 20.0 + n)
    matched = {(found.report.placer, found.report.filler, found.report.accession, found.report.patient_key): study
               for found, study in store.reports.matches()}
    expected = {name: "1.2.3.1" for name in ("placer", "filler", "filler as accession")}
    assert {name: matched.get((r.placer, r.filler, r.accession, r.patient_key)) for name, r in reports.items()} == {
        **expected, "another order": None, "another patient": None}


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
    assert report_count(store, waiting=True) == 1


def test_the_report_benchmark_judges_every_report(tmp_path: Path) -> None:
    """benchmarks/report_verdicts.py on a few reports: each is matched and judged."""
    from benchmarks.report_verdicts import run

    figures = run(20, tmp_path)
    assert sum(figures["verdicts"].values()) == 20
    assert figures["extract_only"]["median_ms"] < 50
