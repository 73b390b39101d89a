"""Routing on what studies carry, the shipped rules asking each task only of its training population, and
``qoq-node routing explain`` (issue 23, items 1–3)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset

from node.ingest.hl7_inbound import interpret
from node.ingest.hl7v2 import parse
from node.routing import DEFAULT_RULES, Routed, Router, Skipped, StudyHeader, route
from node.routing.orders import OrderFinder
from node.store import InstanceRecord, Store
from node.store.clinical import patient_key
from node.testing.synthetic import restamp, write_cr_study, write_ct_study
from node.testing.synthetic_hl7 import order_message
from tests.helpers import PYDICOM_TEST_FILES

REPO = Path(__file__).resolve().parents[1]
ROUTER = Router.from_file(DEFAULT_RULES)


def _ct(tmp_path: Path, **attributes: str) -> list[Path]:
    """A one-slice synthetic CT study with these header values (others as written: no contrast agent)."""
    return list(restamp(write_ct_study(tmp_path / "ct", slices=1, size=32), **attributes).files)


def _with_procedures(tmp_path: Path, procedures: dict[str, str]) -> Router:
    """The shipped rules with a hospital's ``procedures`` table."""
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump({**rules, "procedures": procedures}), encoding="utf-8")
    return Router.from_file(path)


def test_a_cta_chest_pe_protocol_without_body_part_goes_to_the_pe_task(tmp_path: Path) -> None:
    files = _ct(tmp_path, BodyPartExamined="", StudyDescription="CTA CHEST PE PROTOCOL")
    routed = route("1.2.3", files, ROUTER)
    assert isinstance(routed, Routed) and routed.task.name == "ct_chest"
    explanation = ROUTER.explain(StudyHeader.read(files[0]))
    assert explanation.chosen_by == "rule 4"  # the description rule: the header names no body part


def test_a_non_contrast_chest_ct_is_not_asked_the_pe_question(tmp_path: Path) -> None:
    files = _ct(tmp_path, BodyPartExamined="CHEST", StudyDescription="CT CHEST WITHOUT CONTRAST AARDVARK")
    skipped = route("1.2.3", files, ROUTER)
    assert isinstance(skipped, Skipped) and skipped.stage == "routing"
    assert "nearest: task 'ct_chest'" in skipped.reason and "description does not match" in skipped.reason
    assert "AARDVARK" not in skipped.reason  # a description may hold patient data: never in the reason
    # a chest CT whose description does name a PE protocol, but with no contrast: still not asked
    files = _ct(tmp_path / "2", BodyPartExamined="CHEST", StudyDescription="CT CHEST PE NON-CONTRAST")
    skipped = route("1.2.4", files, ROUTER)
    assert isinstance(skipped, Skipped)
    assert "nearest: task 'ct_chest'" in skipped.reason and "no contrast given" in skipped.reason


def test_an_abdomen_ct_without_a_renal_mass_procedure_is_not_asked_the_kidney_question(tmp_path: Path) -> None:
    files = _ct(tmp_path, BodyPartExamined="ABDOMEN", StudyDescription="CT ABDOMEN PELVIS",
                ContrastBolusAgent="IOHEXOL")
    skipped = route("1.2.3", files, ROUTER)
    assert isinstance(skipped, Skipped)
    assert "nearest: task 'ct_kidney'" in skipped.reason and "description does not match" in skipped.reason
    kidney = _ct(tmp_path / "2", BodyPartExamined="ABDOMEN", StudyDescription="CT RENAL MASS PROTOCOL",
                 ContrastBolusAgent="IOHEXOL")
    routed = route("1.2.4", kidney, ROUTER)
    assert isinstance(routed, Routed) and routed.task.name == "ct_kidney"


