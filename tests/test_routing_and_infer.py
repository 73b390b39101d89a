"""Routing rules, and ``qoq-node infer`` end to end with replay and with the tiny model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.chain import prepare_study
from node.config import load_config
from node.context.gather import StudyIdentity
from node.imaging.decode import ImagingError
from node.imaging.inputs import ECG_AS_IMAGE_CAVEAT, NO_ECG_INPUT
from node.imaging.prepared import Prepared
from node.ingest.part10 import file_meta
from node.model.profiles import PROFILES
from node.routing import DEFAULT_RULES, DOMAINS, Router, RoutingError, Skipped, StudyHeader
from node.testing.synthetic import restamp, write_cr_study, write_ct_study, write_ecg_study, write_file
from tests.helpers import PYDICOM_TEST_FILES, sr_texts
from tests.reference import model_box

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RULES = DEFAULT_RULES


@pytest.mark.parametrize(
    ("header", "domain", "task"),
    [
        (StudyHeader("DX", "CHEST", "", "", view_position="PA", age_years=40), "chest_xray", "chest_xray"),
        (StudyHeader("CR", "", "", "Chest PA", view_position="AP", age_years=70), "chest_xray", "chest_xray"),
        (StudyHeader("ct", "HEAD", "", ""), "ct", "ct_head"),
        (StudyHeader("CT", "CHEST", "", "", study_description="CTA CHEST"), "ct", "ct_chest"),
        (StudyHeader("CT", "", "", "CTPA"), "ct", "ct_chest"),
        (StudyHeader("CT", "ABDOMEN", "", "", study_description="CT renal mass protocol", contrast_agent=True), "ct",
         "ct_kidney"),
        (StudyHeader("MR", "BRAIN", "", ""), "mri", "mri"),
        (StudyHeader("US", "BREAST", "", ""), "ultrasound", "ultrasound"),
        (StudyHeader("MG", "BREAST", "", "", view_position="MLO"), "mammography", "mammography"),
        (StudyHeader("XC", "SKIN", "", ""), "dermatology", "dermatology"),
        (StudyHeader("OP", "", "", ""), "fundus", "fundus"),
        (StudyHeader("SM", "", "", ""), "pathology", "pathology"),
        (StudyHeader("ECG", "", "", ""), "ecg", "ecg"),
    ],
)
def test_shipped_rules_route_each_domain(header: StudyHeader, domain: str, task: str) -> None:
    routed = Router.from_file(SHIPPED_RULES).route(header)
    assert not isinstance(routed, str) and (routed.domain, routed.name) == (domain, task)


@pytest.mark.parametrize("header", [StudyHeader("MR", "KNEE", "", ""), StudyHeader("US", "ABDOMEN", "", "")])
def test_studies_no_training_question_fits_are_not_routed(header: StudyHeader) -> None:
    """The model was trained on brain MRI and breast ultrasound questions only: a knee MRI is not asked them."""
    assert isinstance(Router.from_file(SHIPPED_RULES).route(header), str)


def test_shipped_rules_cover_all_nine_domains_and_name_their_source() -> None:
    tasks = Router.from_file(SHIPPED_RULES).rules.domains
    assert {spec.domain or name for name, spec in tasks.items()} == set(DOMAINS)
    assert all(spec.source and spec.labels and spec.population for spec in tasks.values())


def test_unmatched_study_gets_a_reason() -> None:
    reason = Router.from_file(SHIPPED_RULES).route(StudyHeader("DX", "KNEE", "", "Knee AP"))
    assert isinstance(reason, str) and "modality 'DX'" in reason and "KNEE" in reason


def test_calling_ae_condition(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("domains: {ct: {question: q}}\nrules:\n  - match: {modality: [CT], calling_ae: [ER_PACS]}\n"
                     "    domain: ct\n")
    router = Router.from_file(rules)
    assert not isinstance(router.route(StudyHeader("CT", "", "", "", "ER_PACS")), str)
    assert isinstance(router.route(StudyHeader("CT", "", "", "", "OTHER")), str)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("domains: {ct: {question: q}}\nrules: [{match: {modality: [CT]}, domain: mri}]", "not defined"),
        ("domains: {knee: {question: q}}\nrules: [{match: {}, domain: knee}]", "unknown domains"),
        ("domains: {ct: {question: q}}\nrules: [{match: {series_description: '('}, domain: ct}]", "series_description"),
        ("domains: {ct: {question: q, colour: red}}\nrules: [{match: {}, domain: ct}]", "colour"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_bad_rules_are_reported(tmp_path: Path, text: str, message: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    with pytest.raises(RoutingError, match=message):
        Router.from_file(rules)


def _infer(
    tmp_path: Path, env: dict[str, str], *paths: Path, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node", "infer", "--config", str(REPO / "conf" / "node.yaml"), "--json", *options,
         *map(str, paths)],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "QOQ_NODE__LOG__LEVEL": "WARNING", **env},
    )


def test_infer_with_replay_puts_the_box_on_the_lesion(tmp_path: Path, dciodvfy_errors) -> None:
    study = write_ct_study(tmp_path / "ct", slices=1, size=256)
    ds = pydicom.dcmread(study.files[0])
    hu = ds.pixel_array.astype(np.float32) - 1024
    rows, columns = np.nonzero(hu > 200)
    lesion = (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))
    x1, y1, x2, y2 = model_box(lesion, 256, 256)
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"ct": f'<think>dense</think>```json\n[{{"bbox_2d": [{x1:.0f}, {y1:.0f}, '
                                           f'{x2:.0f}, {y2:.0f}], "label": "mass"}}]\n```\\boxed{{Mass}}'}))
    (tmp_path / "notes.txt").write_text("not dicom")
    result = _infer(tmp_path, {"QOQ_NODE__ENGINE__BACKEND": "replay",
                               "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(responses),
                               "QOQ_NODE__RESULTS__SECONDARY_CAPTURE": "true"},
                    study.files[0], tmp_path / "notes.txt", options=("--out", str(tmp_path / "out")))
    assert result.returncode == 0, result.stderr
    assert "notes.txt: not a readable DICOM instance" in result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome["domain"] == "ct" and outcome["labels"] == ["Mass"] and outcome["test_result"] is True
    [made] = outcome["inputs"]
    assert made["kind"] == "image" and made["pre_resize"] == {"method": "nearest", "pixels": [256, 256]}
    assert made["processor_grid"] == {"pixels": [252, 252]} and made["source_pixels"] == [256, 256]
    assert made["sop_instance_uid"] == ds.SOPInstanceUID
    [box] = outcome["boxes"]
    source = box["source"]
    got = (source["column_min"], source["row_min"], source["column_max"], source["row_max"])
    assert all(abs(g - w) <= 1 for g, w in zip(got, lesion, strict=True))
    assert box["model"]["x1"] == round(x1)
    # --out: the GSPS (valid, with the box on the lesion) and the ORU^R01 (strictly valid)
    gsps_path = tmp_path / "out" / ds.StudyInstanceUID / "gsps.dcm"
    assert dciodvfy_errors(gsps_path) == []
    gsps = pydicom.dcmread(gsps_path)
    polyline = [obj for ann in gsps.GraphicAnnotationSequence for obj in ann.get("GraphicObjectSequence", [])]
    [points] = [obj.GraphicData for obj in polyline]
    assert abs(points[0] - lesion[0]) <= 1 and abs(points[1] - lesion[1]) <= 1
    oru = (tmp_path / "out" / ds.StudyInstanceUID / "oru.hl7").read_bytes().decode()  # keep the \r separators
    assert parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert "4147007^Mass^SCT" in oru  # the SR's SNOMED CT code for the answer
    assert sorted(p.name for p in (tmp_path / "out" / ds.StudyInstanceUID).iterdir()) == [
        "gsps.dcm", "kos.dcm", "oru.hl7", "report.dcm", "sc-1.dcm", "seg-1.dcm", "sr.dcm"]
    sr = pydicom.dcmread(tmp_path / "out" / ds.StudyInstanceUID / "sr.dcm")
    assert sr.SOPInstanceUID in oru  # the ORU names the SR it summarises
    assert dciodvfy_errors(tmp_path / "out" / ds.StudyInstanceUID / "sr.dcm") == []


def test_infer_lists_every_input_with_its_kind_and_shape(tmp_path: Path, tiny_family_dir) -> None:
    """Omni gets the CT's slice as an image and the ECG as its signal; --json says so, with both resize steps."""
    ct = write_ct_study(tmp_path / "ct", slices=3, size=600)
    ecg = write_ecg_study(tmp_path / "ecg", rate_hz=1000.0)
    result = _infer(tmp_path, {"QOQ_NODE__ENGINE__MODEL": str(tiny_family_dir("omni")),
                               "QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "8"}, tmp_path / "ct", tmp_path / "ecg")
    assert result.returncode == 0, result.stderr
    outcomes = {o["study_uid"]: o for o in json.loads(result.stdout)}
    read = outcomes[ct.study_uid]
    assert read["task"] == "ct_chest" and "TEST MODEL" in read["model"] and " omni " in read["model"]
    [image] = read["inputs"]  # the PE training set's single slice, in its CTPA window
    assert image["kind"] == "image" and image["window"] == [80.0, 700.0]
    assert image["source_pixels"] == [600, 600] and image["pre_resize"]["pixels"] == [600, 600]
    assert image["processor_grid"]["pixels"] == [588, 588]
    [signal] = outcomes[ecg.study_uid]["inputs"]
    assert signal == {"kind": "time-series", "sop_instance_uid": signal["sop_instance_uid"], "leads": 8,
                      "samples": 2500, "shape": "8 leads × 2500 samples @ 500 Hz (from 1000 Hz, 10000 samples)"}


def test_an_ecg_is_skipped_for_a_vl_model_unless_its_plot_is_asked_for(tmp_path: Path, tiny_dir: Path,
                                                                       dciodvfy_errors) -> None:
    ecg = write_ecg_study(tmp_path / "ecg")
    env = {"QOQ_NODE__ENGINE__MODEL": str(tiny_dir), "QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "8"}
    [skipped] = json.loads(_infer(tmp_path, env, *ecg.files).stdout)
    assert skipped["skipped"] == NO_ECG_INPUT and skipped["inputs"] == []
    result = _infer(tmp_path, {**env, "QOQ_NODE__IMAGING__ECG_AS_IMAGE": "true"}, *ecg.files,
                    options=("--out", str(tmp_path / "out")))
    [plotted] = json.loads(result.stdout)
    assert plotted["skipped"] is None and plotted["caveats"] == [ECG_AS_IMAGE_CAVEAT]
    assert plotted["inputs"][0]["kind"] == "image" and plotted["inputs"][0]["source_pixels"] == [1000, 480]
    out = tmp_path / "out" / ecg.study_uid
    assert sorted(p.name for p in out.iterdir()) == ["oru.hl7", "report.dcm", "sr.dcm"]  # no SEG or PR on a waveform
    assert ECG_AS_IMAGE_CAVEAT in (out / "oru.hl7").read_text()
    sr = pydicom.dcmread(out / "sr.dcm")
    assert any(ECG_AS_IMAGE_CAVEAT in text for text in sr_texts(sr))
    assert dciodvfy_errors(out / "sr.dcm") == []


def test_infer_without_a_model_says_what_to_do(tmp_path: Path) -> None:
    ct = write_ct_study(tmp_path / "ct", slices=1, size=32)
    result = _infer(tmp_path, {}, ct.files[0])
    assert result.returncode == 1
    assert "qoq-node model tiny" in result.stderr


def test_a_report_that_arrives_first_does_not_decide_the_task(tmp_path: Path) -> None:
    """A dose report (an SR) received before the CT's slices: the study is routed by its images."""
    study = write_ct_study(tmp_path / "ct", slices=3, size=64)
    config = load_config(None, environ={})
    rules = Router.from_file(SHIPPED_RULES)
    files = [PYDICOM_TEST_FILES / "test-SR.dcm", *study.files]
    outcome = prepare_study(study.study_uid, files, rules, config.imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(outcome, Prepared) and outcome.task.domain == "ct", outcome
    alone = prepare_study(study.study_uid, files[:1], rules, config.imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(alone, Skipped) and "modality 'SR'" in alone.reason  # a report alone is still no task


def test_a_corrupt_image_costs_that_image_not_the_study(tmp_path: Path) -> None:
    """Two radiographs of one study, one with its pixel data cut short: the other is read, and every
    result will say that one image was not (issue 17: one corrupt slice among six failed the study)."""
    good = write_cr_study(tmp_path / "good", size=256)
    broken = restamp(write_cr_study(tmp_path / "broken", size=256),
                     StudyInstanceUID=good.study_uid, SeriesInstanceUID=good.series_uids[0], InstanceNumber="2")
    ds = pydicom.dcmread(broken.files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    write_file(ds, broken.files[0])
    rules = Router.from_file(SHIPPED_RULES)
    outcome = prepare_study(good.study_uid, [*good.files, *broken.files], rules, load_config(None, environ={}).imaging,
                      PROFILES["qwen2.5-vl"])
    assert isinstance(outcome, Prepared) and len(outcome.inputs) == 1
    assert outcome.inputs[0].path == good.files[0]
    assert outcome.caveats == ("1 key image(s) could not be decoded and were not read",)
    with pytest.raises(ImagingError, match=r"^cannot decode any of the 1 key image\(s\)") as failed:
        prepare_study(good.study_uid, list(broken.files), rules, load_config(None, environ={}).imaging,
                      PROFILES["qwen2.5-vl"])
    assert failed.value.permanent  # the data is at fault: failed at once, never retried


def test_attributes_a_sender_wrote_after_the_pixel_data_are_read(tmp_path: Path) -> None:
    """Modality and Study Instance UID written after the pixel data (out of order, as some files are):
    routing, the study's identity and imaging still find them (issue 17: the study failed)."""
    study = write_cr_study(tmp_path / "cr", size=256)
    ds = pydicom.dcmread(study.files[0])
    late = pydicom.Dataset()
    late.Modality, late.StudyInstanceUID = ds.Modality, ds.StudyInstanceUID
    del ds.Modality, ds.StudyInstanceUID
    encoded = []
    for part in (ds, late):
        buffer = io.BytesIO()
        writer = pydicom.filebase.DicomFileLike(buffer)
        writer.is_implicit_VR, writer.is_little_endian = False, True
        pydicom.filewriter.write_dataset(writer, part)
        encoded.append(buffer.getvalue())
    path = tmp_path / "late.dcm"
    path.write_bytes(file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1", "SENDER")
                     + b"".join(encoded))
    assert "StudyInstanceUID" not in pydicom.dcmread(path, stop_before_pixels=True)  # what the node used to read
    assert StudyIdentity.read(path, "").study_uid == study.study_uid
    outcome = prepare_study(study.study_uid, [path], Router.from_file(SHIPPED_RULES),
                      load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(outcome, Prepared) and outcome.task.domain == "chest_xray" and len(outcome.inputs) == 1
