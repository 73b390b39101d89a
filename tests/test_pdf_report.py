"""The AI report as a DICOM Encapsulated PDF (issue 24 item 1): written with the other results of a read, valid
(dciodvfy), its text readable by another program (poppler's pdftotext: the full reasoning, the question, the
context given, the provenance), its key image pictured with the box, untrusted model text shown as text,
reproducible, and off when ``results.pdf_report`` is."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import time_machine
from PIL import Image

from node.chain import prepare_study
from node.config import load_config
from node.context.gather import PatientContext, RelatedStudy
from node.imaging.prepared import Prepared
from node.model.profiles import PROFILES
from node.reading import Read, read_from_text
from node.results import pdf_report
from node.results.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE
from node.results.provenance import RESEARCH_LABEL
from node.results.writer import ResultSet, write_results
from node.routing import DEFAULT_RULES, Router
from node.store.clinical import LabResult, Order
from node.testing.synthetic import write_cr_study
from tests.reference import answer, lesion_model_box

MODEL = "replay (recorded responses; TEST)"
#: Long enough to run onto a second page; markup of every kind a PDF library might read, and scripts.
REASONING = " ".join(
    f"Step {n}: the right upper lobe shows a dense round opacity, <b>not</b> **bold** {{\\bf x}} {{nb}} & <i>ok</i> "
    f"(Ångström, Привет, Δ 5 mm)." for n in range(1, 120))
STUDY_TIME = datetime(2026, 1, 1, 9, 0, tzinfo=UTC).timestamp()


def _pdftotext(path: Path) -> str:
    """The PDF's text as poppler reads it, white space collapsed, without the page breaks' footer and header
    (the page number, the research-use label) between the lines of a text that runs on."""
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is not installed: apt-get install poppler-utils")
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return re.sub(r" AI report - page \d+ AI RESULT - RESEARCH USE ONLY \(TEST MODEL\) - NOT FOR DIAGNOSIS", "",
                  " ".join(text.split()))


def _document(report: Path, out: Path) -> Path:
    """The PDF the DICOM object holds, as a file."""
    ds = pydicom.dcmread(report)
    out.write_bytes(ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength])
    return out


def _read(tmp_path: Path, text: str | None = None) -> Read:
    """A chest CR read with an order, two labs and a prior as its context, the model boxing its lesion."""
    cr = write_cr_study(tmp_path / "cr", size=512)
    prepared = prepare_study(cr.study_uid, list(cr.files), Router.from_file(DEFAULT_RULES),
                             load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(prepared, Prepared), prepared
    labs = (LabResult("p", "6690-2", "LN", "Leukocytes", "14.2", "10*9/L", "4.0-11.0", "H", STUDY_TIME - 3 * 3600),
            LabResult("p", "1988-5", "LN", "CRP", "87", "mg/L", "", "HH", STUDY_TIME - 26 * 3600))
    order = Order("p", "PL1", "FL1", "ACC1", "Chest X-ray", "Fever and cough, rule out pneumonia", "", "R", None)
    prior = RelatedStudy("1.2.3.4", "CR", STUDY_TIME - 30 * 86400, "CHEST PA", (), False, 1)
    prepared = replace(prepared, context=PatientContext(STUDY_TIME, order, labs, (prior,)))
    [image] = prepared.inputs
    source = pydicom.dcmread(image.path)
    return read_from_text(prepared, text or answer("Pneumonia", lesion_model_box(source), reasoning=REASONING),
                          MODEL, True)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultSet, Path]:
    """A read's results with the report, and the report's PDF as a file."""
    root = tmp_path_factory.mktemp("pdf")
    results = write_results(_read(root), root / "out", {}, secondary_capture=True)
    [report] = [item.path for item in results.dicom if item.path.name == "report.dcm"]
    return results, _document(report, root / "report.pdf")


def test_the_report_is_a_valid_encapsulated_pdf_in_the_study(written, dciodvfy_errors) -> None:
    results, _ = written
    [report] = [item.path for item in results.dicom if item.path.name == "report.dcm"]
    assert dciodvfy_errors(report) == []
    ds = pydicom.dcmread(report)
    sr = pydicom.dcmread(next(item.path for item in results.dicom if item.path.name == "sr.dcm"))
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE and ds.Modality == "DOC"
    assert ds.StudyInstanceUID == sr.StudyInstanceUID and ds.PatientID == sr.PatientID
    assert ds.SeriesInstanceUID not in {pydicom.dcmread(item.path).SeriesInstanceUID for item in results.dicom
                                        if item.path != report}
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf" and ds.BurnedInAnnotation == "YES"
    document = ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength]  # the value padded to an even length
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    assert (ds.ConceptNameCodeSequence[0].CodeValue, ds.ConceptNameCodeSequence[0].CodingSchemeDesignator) == (
        "18748-4", "LN")
    assert RESEARCH_LABEL in ds.DocumentTitle and RESEARCH_LABEL in ds.SeriesDescription
    assert ds.ContributingEquipmentSequence[0].ManufacturerModelName == MODEL
    assert [item.ReferencedSOPInstanceUID for item in ds.SourceInstanceSequence] == [
        str(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)]


def test_pdftotext_reads_the_full_reasoning_and_what_the_model_was_given(written) -> None:
    _, pdf = written
    text = _pdftotext(pdf)
    assert " ".join(REASONING.split()) in text  # wrapped over pages, every word, the markup as written
    assert "What is the diagnosis of the patient in the X-ray image?" in text  # the task's question
    assert re.search(r"Answer Pneumonia", text)
    assert "Reason for exam: Fever and cough, rule out pneumonia." in text
    assert "Leukocytes (LN 6690-2): 14.2 10*9/L, high, reference range 4.0-11.0; 3 hours before the study" in text
    assert "CRP (LN 1988-5): 87 mg/L, critically high; 26 hours before the study" in text
    assert "a prior CR study \"CHEST PA\" of 2025-12-02, 30 days before the current study" in text
    assert "prior CR study 1.2.3.4 of 2025-12-02 (1 image)" in text
    assert RESEARCH_LABEL in text and f"Model: {MODEL}" in text and "Node: qoq-node" in text
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", pages).group(1)) >= 3  # type: ignore[union-attr]  # pdfinfo prints it


def test_the_key_image_is_pictured_with_its_box(written, tmp_path: Path) -> None:
    _, pdf = written
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    last = sorted(tmp_path.glob("page-*.png"))[-1]  # the key images follow the text
    pixels = np.asarray(Image.open(last).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    grey = (np.abs(pixels[..., 0] - pixels[..., 2]) < 8) & (pixels[..., 0] > 60) & (pixels[..., 0] < 200)
    assert red.sum() > 50, "no box drawn on the pictured key image"
    assert grey.sum() > 5000, "no image pictured"


def test_the_report_is_reproducible_and_named_by_the_read(tmp_path: Path) -> None:
    read = _read(tmp_path, "<think>Consolidation, right upper lobe.</think>\\boxed{Pneumonia}")
    created = datetime(2026, 2, 3, 4, 5, 6)
    with time_machine.travel(datetime(2030, 1, 1, tzinfo=UTC), tick=False):  # a clock read anywhere would show
        first = write_results(read, tmp_path / "a", {}, created=created)
    with time_machine.travel(datetime(2031, 6, 7, 8, 9, 10, tzinfo=UTC), tick=False):  # in the bytes
        second = write_results(read, tmp_path / "b", {}, created=created)
    [a] = [item for item in first.dicom if item.path.name == "report.dcm"]
    [b] = [item for item in second.dicom if item.path.name == "report.dcm"]
    assert a.sop_instance_uid == b.sop_instance_uid and a.path.read_bytes() == b.path.read_bytes()
    later = write_results(read, tmp_path / "c", {}, created=created, study_version=2)
    assert next(item for item in later.dicom if item.path.name == "report.dcm").sop_instance_uid != a.sop_instance_uid


def test_a_character_the_font_lacks_and_control_characters_do_not_break_the_report(tmp_path: Path) -> None:
    text = "<think>CJK 肺炎 here; bell\x07 null\x00 lone \ud83d end; </think>\\boxed{Pneumonia}"
    results = write_results(_read(tmp_path, text), tmp_path / "out", {})
    assert results.omitted == ()
    pdf = _document(tmp_path / "out" / "report.dcm", tmp_path / "report.pdf")
    assert "here; bell null lone end;" in _pdftotext(pdf)


def test_the_setting_turns_the_report_off_and_leaves_the_sc(tmp_path: Path) -> None:
    results = write_results(_read(tmp_path, "<think>r</think>\\boxed{Pneumonia}"), tmp_path / "out", {},
                            secondary_capture=True, pdf_report=False)
    names = {item.path.name for item in results.dicom}
    assert "report.dcm" not in names and "sc-1.dcm" in names
    assert load_config(None, environ={}).results.pdf_report is True
    assert load_config(None, environ={"QOQ_NODE__RESULTS__PDF_REPORT": "false"}).results.pdf_report is False


def test_without_its_font_the_report_is_left_out_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_report, "FONT_PATHS", (tmp_path / "missing.ttf",))
    results = write_results(_read(tmp_path), tmp_path / "out", {})
    assert [(kind, type(error)) for kind, error in results.omitted] == [("pdf", pdf_report.NoReportFont)]
    assert "fonts-dejavu-core" in str(results.omitted[0][1])
    assert {"sr.dcm", "kos.dcm"} <= {item.path.name for item in results.dicom}