def test_a_code_in_procedures_routes_by_code_alone(tmp_path: Path) -> None:
    files = _ct(tmp_path, BodyPartExamined="", StudyDescription="", SeriesDescription="")
    assert isinstance(route("1.2.3", files, ROUTER), Skipped)
    ds = pydicom.dcmread(files[0])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTPE7", "99HOSP", "Lungs special"
    ds.RequestedProcedureCodeSequence = [code]
    ds.save_as(files[0], enforce_file_format=True)
    router = _with_procedures(tmp_path, {"99HOSP:CTPE7": "ct_chest"})
    routed = route("1.2.3", files, router)
    assert isinstance(routed, Routed) and routed.task.name == "ct_chest"
    assert router.explain(StudyHeader.read(files[0])).chosen_by == "procedure code 99HOSP:CTPE7 (procedures table)"
    assert isinstance(route("1.2.3", files, _with_procedures(tmp_path, {"OTHER:CTPE7": "ct_chest"})), Skipped)
    assert isinstance(route("1.2.3", files, _with_procedures(tmp_path, {"ctpe7": "ct_chest"})), Routed)  # any scheme


def test_the_hl7_orders_obr4_routes_a_study_whose_header_carries_no_code(tmp_path: Path) -> None:
    files = _ct(tmp_path, BodyPartExamined="", StudyDescription="", SeriesDescription="", AccessionNumber="ACC7")
    router = _with_procedures(tmp_path, {"L:HOSP-PE-7": "ct_chest"})
    store = Store(tmp_path / "state.db")
    try:
        routed_by = router.with_orders(OrderFinder(store.clinical, "HOSP"))
        assert isinstance(route("1.2.3", files, routed_by), Skipped)  # no order yet
        text = order_message("C1", "SYN-0001", "ACC7", "dyspnoea", procedure="SPECIAL PROTOCOL SEVEN",
                             procedure_code="HOSP-PE-7")
        now = time.time()
        assert store.clinical.record_message(interpret(parse(text), "HOSP", now), "c1.hl7", now)
        routed = route("1.2.3", files, routed_by)
        assert isinstance(routed, Routed) and routed.task.name == "ct_chest"
        assert isinstance(route("1.2.3", files, router), Skipped)  # the same rules without the node's orders
    finally:
        store.close()


@pytest.mark.parametrize(
    ("attributes", "routed"),
    [
        ({}, True),  # the synthetic PA chest radiograph of an adult (born 1970, seen 2026)
        ({"ViewPosition": "LL"}, False),
        ({"PatientBirthDate": "20200101"}, False),
        ({"PatientAge": "017Y"}, False),
        ({"PatientBirthDate": ""}, False),  # an unknown age is not an adult's
        ({"PatientBirthDate": "1923-04-05"}, True),  # a date with separators (pre-3.0 style) is still read
    ],
)
def test_chest_radiographs_of_adults_in_frontal_views_only(tmp_path: Path, attributes: dict[str, str],
                                                           routed: bool) -> None:
    files = list(restamp(write_cr_study(tmp_path / "cr", size=64), **attributes).files)
    assert isinstance(route("1.2.3", files, ROUTER), Routed) is routed


def test_a_frontal_view_after_a_lateral_one_routes_the_study(tmp_path: Path) -> None:
    """The study is routed by its first image that a rule takes: a lateral view that arrived first does
    not keep its PA view from being read; a lateral view alone is skipped."""
    lateral = list(restamp(write_cr_study(tmp_path / "lateral", size=64), ViewPosition="LL").files)
    frontal = list(restamp(write_cr_study(tmp_path / "frontal", size=64),
                           StudyInstanceUID=pydicom.dcmread(lateral[0]).StudyInstanceUID).files)
    routed = route("1.2.3", [*lateral, *frontal], ROUTER)
    assert isinstance(routed, Routed) and routed.task.name == "chest_xray"
    skipped = route("1.2.3", lateral, ROUTER)
    assert isinstance(skipped, Skipped) and "view_position 'LL' is not one of PA, AP" in skipped.reason


def test_not_excludes_and_anatomic_region_codes_route(tmp_path: Path) -> None:
    head = StudyHeader("CT", "", "", "", study_description="CT HEAD NECK")
    assert isinstance(ROUTER.route(head), str) and "excluded by 'not'" in ROUTER.explain(head).misses[0].failed
    region = StudyHeader("MR", "", "", "", anatomic_regions=("SCT:12738006",))
    assert not isinstance(ROUTER.route(region), str) and ROUTER.route(region).name == "mri"  # type: ignore[union-attr]


