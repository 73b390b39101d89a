"""The clinical context's parts on their own: the trained text budget, the wording, the store's
matching, windows and merges, and retention of messages and retrieved priors."""

from __future__ import annotations

import time
from pathlib import Path

from node.context.gather import PatientContext, RelatedStudy
from node.context.text import context_text, interval
from node.ingest.hl7_inbound import interpret
from node.ingest.hl7v2 import parse, timestamp
from node.model.prompt import FORMAT_INSTRUCTION, IMAGE_MARKER, MIDDLE_CUT, TEXT_BUDGET, build_prompt, clip_middle
from node.ops.metrics import Metrics
from node.retention import Retention
from node.store import Store
from node.store.clinical import InboundMessage, KnownStudy, LabResult, Merge, Order, patient_key
from node.testing.synthetic_hl7 import order_message

HOUR = 3600.0


def test_context_is_clipped_in_its_middle_to_the_trained_budget_and_the_question_is_whole() -> None:
    question = "Above is a chest X-ray image of a patient. What is the diagnosis? Answer with one of:\nA\nB"
    context = "Clinical context:\n" + "".join(f"- lab {n}: value {n}\n" for n in range(600))
    prompt = build_prompt(question, 2, context)
    assert prompt.startswith(f"{IMAGE_MARKER}\n{IMAGE_MARKER}\nClinical context:\n- lab 0: value 0")
    assert prompt.endswith(f"{question} {FORMAT_INSTRUCTION}")
    text = prompt.removeprefix(f"{IMAGE_MARKER}\n" * 2).removesuffix(f" {FORMAT_INSTRUCTION}")
    assert len(text) == TEXT_BUDGET and MIDDLE_CUT in text and "- lab 599: value 599" in text
    # training's own form: head + " ... " + tail
    assert clip_middle("abcdefghij", 9) == "ab ... ij" and clip_middle("short", 9) == "short"
    assert build_prompt(question, 1) == build_prompt(question, 1, "")  # no context: the trained prompt as it was


def test_the_context_reads_as_clinical_language() -> None:
    at = 1_767_268_800.0  # 2026-01-01 12:00 UTC
    labs = (LabResult("k", "10839-9", "LN", "Troponin I", "0.9", "ng/mL", "0-0.04", "HH", at - 3 * HOUR),
            LabResult("k", "1988-5", "LN", "CRP", "4", "mg/L", "", "", at - 30 * 60))
    order = Order("k", "P", "F", "A", "XR CHEST", "dyspnoea\r\nsince\x0b2 days", "COPD", "S", None)
    prior = RelatedStudy("1.2", "DX", at - 400 * 86400 / 4, "CHEST AP", (), False, image_count=1)
    text = context_text(PatientContext(at, order, labs, (prior,)), 1, "CR", ecg_given=False)
    lines = text.split("\n")
    assert lines[0] == "Clinical context:"
    assert "Reason for exam: dyspnoea since 2 days." in lines  # control characters never reach the prompt
    assert "- Troponin I (LN 10839-9): 0.9 ng/mL, critically high, reference range 0-0.04; 3 hours before the " \
           "study." in lines
    assert "- CRP (LN 1988-5): 4 mg/L; 30 minutes before the study." in lines
    assert lines[-1].startswith('Image 2: a prior DX study "CHEST AP" of ') and lines[-1].endswith(
        "100 days before the current study.")
    assert interval(at + 60, at) == "1 minute after the study" and interval(None, at).startswith("at an unknown")


