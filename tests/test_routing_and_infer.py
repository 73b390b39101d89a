"""Routing rules, and ``qoq-node infer`` end to end with replay and with the tiny model."""

from __future__ import annotations

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

from node.engine.tiny import build_tiny_checkpoint
from node.imaging.geometry import FrameRef, Geometry, SourceBox
from node.routing import DOMAINS, Router, RoutingError, StudyHeader
from node.synthetic import write_ct_study
from tests.conftest import PYDICOM_TEST_FILES, dciodvfy_errors

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RULES = REPO / "conf" / "routing.yaml"


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        (StudyHeader("DX", "CHEST", "", ""), "chest_xray"),
        (StudyHeader("CR", "", "", "Chest PA"), "chest_xray"),
        (StudyHeader("ct", "HEAD", "", ""), "ct"),
        (StudyHeader("MR", "", "", ""), "mri"),
        (StudyHeader("US", "", "", ""), "ultrasound"),
        (StudyHeader("MG", "BREAST", "", ""), "mammography"),
        (StudyHeader("XC", "SKIN", "", ""), "dermatology"),
        (StudyHeader("OP", "", "", ""), "fundus"),
        (StudyHeader("SM", "", "", ""), "pathology"),
        (StudyHeader("ECG", "", "", ""), "ecg"),
    ],
)
def test_shipped_rules_route_each_domain(header: StudyHeader, domain: str) -> None:
    task = Router.from_file(SHIPPED_RULES).route(header)
    assert not isinstance(task, str) and task.domain == domain


def test_shipped_rules_define_all_nine_domains() -> None:
    assert set(Router.from_file(SHIPPED_RULES).rules.domains) == set(DOMAINS)


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


def test_infer_with_replay_puts_the_box_on_the_lesion(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path / "ct", slices=1, size=256)
    ds = pydicom.dcmread(study.files[0])
    hu = ds.pixel_array.astype(np.float32) - 1024
    rows, columns = np.nonzero(hu > 200)
    lesion = (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))
    geometry = Geometry.single(FrameRef(ds.SOPInstanceUID, 1, 256, 256), 200_704, 1_003_520)
    x1, y1, x2, y2 = geometry.box_to_model(SourceBox(geometry.placements[0].source, *lesion))
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
    assert outcome["inputs"][0]["width"] == geometry.width
    assert outcome["inputs"][0]["sources"][0]["sop_instance_uid"] == ds.SOPInstanceUID
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
        "gsps.dcm", "oru.hl7", "sc-1.dcm", "seg-1.dcm", "sr.dcm"]
    sr = pydicom.dcmread(tmp_path / "out" / ds.StudyInstanceUID / "sr.dcm")
    assert sr.SOPInstanceUID in oru  # the ORU names the SR it summarises
    assert dciodvfy_errors(tmp_path / "out" / ds.StudyInstanceUID / "sr.dcm") == []


def test_infer_with_the_tiny_model_on_a_ct_and_an_ecg(tmp_path: Path) -> None:
    model = build_tiny_checkpoint(tmp_path / "tiny")
    ct = write_ct_study(tmp_path / "ct", slices=3, size=64)
    result = _infer(tmp_path, {"QOQ_NODE__ENGINE__MODEL": str(model), "QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "8"},
                    tmp_path / "ct", PYDICOM_TEST_FILES / "waveform_ecg.dcm")
    assert result.returncode == 0, result.stderr
    outcomes = {o["study_uid"]: o for o in json.loads(result.stdout)}
    read = outcomes[ct.study_uid]
    assert read["domain"] == "ct" and "TEST MODEL" in read["model"] and len(read["inputs"]) == 3
    assert read["raw_text"] is not None
    [ecg] = [o for uid, o in outcomes.items() if uid != ct.study_uid]
    assert ecg["domain"] == "ecg" and ecg["skipped"] is None  # the waveform was plotted and read
    assert (ecg["inputs"][0]["sources"][0]["rows"], ecg["inputs"][0]["sources"][0]["columns"]) == (480, 1000)


def test_infer_without_a_model_says_what_to_do(tmp_path: Path) -> None:
    ct = write_ct_study(tmp_path / "ct", slices=1, size=32)
    result = _infer(tmp_path, {}, ct.files[0])
    assert result.returncode == 1
    assert "qoq-node model tiny" in result.stderr
