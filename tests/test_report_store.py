"""The reports table (schema 7): kept with their HL7 message and forgotten with it when retention ends,
matched or not; matched to the study the node answered by accession, or by the placer or filler number of
the study's order; a schema 6 database gains it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.store import Store
from node.store.answers import Answer, insert_answer
from node.store.clinical import InboundMessage, KnownStudy, Order, patient_key
from node.store.reports import _OUTDATED, Report
from node.store.schema import SCHEMA_VERSION
from node.store.verdicts import Source, Verdict
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


def _matched_report(store: Store, control: str, accession: str, study_uid: str, version: int, status: str = "F",
                    at: float = 20.0) -> None:
    """A report of ``accession`` kept and matched to ``study_uid``, its verdict having judged ``version``."""
    report = Report(KEY, "", "", accession, status, "No pneumothorax.")
    assert store.clinical.record_message(InboundMessage(control, "ORU^R01", "RIS", KEY, reports=(report,)),
                                         f"hl7/{control}.hl7", at)
    with store.database.reading() as db:
        report_id = db.execute("SELECT MAX(id) FROM reports").fetchone()[0]
    store.reports.matched(report_id, study_uid, version)


def test_reports_are_outdated_by_a_newer_answer_of_their_study_only(tmp_path: Path) -> None:
    """A newer version answered outdates the latest report of each key matched to its study (the correction,
    not the report it corrects), and nothing else; the answers already looked at are not looked at again, and
    the reports are found through their index, not by reading every report."""
    store = Store(tmp_path / "state.db")
    with store.database.transaction() as db:
        for uid in ("1.2.3.1", "1.2.3.2"):
            insert_answer(db, Answer(uid, 1, "chest_xray", ("Pneumothorax",), "", "", 10.0))
    _matched_report(store, "R1", "ACC-1", "1.2.3.1", 1)
    _matched_report(store, "R2", "ACC-1", "1.2.3.1", 1, "C", at=30.0)  # the correction of R1
    _matched_report(store, "R3", "ACC-2", "1.2.3.2", 1)
    _report(store, "R4", "ACC-3", 40.0)  # waiting: no study of its own
    outdated, seen = store.reports.outdated(0)
    assert outdated == [] and seen == 2
    with store.database.transaction() as db:
        insert_answer(db, Answer("1.2.3.1", 2, "chest_xray", ("No Finding",), "", "", 50.0))
    outdated, seen = store.reports.outdated(2)
    assert [(o.stored.report.status, o.stored.received_at, o.study_uid, o.judged, o.latest) for o in outdated] == [
        ("C", 30.0, "1.2.3.1", 1, 2)]
    assert store.reports.outdated(seen) == ([], seen)
    assert [o.study_uid for o in store.reports.outdated(0)[0]] == ["1.2.3.1"]  # a start looks at every answer
    store.reports.matched(outdated[0].stored.id, "1.2.3.1", 2)
    assert store.reports.outdated(0) == ([], seen)
    with store.database.reading() as db:
        plan = " | ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + _OUTDATED, (2, 3)))
    assert "SCAN r " not in plan + " " and "USING INDEX reports_waiting" in plan, plan


def test_a_schema_9_database_keeps_the_version_its_reports_judged(tmp_path: Path) -> None:
    """A schema 9 database (reports without the version their verdict judged) opens at schema 10: a matched
    report gets its study's report verdict's version, one without a verdict 0 (judged again), a waiting report
    none; the rows schema 9 keyed stay keyed."""
    path = tmp_path / "state.db"
    store = Store(path)
    with store.database.transaction() as db:
        insert_answer(db, Answer("1.2.3.1", 2, "chest_xray", ("Pneumothorax",), "", "", 10.0))
    store.verdicts.record(Verdict("1.2.3.1", 2, "chest_xray", Source.REPORT, "ACC-1", "agree", 20.0))
    _matched_report(store, "R1", "ACC-1", "1.2.3.1", 2)
    _matched_report(store, "R2", "ACC-2", "1.2.3.9", 1)
    _report(store, "R3", "ACC-3", 30.0)
    store.close()
    connection = sqlite3.connect(path)
    connection.execute("ALTER TABLE reports DROP COLUMN version")
    connection.execute("PRAGMA user_version=9")
    connection.commit()
    connection.close()
    store = Store(path)
    with store.database.reading() as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
        assert db.execute("SELECT accession, version FROM reports ORDER BY id").fetchall() == [
            ("ACC-1", 2), ("ACC-2", 0), ("ACC-3", None)]
        assert db.execute("SELECT keyed FROM answers UNION ALL SELECT keyed FROM verdicts").fetchall() == [(1,), (1,)]
    assert store.verdicts.kept("1.2.3.1", Source.REPORT, "ACC-1").verdict == "agree"


def test_a_report_that_cannot_be_judged_again_holds_back_only_itself(tmp_path: Path, monkeypatch) -> None:
    """Settling judges every outdated report it can; one whose verdict cannot be recorded (the database) is
    logged by its error's type and judged at the next settling, the others are not held back."""
    from node.routing import DEFAULT_RULES, Router
    from node.verdicts.stage import ReportVerdicts

    store = Store(tmp_path / "state.db")
    with store.database.transaction() as db:
        for uid in ("1.2.3.1", "1.2.3.2"):
            insert_answer(db, Answer(uid, 1, "chest_xray", ("Pneumothorax",), "", "", 10.0))
            insert_answer(db, Answer(uid, 2, "chest_xray", ("No Finding",), "", "", 50.0))
    _matched_report(store, "R1", "ACC-1", "1.2.3.1", 1)
    _matched_report(store, "R2", "ACC-2", "1.2.3.2", 1, at=30.0)
    verdicts = ReportVerdicts(store, Router.from_file(DEFAULT_RULES).rules.domains)
    record = store.verdicts.record

    def failing_for_the_first_study(verdict: Verdict) -> None:
        if verdict.study_instance_uid == "1.2.3.1":
            raise sqlite3.OperationalError("database is locked")
        record(verdict)

    monkeypatch.setattr(store.verdicts, "record", failing_for_the_first_study)
    assert verdicts.settle() == 1
    assert [o.study_uid for o in store.reports.outdated(0)[0]] == ["1.2.3.1"]
    monkeypatch.setattr(store.verdicts, "record", record)
    assert verdicts.settle() == 1  # looked at again: the answers were not marked as seen
    assert store.reports.outdated(0)[0] == []
    with store.database.reading() as db:
        judged = db.execute("SELECT study_instance_uid, version FROM verdicts WHERE source = ? ORDER BY 1",
                            (Source.REPORT,)).fetchall()
    assert judged == [("1.2.3.1", 2), ("1.2.3.2", 2)]