def test_hl7_timestamps_and_escapes() -> None:
    assert timestamp("20260101120000+0100") == 1_767_265_200.0
    assert timestamp("2026") is not None and timestamp("not a time") is None and timestamp("20261399") is None
    message = parse(order_message("C1", "P1", "ACC", r"pain \T\ fever \F\ cough\.br\worse"))
    [order] = interpret(message, "", time.time()).orders
    assert order.reason == "pain & fever | cough\nworse"


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_orders_match_by_accession_placer_or_filler_and_labs_by_code_within_the_window(tmp_path: Path) -> None:
    store, key, now = _store(tmp_path), patient_key("P1", "HOSP"), time.time()
    order = Order(key, "PLC-1", "FIL-1", "ACC-1", "XR", "cough", "", "R", None)
    labs = [LabResult(key, "10839-9", "LN", "Troponin I", value, "ng/mL", "", "", now - hours * HOUR)
            for value, hours in (("0.1", 30), ("0.5", 2), ("9.9", 60))]
    store.clinical.record_message(InboundMessage("M1", "ORM^O01", "RIS", key, orders=(order,)), "m1", now)
    store.clinical.record_message(InboundMessage("M2", "ORU^R01", "LIS", key, results=tuple(labs)), "m2", now)
    for numbers in (("ACC-1",), ("PLC-1",), ("other", "FIL-1")):
        assert store.clinical.order_for(key, numbers).reason == "cough"
    assert store.clinical.order_for(key, ("ACC-2",)) is None
    assert store.clinical.order_for(patient_key("P2", "HOSP"), ("ACC-1",)) is None  # another patient's order
    [latest] = store.clinical.lab_results(key, ("10839-9", "1988-5"), now - 48 * HOUR, now)
    assert latest.value == "0.5"  # the latest within 48 h; the 60 h old one is outside
    assert store.clinical.lab_results(key, ("10839-9",), now - 48 * HOUR, now - 40 * HOUR) == []
    store.close()


def test_merges_chain_to_the_last_surviving_patient(tmp_path: Path) -> None:
    store, now = _store(tmp_path), time.time()
    a, b, c = (patient_key(p, "HOSP") for p in "ABC")
    lab = LabResult(a, "1988-5", "LN", "CRP", "9", "mg/L", "", "", now)
    store.clinical.record_message(InboundMessage("1", "ORU^R01", "LIS", a, results=(lab,)), "1", now)
    store.clinical.record_message(InboundMessage("2", "ADT^A40", "EHR", b, merges=(Merge(b, a),)), "2", now)
    store.clinical.record_message(InboundMessage("3", "ADT^A40", "EHR", c, merges=(Merge(c, b),)), "3", now)
    assert store.clinical.resolve(a) == c and store.clinical.resolve(b) == c
    assert [x.value for x in store.clinical.lab_results(c, ("1988-5",), now - 1, now + 1)] == ["9"]
    store.close()


def test_retention_deletes_old_messages_with_their_orders_and_unused_priors(tmp_path: Path) -> None:
    store, root, now = _store(tmp_path), tmp_path, time.time()
    key = patient_key("P1")
    old_file, new_file = root / "hl7" / "old.hl7", root / "hl7" / "new.hl7"
    old_file.parent.mkdir()
    old_file.write_text("x")
    new_file.write_text("y")
    order = Order(key, "", "", "ACC-OLD", "", "old reason", "", "", None)
    store.clinical.record_message(InboundMessage("O", "ORM^O01", "RIS", key, orders=(order,)), "hl7/old.hl7",
                                  now - 20 * 86400)
    store.clinical.record_message(InboundMessage("N", "ORM^O01", "RIS", key, orders=(
        Order(key, "", "", "ACC-NEW", "", "new reason", "", "", None),)), "hl7/new.hl7", now)
    prior_dir = root / "context" / "1.2.3"
    prior_dir.mkdir(parents=True)
    (prior_dir / "00000.dcm").write_bytes(b"x")
    store.clinical.know_study(KnownStudy("1.2.3", key, "", "CR", now - 300 * 86400, "", "context/1.2.3"),
                              now - 20 * 86400)
    metrics = Metrics()
    Retention(store, None, root / "results", metrics, retention_days=14).run_once(now)  # type: ignore[arg-type]
    assert store.clinical.order_for(key, ("ACC-OLD",)) is None and not old_file.exists()
    assert store.clinical.order_for(key, ("ACC-NEW",)) is not None and new_file.exists()
    assert not prior_dir.exists() and not store.clinical.studies_of(key)
    store.close()