def test_routing_explain_on_pydicoms_corpus_names_each_skipped_studys_nearest_rule() -> None:
    result = subprocess.run([sys.executable, "-m", "node", "routing", "explain", str(PYDICOM_TEST_FILES)],
                            capture_output=True, text=True, cwd=REPO, timeout=240,
                            env={**os.environ, "QOQ_NODE__LOG__LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n\n")
    assert len(blocks) > 20 and all(block.startswith("study ") for block in blocks)
    skipped = [block for block in blocks if "\n  skipped: " in block]
    read = [block for block in blocks if "\n  task " in block]
    assert skipped and read and len(skipped) + len(read) == len(blocks)
    for block in skipped:
        assert re.search(r"\n  skipped: no routing rule matches .*; nearest: task '\w+' \(rule \d+\): .+", block), block
        assert "question: none" in block
    for block in read:  # the exact question with the format instruction, and the context policy
        assert re.search(r"\n  task \w+ \(domain \w+\), by rule \d+ \(", block), block
        assert "\\boxed{}" in block and "\n  context: " in block


def test_routing_explain_of_a_study_the_node_holds_routes_on_its_order(tmp_path: Path) -> None:
    """``--study UID``: the study's stored files, with the HL7 order the node holds for it."""
    root = tmp_path / "var"
    files = _ct(root / "spool", BodyPartExamined="", StudyDescription="", SeriesDescription="",
                AccessionNumber="ACC7")
    ds = pydicom.dcmread(files[0])
    store = Store(root / "state.db")
    try:
        store.instances.record([InstanceRecord(str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                                               str(ds.SeriesInstanceUID), str(ds.SOPClassUID), "1.2.840.10008.1.2.1",
                                               "CT", str(files[0].relative_to(root)), 1, "PACS", 1.0)])
        text = order_message("C1", "SYN-0001", "ACC7", "dyspnoea", procedure="SPECIAL PROTOCOL SEVEN",
                             procedure_code="HOSP-PE-7")
        store.clinical.record_message(interpret(parse(text), "", 1.0), "c1.hl7", 1.0)
    finally:
        store.close()
    rules = _with_procedures(tmp_path, {"L:HOSP-PE-7": "ct_chest"})
    assert rules.rules.procedures
    result = subprocess.run([sys.executable, "-m", "node", "routing", "explain", "--study", str(ds.StudyInstanceUID)],
                            capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "QOQ_NODE__STORAGE__ROOT": str(root),
                                 "QOQ_NODE__CONTEXT__DEFAULT_AUTHORITY": "HOSP",
                                 "QOQ_NODE__ROUTING__RULES": str(tmp_path / "routing.yaml")})
    assert result.returncode == 0, result.stderr
    assert "task ct_chest (domain ct), by procedure code L:HOSP-PE-7 (procedures table)" in result.stdout
    assert "requested procedure: SPECIAL PROTOCOL SEVEN" in result.stdout  # the operator sees what was ordered


def test_routing_explain_takes_files_or_a_study() -> None:
    result = subprocess.run([sys.executable, "-m", "node", "routing", "explain"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and "FILES or --study" in result.stderr


def test_a_schema_4_database_gains_the_orders_procedure_codes(tmp_path: Path) -> None:
    """Orders kept by an older node have no codes: the column is added, and they are read with none."""
    store = Store(tmp_path / "state.db")
    text = order_message("C1", "SYN-0001", "ACC7", "dyspnoea", procedure_code="HOSP-PE-7")
    store.clinical.record_message(interpret(parse(text), "HOSP", 1.0), "c1.hl7", 1.0)
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("ALTER TABLE orders DROP COLUMN procedure_codes")
        db.execute("PRAGMA user_version=4")
    store = Store(tmp_path / "state.db")
    try:
        [order] = store.clinical.orders_of(patient_key("SYN-0001", "HOSP"))
        assert order.procedure == "XR CHEST PA" and order.procedure_codes == ()
    finally:
        store.close()
