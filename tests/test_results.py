"""Results: GSPS validated by dciodvfy, read by dcmtk and accepted by Orthanc; HL7 ORU^R01 at strict
validation, with hostile model text."""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom.uid import generate_uid

from node.chain import prepare_study
from node.findings import Findings, LocatedBox, ModelBox, locate, parse_output
from node.imaging.geometry import FrameRef, SourceBox
from node.model.profiles import PROFILES
from node.reading import read_from_text
from node.results.gsps import build_presentation_state
from node.results.hl7 import Hl7Party, build_oru, control_id
from node.results.provenance import RESEARCH_LABEL, Provenance
from node.results.seg import build_segs
from node.results.sr import build_sr
from node.results.writer import write_results
from node.routing import DEFAULT_RULES, Router
from node.testing.loopback import http_json
from node.testing.pacs import Orthanc
from node.testing.synthetic import lesion_box, write_cr_study, write_ct_study, write_file
from tests.helpers import PYDICOM_TEST_FILES, dsr2xml_errors, model_geometry, node_config, sr_items, sr_value_types
from tests.reference import lesion_answer, model_box

PROVENANCE = Provenance("replay (recorded responses; TEST RESULT, not a model output)", True)
#: The node's Device UID, from its definition (conformance statement 6a: the same for one node version with one
#: model): pydicom's UID root, then the decimal value of the SHA-512 of what names the device (``qoq-node``,
#: version 0, ``device``, the model's identity, the node's version, ``device``), cut to 64 characters.
DEVICE_UID = ("1.2.826.0.1.3680043.8.498." + str(int(hashlib.sha512(
    f"qoq-node0device{PROVENANCE.model_identity}{PROVENANCE.node_version}device".encode()).hexdigest(), 16)))[:64]


def _findings(source: pydicom.Dataset, box: tuple[float, float, float, float], labels: str = "Mass",
              reasoning: str = "Dense focus.") -> Findings:
    frame = FrameRef(source.SOPInstanceUID, 1, source.Rows, source.Columns)
    x1, y1, x2, y2 = model_box(box, source.Rows, source.Columns)
    text = (f"<think>{reasoning}</think>```json\n[{{\"bbox_2d\": [{x1}, {y1}, {x2}, {y2}], \"label\": \"mass\"}}]"
            f"\n```\\boxed{{{labels}}}")
    findings = locate(parse_output(text), [model_geometry(frame)])
    for located in findings.boxes:  # the node maps the model's box back onto the box it was made from (a reply
        # too long to read whole has none)
        assert located.source == SourceBox(frame, *(pytest.approx(edge) for edge in box))
    return findings


def _sources(tmp_path: Path, modality: str = "CT", photometric: str = "MONOCHROME2") -> list[pydicom.Dataset]:
    study = write_ct_study(tmp_path / modality, slices=2, size=256)
    sources = [pydicom.dcmread(p) for p in study.files]
    if modality != "CT":
        for ds in sources:
            ds.Modality, ds.PhotometricInterpretation = modality, photometric
    return sources


@pytest.mark.parametrize(("modality", "photometric"), [("CT", "MONOCHROME2"), ("MR", "MONOCHROME2"),
                                                        ("DX", "MONOCHROME1")])
def test_gsps_is_valid_and_its_box_is_where_the_finding_is(tmp_path: Path, modality: str, photometric: str,
                                                           dciodvfy_errors) -> None:
    sources = _sources(tmp_path, modality, photometric)
    box = (143.0, 69.0, 183.0, 114.0)
    findings = _findings(sources[0], box)
    gsps = build_presentation_state(findings, sources, PROVENANCE, 1, "ct", (40.0, 400.0))
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert gsps.SeriesDescription.startswith("AI boxes (PR) - " + RESEARCH_LABEL)
    assert gsps.StudyInstanceUID == sources[0].StudyInstanceUID
    assert gsps.PatientID == sources[0].PatientID
    # dcmtk reads the presentation state against the source image: its polyline is the box.
    image = tmp_path / "image.dcm"
    write_file(sources[0], image)
    report = subprocess.run(["dcmp2pgm", "-v", "-p", str(path), str(image), str(tmp_path / "out.pgm")],
                            capture_output=True, text=True)
    [coordinates] = re.findall(r"coordinates: (.*)", report.stdout + report.stderr)
    points = [tuple(float(v) for v in pair.split("\\")) for pair in coordinates.strip(" ,").split(", ")]
    c0, r0, c1, r1 = box
    expected = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
    assert all(abs(a - b) < 1.0 for p, q in zip(points, expected, strict=True) for a, b in zip(p, q, strict=True))
    assert "window center=40 width=400" in report.stdout + report.stderr
    assert "research use only" in (report.stdout + report.stderr).lower()


def test_gsps_uids_are_deterministic_and_depend_on_the_version(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    findings = _findings(sources[0], (10, 10, 50, 50))
    first = build_presentation_state(findings, sources, PROVENANCE, 1, "ct", None)
    again = build_presentation_state(findings, sources, PROVENANCE, 1, "ct", None)
    later = build_presentation_state(findings, sources, PROVENANCE, 2, "ct", None)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert later.SOPInstanceUID != first.SOPInstanceUID


def test_gsps_with_non_ascii_patient_names_round_trips(tmp_path: Path, dciodvfy_errors) -> None:
    for charset, name in (("ISO_IR 192", "Müller^Zoë=山田^太郎"), ("ISO_IR 100", "Müller^Zoë")):
        sources = _sources(tmp_path / charset.replace(" ", ""))
        for ds in sources:
            ds.SpecificCharacterSet, ds.PatientName = charset, name
        findings = _findings(sources[0], (10, 10, 50, 50))
        for kind, result in (("gsps", build_presentation_state(findings, sources, PROVENANCE, 1, "ct", None)),
                             ("sr", build_sr(findings, sources, PROVENANCE, 1, "ct"))):
            path = tmp_path / f"{kind}-{charset.replace(' ', '')}.dcm"
            result.save_as(path, enforce_file_format=True)
            assert str(pydicom.dcmread(path).PatientName) == name
            assert dciodvfy_errors(path) == []


@pytest.mark.usefixtures("orthanc_installed")
def test_orthanc_files_the_gsps_under_the_source_study(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    paths = []
    for index, ds in enumerate(sources):
        paths.append(tmp_path / f"src{index}.dcm")
        write_file(ds, paths[-1])
    findings = _findings(sources[0], (10, 10, 50, 50))
    gsps_path, sr_path = tmp_path / "gsps.dcm", tmp_path / "sr.dcm"
    state = build_presentation_state(findings, sources, PROVENANCE, 1, "ct", (40.0, 400.0))
    state.save_as(gsps_path, enforce_file_format=True)
    build_sr(findings, sources, PROVENANCE, 1, "ct").save_as(sr_path, enforce_file_format=True)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        for path in paths:
            orthanc.upload(path)
        for path in (gsps_path, sr_path):
            assert orthanc.upload(path)["Status"] == "Success"
        [study] = http_json(f"{orthanc.url}/studies")
        series = http_json(f"{orthanc.url}/studies/{study}/series")
        modalities = sorted(s["MainDicomTags"]["Modality"] for s in series)
        assert modalities == ["CT", "PR", "SR"]


def test_sr_is_valid_readable_and_its_region_is_the_box(tmp_path: Path, dciodvfy_errors) -> None:
    sources = _sources(tmp_path)
    box = (143.0, 69.0, 183.0, 114.0)
    findings = _findings(sources[0], box, labels="Mass, Something Odd", reasoning="Dense focus | 1 cm.")
    sr = build_sr(findings, sources, PROVENANCE, 1, "ct")
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    for text in ('(4147007,SCT,"Mass")', '(SOMETHING-ODD,99QOQ,"Something Odd")', '"Dense focus | 1 cm."',
                 "Verification Flag   : UNVERIFIED", RESEARCH_LABEL):
        assert text in dump.stdout
    [scoord] = sr_items(sr, "SCOORD")
    points = [float(v) for v in scoord.GraphicData]
    c0, r0, c1, r1 = box
    expected = [c0, r0, c1, r0, c1, r1, c0, r1, c0, r0]
    assert all(abs(a - b) < 1.0 for a, b in zip(points, expected, strict=True))
    texts = [item.TextValue for item in sr_items(pydicom.dcmread(path), "TEXT")]
    assert findings.raw_text in texts and "Dense focus | 1 cm." in texts  # raw text kept verbatim
    # model text outside the source's character set (ISO_IR 100 here) is kept too
    unicode = _findings(sources[0], box, reasoning="肺 nodule – ✓ 🙂")
    unicode_path = tmp_path / "sr-unicode.dcm"
    build_sr(unicode, sources, PROVENANCE, 1, "ct").save_as(unicode_path, enforce_file_format=True)
    assert "肺 nodule – ✓ 🙂" in [item.TextValue for item in sr_items(pydicom.dcmread(unicode_path), "TEXT")]
    assert str(pydicom.dcmread(unicode_path).PatientName) == str(sources[0].PatientName)
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99QOQ"
    assert build_sr(findings, sources, PROVENANCE, 1, "ct").SOPInstanceUID == sr.SOPInstanceUID
    # What viewers draw: Imaging Measurements holds only groups with geometry (OHIF reads a region from each);
    # the answer and texts are in Qualitative Evaluations; every image read is in the Image Library.
    root = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    groups = root["Imaging Measurements"].ContentSequence
    assert all(any(item.ValueType == "SCOORD" for item in group.ContentSequence) for group in groups)
    evaluations = root["Qualitative Evaluations"].ContentSequence
    assert [item.ConceptCodeSequence[0].CodeMeaning for item in evaluations if item.ValueType == "CODE"] == [
        "Mass", "Something Odd"]
    library = root["Image Library"].ContentSequence[0].ContentSequence
    assert [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in library] == [
        ds.SOPInstanceUID for ds in sources]
    # highdicom reads the findings back: the box group, its region and its finding
    [group] = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
    assert group.finding_type.meaning == "Mass" and group.roi is not None


def test_seg_marks_the_box_pixels_on_the_right_image(tmp_path: Path, dciodvfy_errors) -> None:
    sources = _sources(tmp_path)
    box = (143.2, 69.5, 183.0, 114.0)
    findings = _findings(sources[1], box)
    [seg] = build_segs(findings, sources, PROVENANCE, 1, "ct")
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    reread = pydicom.dcmread(path)
    assert reread.SeriesDescription.startswith("AI boxes (SEG) - " + RESEARCH_LABEL)
    [segment] = reread.SegmentSequence
    assert segment.SegmentLabel == "mass" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0].CodeMeaning == (
        "Artificial Intelligence")
    [frame] = reread.PerFrameFunctionalGroupsSequence
    source_uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    assert source_uid == sources[1].SOPInstanceUID  # on the image the box is on, not the other one
    rows, columns = np.nonzero(reread.pixel_array)
    assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (143, 69, 183, 114)
    assert build_segs(_findings(sources[1], box), sources, PROVENANCE, 1, "ct")[0].SOPInstanceUID == seg.SOPInstanceUID
    assert build_segs(locate(parse_output("\\boxed{None}"), []), sources, PROVENANCE, 1, "ct") == []
    # the segment is the SR's box: the same Tracking ID and UID
    [group] = [item for item in sr_items(build_sr(findings, sources, PROVENANCE, 1, "ct"), "CONTAINER")
               if item.ConceptNameCodeSequence[0].CodeMeaning == "Measurement Group"]
    tracking = {item.ConceptNameCodeSequence[0].CodeMeaning: item.get("UID", item.get("TextValue"))
                for item in group.ContentSequence}
    assert (segment.TrackingID, segment.TrackingUID) == (tracking["Tracking Identifier"],
                                                         tracking["Tracking Unique Identifier"])


def test_two_boxes_of_one_finding_are_two_segments(tmp_path: Path) -> None:
    """Each box its own segment (and Tracking UID), even when two boxes share a label."""
    sources = _sources(tmp_path)
    frame = FrameRef(sources[0].SOPInstanceUID, 1, sources[0].Rows, sources[0].Columns)
    geometry = model_geometry(frame)
    boxes = [model_box(edges, frame.rows, frame.columns) for edges in ((10.0, 10.0, 40.0, 40.0),
                                                                       (100.0, 100.0, 140.0, 150.0))]
    text = "```json\n[" + ", ".join(f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "mass"}}'
                                    for x1, y1, x2, y2 in boxes) + "]\n```\\boxed{Mass}"
    [seg] = build_segs(locate(parse_output(text), [geometry]), sources, PROVENANCE, 1, "ct")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["mass", "mass"]
    assert len({s.TrackingUID for s in seg.SegmentSequence}) == 2


def test_boxes_on_images_without_geometry_get_a_seg_each(tmp_path: Path, dciodvfy_errors) -> None:
    """A two-view chest radiograph series (no frame of reference, so highdicom segments one image per
    SEG) with a box on each view: two SEGs in one series, each on its own view."""
    front = pydicom.dcmread(write_cr_study(tmp_path / "cr", size=256).files[0])
    side = copy.deepcopy(front)
    side.SOPInstanceUID, side.InstanceNumber, side.ViewPosition = generate_uid(), 2, "LL"
    boxes = {str(front.SOPInstanceUID): (20.0, 30.0, 60.0, 70.0),
             str(side.SOPInstanceUID): (100.0, 110.0, 150.0, 160.0)}
    geometries = [model_geometry(FrameRef(ds.SOPInstanceUID, 1, ds.Rows, ds.Columns))
                  for ds in (front, side)]
    model_boxes = [model_box(boxes[str(ds.SOPInstanceUID)], ds.Rows, ds.Columns) for ds in (front, side)]
    text = "```json\n[" + ", ".join(
        f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "nodule", "image_index": {n}}}'
        for n, (x1, y1, x2, y2) in enumerate(model_boxes)) + "]\n```"
    segs = build_segs(locate(parse_output(text), geometries), [front, side], PROVENANCE, 1, "chest_xray")
    assert len(segs) == 2 and len({seg.SOPInstanceUID for seg in segs}) == 2
    assert len({seg.SeriesInstanceUID for seg in segs}) == 1 and [seg.InstanceNumber for seg in segs] == [1, 2]
    for seg, source in zip(segs, (front, side), strict=True):
        path = tmp_path / f"seg-{seg.InstanceNumber}.dcm"
        seg.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        reread = pydicom.dcmread(path)
        [frame] = reread.PerFrameFunctionalGroupsSequence
        assert frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        rows, columns = np.nonzero(reread.pixel_array)
        assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == boxes[str(source.SOPInstanceUID)]


def test_a_box_on_an_enhanced_multiframe_image_is_segmented_on_its_frame(tmp_path: Path, dciodvfy_errors) -> None:
    import highdicom as hd

    slices = [pydicom.dcmread(p) for p in write_ct_study(tmp_path / "ct", slices=4, size=64).files]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(slices, series_instance_uid=generate_uid(), series_number=5,
                                                        sop_instance_uid=generate_uid(), instance_number=1)
    frame = FrameRef(enhanced.SOPInstanceUID, 3, enhanced.Rows, enhanced.Columns)
    located = LocatedBox("mass", ModelBox("mass", 0, 0, 1, 1), SourceBox(frame, 30, 10, 40, 20))
    [seg] = build_segs(Findings("r", ("Mass",), (located,), "raw", ()), [enhanced], PROVENANCE, 1, "ct")
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    reread = pydicom.dcmread(path)
    [seg_frame] = reread.PerFrameFunctionalGroupsSequence
    source = seg_frame.DerivationImageSequence[0].SourceImageSequence[0]
    assert (source.ReferencedSOPInstanceUID, source.ReferencedFrameNumber) == (enhanced.SOPInstanceUID, 3)
    rows, columns = np.nonzero(reread.pixel_array)
    assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (30, 10, 40, 20)


def test_a_box_on_a_cine_ultrasound_frame_is_segmented_on_that_frame(tmp_path: Path, dciodvfy_errors) -> None:
    source = pydicom.dcmread(PYDICOM_TEST_FILES / "examples_ybr_color.dcm")  # US multi-frame, 30 frames
    boxes = [LocatedBox("cyst", ModelBox("cyst", 0, 0, 1, 1),
                        SourceBox(FrameRef(source.SOPInstanceUID, frame, source.Rows, source.Columns), *box))
             for frame, box in ((11, (100, 80, 140, 120)), (20, (10, 20, 30, 40)))]
    segs = build_segs(Findings("r", ("Cyst",), tuple(boxes), "raw", ()), [source], PROVENANCE, 1, "ultrasound")
    assert len(segs) == 2 and source.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage  # left as it was
    for seg, frame, box in zip(segs, (11, 20), ((100, 80, 140, 120), (10, 20, 30, 40)), strict=True):
        path = tmp_path / f"seg-{frame}.dcm"
        seg.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        reread = pydicom.dcmread(path)
        [seg_frame] = reread.PerFrameFunctionalGroupsSequence
        referenced = seg_frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert (referenced.ReferencedSOPInstanceUID, referenced.ReferencedSOPClassUID,
                referenced.ReferencedFrameNumber) == (source.SOPInstanceUID, source.SOPClassUID, frame)
        assert reread.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID == (
            source.SOPClassUID)
        rows, columns = np.nonzero(reread.pixel_array)
        assert (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == box


def _unescape(value: str) -> str:
    replacements = {"\\F\\": "|", "\\S\\": "^", "\\T\\": "&", "\\R\\": "~", "\\.br\\": "\n", "\\E\\": "\\"}
    return re.sub(r"\\(F|S|T|R|E|\.br)\\", lambda m: replacements[m.group(0)], value)


def _oru(findings: Findings, source: pydicom.Dataset, **kwargs) -> str:
    return build_oru(findings, source, PROVENANCE, Hl7Party(), "study-key", now=datetime(2026, 1, 2, tzinfo=UTC),
                     **kwargs)


def test_oru_is_strictly_valid_and_names_the_study(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    sr_uid = generate_uid()
    message = _oru(_findings(source, (143, 69, 183, 114), labels="Mass, Pleural Effusion"), source,
                   sr_sop_instance_uid=sr_uid)
    parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()
    assert parsed.msh.msh_9.to_er7() == "ORU^R01^ORU_R01" and parsed.msh.msh_11.to_er7() == "T"
    result = parsed.oru_r01_patient_result
    assert result.oru_r01_patient.pid.pid_5.to_er7() == "SYNTHETIC^PATIENT"
    order = result.oru_r01_order_observation
    assert order.obr.obr_18.to_er7() == "SYN0001" and order.obr.obr_25.to_er7() == "P"
    values = [segment.split("|")[5] for segment in message.split("\r") if segment.startswith("OBX")]
    assert values[0] == "4147007^Mass^SCT~60046008^Pleural effusion^SCT"
    assert source.StudyInstanceUID in values and f"{sr_uid}^QOQNODE^AP^DICOM" in values  # the SR as RP
    assert len(order.oru_r01_observation) == len(values)
    assert "research use only" in message.lower()
    obx = {segment.split("|")[3]: segment.split("|") for segment in message.split("\r") if segment.startswith("OBX")}
    assert obx["110180^Study Instance UID^DCM"][5] == source.StudyInstanceUID
    assert obx["AI-SR^AI structured report^L"][2] == "RP"
    msh = message.split("\r")[0].split("|")
    assert re.fullmatch(r"\d{14}[+-]\d{4}", msh[6])  # MSH-7 with its UTC offset
    assert len(msh) == 12  # ASCII only: no MSH-18
    assert result.oru_r01_patient.oru_r01_visit.pv1.pv1_2.to_er7() == "U"  # PV1 present


def test_oru_filler_order_number_is_configurable(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    message = build_oru(_findings(source, (10, 10, 50, 50)), source, PROVENANCE,
                        Hl7Party(filler_order_number="study_uid"), "key")
    obr = next(segment for segment in message.split("\r") if segment.startswith("OBR")).split("|")
    assert obr[3] == source.StudyInstanceUID and obr[18] == source.AccessionNumber
    assert parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_oru_control_id_is_stable_per_result(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    findings = _findings(source, (10, 10, 50, 50))
    assert _oru(findings, source).split("\r")[0] == _oru(findings, source).split("\r")[0]
    assert control_id("a") != control_id("b") and len(control_id("a")) <= 20


@pytest.mark.parametrize(
    "reasoning",
    [
        "pipes | carets ^ tildes ~ backslashes \\ ampersands & and MSH|^~\\&|fake",
        "segment break\rOBX|99|ST|injected\nnext line\r\nand \x00\x07\x1b control characters",
        "unicode: 肺 Zoë – ✓ 🙂",
        "long " + "x" * 1_000_000,
    ],
)
def test_hostile_model_text_cannot_break_the_message(tmp_path: Path, reasoning: str) -> None:
    [source, _] = _sources(tmp_path)
    findings = _findings(source, (10, 10, 50, 50), labels="A|B^C, D~E", reasoning=reasoning)
    message = _oru(findings, source)
    segments = message.split("\r")
    assert [s[:3] for s in segments] == ["MSH", "PID", "PV1", "ORC", "OBR"] + ["OBX"] * (len(segments) - 6) + ["NTE"]
    parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()
    fields = [segment.split("|") for segment in segments if segment.startswith("OBX")]
    assert all(len(f) == 12 for f in fields)  # no delimiter from the text survived unescaped
    reasoning_text = "".join(_unescape(f[5]) for f in fields if f[2] == "FT")
    expected = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", reasoning.strip().replace("\r\n", "\n").replace("\r", "\n"))
    if len(expected) <= 16_000:
        assert reasoning_text == expected  # escaped text round-trips exactly
    else:
        assert len(reasoning_text) <= 16_000 and reasoning_text.startswith("long xxx")
    assert len(message) < 40_000
    reasoning_parts = [f for f in fields if f[2] == "FT"]
    assert [f[4] for f in reasoning_parts] == [str(n) for n in range(1, len(reasoning_parts) + 1)]  # OBX-4 sub-IDs
    assert (segments[0].split("|")[-1] == "UNICODE UTF-8") == (not message.isascii() or "肺" in reasoning)


def test_critical_findings_are_flagged_for_the_worklist(tmp_path: Path) -> None:
    """An answer among results.critical_labels: OBX-8 AA on the answer and a stat TQ1 priority."""
    [source, _] = _sources(tmp_path)
    findings = _findings(source, (10, 10, 50, 50), labels="Pneumothorax, Edema")
    message = _oru(findings, source, critical_labels=["pneumothorax"])
    parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.validate()
    answer = next(segment.split("|") for segment in message.split("\r") if segment.startswith("OBX|1|"))
    assert answer[8] == "AA"
    assert "TQ1|1||||||||S^Stat^HL70485" in message.split("\r")
    calm = _oru(_findings(source, (10, 10, 50, 50), labels="Edema"), source, critical_labels=["pneumothorax"])
    assert "TQ1" not in calm and "|AA|" not in calm


def test_reasoning_is_split_on_word_boundaries(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    words = " ".join(f"word{n}" for n in range(200))
    message = _oru(_findings(source, (10, 10, 50, 50), reasoning=words), source)
    parts = [segment.split("|")[5] for segment in message.split("\r") if "|FT|" in segment]
    assert len(parts) > 1 and "".join(parts) == words
    assert all(part.endswith(" ") for part in parts[:-1])  # each piece ends at a word's end


def test_an_order_number_is_there_without_an_accession(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    source.AccessionNumber = ""
    message = _oru(_findings(source, (10, 10, 50, 50)), source)
    orc = next(segment.split("|") for segment in message.split("\r") if segment.startswith("ORC"))
    assert orc[3] == source.StudyInstanceUID  # the filler order number: the Study Instance UID


def test_oru_without_boxes_or_answer(tmp_path: Path) -> None:
    [source, _] = _sources(tmp_path)
    empty = locate(parse_output("nothing useful"), [])
    patientless = copy.deepcopy(source)
    del patientless.PatientName
    message = _oru(empty, patientless)
    assert parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert "NONE^No answer^L" in message


def _dx_monochrome1(tmp_path: Path) -> Path:
    [path] = write_ct_study(tmp_path / "dx", slices=1, size=128).files
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    ds.Modality, ds.PhotometricInterpretation, ds.ImageLaterality = "DX", "MONOCHROME1", "U"
    write_file(ds, path)
    return path


def _mg(tmp_path: Path) -> Path:
    [path] = write_ct_study(tmp_path / "mg", slices=1, size=128).files
    ds = pydicom.dcmread(path)
    mammography = pydicom.uid.DigitalMammographyXRayImageStorageForPresentation
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = mammography
    ds.Modality, ds.ImageLaterality, ds.ViewPosition, ds.BodyPartExamined = "MG", "L", "CC", "BREAST"
    write_file(ds, path)
    return path


SOURCE_KINDS = {
    "ct": lambda tmp: write_ct_study(tmp / "ct", slices=1, size=128).files[0],
    "mr": lambda tmp: PYDICOM_TEST_FILES / "MR_small.dcm",
    "dx_monochrome1": _dx_monochrome1,
    "mg": _mg,
    "us_colour": lambda tmp: PYDICOM_TEST_FILES / "examples_rgb_color.dcm",
    "us_multiframe": lambda tmp: PYDICOM_TEST_FILES / "examples_ybr_color.dcm",
    "ecg": lambda tmp: PYDICOM_TEST_FILES / "waveform_ecg.dcm",
}


@pytest.mark.parametrize("kind", list(SOURCE_KINDS))
@pytest.mark.usefixtures("dcmtk")
def test_every_result_object_passes_dciodvfy_for_every_kind_of_source(tmp_path: Path, kind: str,
                                                                      dciodvfy_errors) -> None:
    from node.imaging.decode import iter_frames
    from node.imaging.inputs import study_inputs
    from node.results.sc import build_sc

    path = SOURCE_KINDS[kind](tmp_path)
    source = pydicom.dcmread(path)
    [model_input] = study_inputs([path], PROFILES["qwen2.5-vl"], 1, ecg_as_image=True).images
    geometry = model_input.geometry
    frame = geometry.placements[0].source
    x1, y1, x2, y2 = model_box((frame.columns * 0.25, frame.rows * 0.25, frame.columns * 0.6, frame.rows * 0.6),
                               frame.rows, frame.columns)
    text = f'<think>r</think>```json\n[{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "lesion"}}]\n```\\boxed{{Mass}}'
    findings = locate(parse_output(text), [geometry])
    objects = {"sr": build_sr(findings, [source], PROVENANCE, 1, kind)}
    if "PixelData" in source:
        [objects["seg"]] = build_segs(findings, [source], PROVENANCE, 1, kind)
        decoded = [f for f in iter_frames(path) if f.source == frame]
        objects["sc"] = build_sc(decoded[0], source, findings, PROVENANCE, 1, kind)
        objects["presentation_state"] = build_presentation_state(findings, [source], PROVENANCE, 1, kind,
                                                                 model_input.window)
    for name, dataset in objects.items():
        out = tmp_path / f"{name}.dcm"
        dataset.save_as(out, enforce_file_format=True)
        assert dciodvfy_errors(out) == [], name
        assert RESEARCH_LABEL in pydicom.dcmread(out, stop_before_pixels=True).SeriesDescription
        # provenance: the node and the model as processing equipment, with the node's Device UID
        [equipment] = [item for item in dataset.ContributingEquipmentSequence if item.Manufacturer == "qoq-node"]
        assert equipment.DeviceUID == DEVICE_UID, name
        assert equipment.ManufacturerModelName == PROVENANCE.model_identity[:64]
    assert dsr2xml_errors(tmp_path / "sr.dcm") == ""
    value_types = sr_value_types(objects["sr"])
    if kind == "ecg":  # a waveform has no pixels: no image region, no image reference; the waveform referenced
        assert {"IMAGE", "SCOORD"}.isdisjoint(value_types) and "WAVEFORM" in value_types
    else:
        assert {"IMAGE", "SCOORD"} <= value_types and "WAVEFORM" not in value_types


@pytest.mark.parametrize("nudge", [0.0, -1e-7, 1e-7])  # a box mapped back from the model lands a hair off
@pytest.mark.parametrize("size", [256, 3000])
def test_secondary_capture_burns_in_the_box_under_a_banner(tmp_path: Path, size: int, nudge: float) -> None:
    """The outline runs just outside the box (the lesion's pixels are untouched), the label sits outside
    it, and banner, text and lines grow with the image: readable on a 3000-pixel radiograph. An edge a hair
    off a pixel edge is drawn at that edge (PIL cut 2129.9999999 down to 2129, a pixel inside the box)."""
    from node.imaging.decode import iter_frames
    from node.results.sc import BANNER_HEIGHT, BOX_COLOUR, LINE_WIDTH, build_sc, scale

    [path] = write_ct_study(tmp_path / "ct", slices=1, size=size).files
    source = pydicom.dcmread(path)
    c0, r0, c1, r1 = (int(size * 0.56), int(size * 0.27), int(size * 0.71), int(size * 0.45))
    # the box on whole source pixels as given (how a model's box reaches the source is _findings' concern)
    frame_ref = FrameRef(source.SOPInstanceUID, 1, source.Rows, source.Columns)
    located = LocatedBox("mass", ModelBox("mass", 0, 0, 1, 1),
                         SourceBox(frame_ref, c0 + nudge, r0 + nudge, c1 + nudge, r1 + nudge))
    findings = Findings("Dense focus.", ("Mass",), (located,), "raw", ())
    [frame] = iter_frames(path)
    sc = build_sc(frame, source, findings, PROVENANCE, 1, "ct")
    pixels = sc.pixel_array
    factor = scale(size, size)
    banner, width = round(BANNER_HEIGHT * factor), max(LINE_WIDTH, round(LINE_WIDTH * factor))
    assert pixels.shape == (size + banner, size, 3)
    image = pixels[banner:]
    red = np.all(image == BOX_COLOUR, axis=-1)
    assert not red[r0:r1, c0:c1].any()  # nothing drawn over the boxed region
    assert np.array_equal(image[r0:r1, c0:c1, 0], frame.pixels[r0:r1, c0:c1])
    ring = red[r0 - width:r1 + width, c0 - width:c1 + width]
    assert ring[:width].all() and ring[-width:].all() and ring[:, :width].all() and ring[:, -width:].all()
    label = red[:r0 - width, c0:c1]  # the label, above the box
    assert label.any()
    yellow = (pixels[:banner, ..., 0] > 150) & (pixels[:banner, ..., 1] > 150) & (pixels[:banner, ..., 2] < 100)
    assert yellow.sum() > 100 * factor * factor  # the banner's text, as large as the image asks
    assert sc.BurnedInAnnotation == "YES" and "research use only" in sc.ImageComments.lower()


def test_secondary_capture_orientation_comes_from_the_source() -> None:
    from node.results.sc import patient_orientation

    axial = pydicom.Dataset()
    axial.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    assert patient_orientation(axial) == ("L", "P")
    coronal = pydicom.Dataset()
    coronal.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    assert patient_orientation(coronal) == ("L", "F")
    given = pydicom.Dataset()
    given.PatientOrientation = ["A", "F"]
    assert patient_orientation(given) == ("A", "F")
    assert patient_orientation(pydicom.dcmread(PYDICOM_TEST_FILES / "examples_rgb_color.dcm")) is None


def test_building_results_never_puts_a_patient_name_in_a_warning(tmp_path: Path) -> None:
    """highdicom quotes odd person names in warnings; in the node's process they must not appear."""
    [path] = write_ct_study(tmp_path / "ct", slices=1, size=64).files
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe"  # one component: highdicom would quote it in a warning
    write_file(ds, path)
    script = (
        "import sys, pydicom\n"
        "from node.findings import locate, parse_output\n"
        "from node.results.provenance import Provenance\n"
        "from node.results.sr import build_sr\n"
        "from node.results.gsps import build_presentation_state\n"
        "source = pydicom.dcmread(sys.argv[1])\n"
        "findings = locate(parse_output('\\\\boxed{Mass}'), [])\n"
        "build_sr(findings, [source], Provenance('m', True), 1, 'ct')\n"
        "build_presentation_state(findings, [source], Provenance('m', True), 1, 'ct', None)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Doe" not in run.stderr + run.stdout


def test_label_codes_use_snomed_where_known_and_the_private_scheme_otherwise() -> None:
    from node.results.codes import PRIVATE_SCHEME, label_concept

    assert (label_concept("Pleural Effusion").value, label_concept("Pleural Effusion").scheme_designator) == (
        "60046008", "SCT")
    assert label_concept(" myocardial infarction ").value == "22298006"
    odd = label_concept("Support Devices")
    assert (odd.value, odd.scheme_designator, odd.meaning) == ("SUPPORT-DEVICES", PRIVATE_SCHEME, "Support Devices")


def test_snomed_codes_that_dicom_also_lists_carry_dicoms_meaning() -> None:
    """Where DICOM PS3.16 (pydicom's code dictionary) lists a code of the label table, the table
    gives it the same meaning: a guard against a mistyped concept id."""
    from pydicom.sr.codedict import codes

    from node.results.codes import SNOMED

    dicom = {}
    for name in codes.SCT.dir():
        concept = getattr(codes.SCT, name)
        dicom.setdefault(concept.value, set()).add(concept.meaning.lower())
    checked = [(value, meaning) for value, meaning in SNOMED.values() if value in dicom]
    assert len(checked) >= 6
    for value, meaning in checked:
        assert meaning.lower() in dicom[value], (value, meaning, dicom[value])


def test_sr_says_what_was_examined_and_when_the_model_read_it(tmp_path: Path) -> None:
    """Procedure Reported is the source's own procedure code where it has one; Content Date/Time is when
    the analysis began, not when the report was written."""
    sources = _sources(tmp_path)
    findings = _findings(sources[0], (143.0, 69.0, 183.0, 114.0))
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "24627-2", "LN", "CT Chest"
    sources[0].ProcedureCodeSequence = [code]
    sr = build_sr(findings, sources, PROVENANCE, 1, "ct", analysed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    [procedure] = [item for item in sr.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeMeaning == "Procedure reported"]
    assert procedure.ConceptCodeSequence[0].CodeValue == "24627-2"
    assert (sr.ContentDate, sr.ContentTime[:6]) == ("20260102", "030405")
    del sources[0].ProcedureCodeSequence
    by_modality = build_sr(findings, sources, PROVENANCE, 1, "ct")  # a CT: LOINC's "CT unspecified body region"
    assert "25045-6" in str(by_modality.ContentSequence)
    sources[0].Modality = "SM"
    assert "363679005" in str(build_sr(findings, sources, PROVENANCE, 1, "ct").ContentSequence)


def test_written_files_name_the_node_as_their_implementation(tmp_path: Path) -> None:
    from node.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

    written = _written_cr(tmp_path, secondary_capture="projection")
    assert written is not None and {p.name for p in written.files} == {"sr.dcm", "seg-1.dcm", "gsps.dcm", "kos.dcm",
                                                                     "sc-1.dcm", "report.dcm"}
    for path in written.files:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        assert (meta.ImplementationClassUID, meta.ImplementationVersionName) == (IMPLEMENTATION_CLASS_UID,
                                                                                IMPLEMENTATION_VERSION_NAME)


def test_key_object_selection_lists_the_images_read_with_the_answer(tmp_path: Path, dciodvfy_errors) -> None:
    """A KOS "Of Interest" over the images the model read: what a PACS shows as key images."""
    from node.results.kos import build_kos

    sources = _sources(tmp_path)
    findings = _findings(sources[0], (143.0, 69.0, 183.0, 114.0), labels="Mass")
    kos = build_kos(findings, sources, PROVENANCE, 1, "ct")
    path = tmp_path / "kos.dcm"
    kos.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000" and kos.Modality == "KO"
    images = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in sr_items(kos, "IMAGE")]
    assert images == [ds.SOPInstanceUID for ds in sources]
    [description] = [item.TextValue for item in sr_items(kos, "TEXT")
                     if item.ConceptNameCodeSequence[0].CodeMeaning == "Key Object Description"]
    assert "AI answer: Mass" in description and RESEARCH_LABEL in description
    assert kos.SeriesDescription.startswith("AI key images (KO) - ")


def test_the_sr_references_each_boxs_seg_segment(tmp_path: Path, dciodvfy_errors) -> None:
    """Written together, each box's SEG segment is named in a measurement group of its own under the box's
    tracking UID (Referenced Segmentation Frame: TID 1410 makes it exclusive with the region viewers draw);
    the SR stays valid and highdicom still reads both groups."""
    _written_cr(tmp_path)
    sr, seg = pydicom.dcmread(tmp_path / "out" / "sr.dcm"), pydicom.dcmread(tmp_path / "out" / "seg-1.dcm")
    [reference] = [item for item in sr_items(sr, "IMAGE")
                   if item.ConceptNameCodeSequence[0].CodeMeaning == "Referenced Segmentation Frame"]
    pointer = reference.ReferencedSOPSequence[0]
    assert (pointer.ReferencedSOPInstanceUID, pointer.ReferencedFrameNumber) == (seg.SOPInstanceUID, 1)
    assert dciodvfy_errors(tmp_path / "out" / "sr.dcm") == []
    groups = hd.sr.srread(tmp_path / "out" / "sr.dcm").content.get_planar_roi_measurement_groups()
    [drawn] = [group for group in groups if group.roi is not None]
    [segmented] = [group for group in groups if group.roi is None]
    assert drawn.finding_type.meaning == segmented.finding_type.meaning == "Mass"
    assert drawn.tracking_uid == segmented.tracking_uid == seg.SegmentSequence[0].TrackingUID


def _written_cr(tmp_path: Path, secondary_capture: bool | str = False):
    """A chest CR read through the node's own routing and imaging, with a recorded answer boxing its lesion,
    and its results written to ``tmp_path / "out"``: the ResultSet."""
    from node.chain import prepare_study
    from node.config import load_config
    from node.results.writer import write_results
    from node.routing import Router

    cr = write_cr_study(tmp_path / "cr", size=512)
    outcome = prepare_study(cr.study_uid, list(cr.files), Router.from_file(DEFAULT_RULES),
                            load_config(None, environ={}).imaging,
                      PROFILES["qwen2.5-vl"])
    source = pydicom.dcmread(cr.files[0])
    read = read_from_text(outcome, lesion_answer(source, "Mass"), "replay", True)
    [located] = read.findings.boxes  # the box the reports carry is on the lesion in source pixels
    edges = (located.source.column_min, located.source.row_min, located.source.column_max, located.source.row_max)
    assert edges == pytest.approx(lesion_box(source), abs=1)
    return write_results(read, tmp_path / "out", {}, secondary_capture=secondary_capture)


#: Model outputs that once broke objects or lost the answer (issue 17): each still gives valid objects,
#: a strictly valid ORU, the answer and the good box, and the raw text whole (escaped) in the SR.
HOSTILE_OUTPUTS = {
    "c0-controls": "<think>bell\x07 null\x00 escape\x1b tab\there</think>{box}\\boxed{{Mass}}",
    "mllp-framing": "<think>\x0bMSH|^~\\&|EVIL\x1c\r</think>{box}\\boxed{{Mass}}",
    "lone-surrogate": "<think>broken \ud83d token</think>{box}\\boxed{{Mass}}",
    "line-separators": "<think>one\u2028two\u2029three\x85four</think>{box}\\boxed{{Mass}}",
    "c1-controls": "<think>c1 \x85\x9b\x90 here</think>{box}\\boxed{{Mass\x9b}}",
    "backslash-label": "<think>r</think>{box_label_backslash}\\boxed{{Mass \\\\ Nodule}}",
    "deep-json": "<think>r</think>```json\n" + "[" * 10_000 + "]" * 10_000 + "\n```\n{box}\\boxed{{Mass}}",
    "huge-coordinate": "<think>r</think>```json\n[{{\"bbox_2d\": [1, 2, " + "9" * 401 + ", 4]}}]\n```{box}"
                       "\\boxed{{Mass}}",
}


def _unescape_raw(value: str) -> str:
    """The inverse of the SR's raw-text escaping."""
    return re.sub(r"\\u\{([0-9a-f]+)\}", lambda m: chr(int(m.group(1), 16)), value)


@pytest.mark.parametrize("name", list(HOSTILE_OUTPUTS))
def test_hostile_model_output_gives_valid_objects_and_keeps_the_answer(tmp_path: Path, name: str,
                                                                       dciodvfy_errors) -> None:
    study = write_cr_study(tmp_path / "cr", size=256)
    config = node_config(tmp_path / "node")
    outcome = prepare_study(study.study_uid, list(study.files), Router.from_file(DEFAULT_RULES),
                            config.imaging,
                      PROFILES["qwen2.5-vl"])
    [model_input] = outcome.inputs
    frame = model_input.geometry.placements[0].source
    x1, y1, x2, y2 = model_box((60, 60, 120, 120), frame.rows, frame.columns)
    box = f'```json\n[{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "mass"}}]\n```'
    text = HOSTILE_OUTPUTS[name].format(box=box, box_label_backslash=box.replace('"mass"', '"mass\\\\\\\nodule"'))
    findings = locate(parse_output(text), [model_input.geometry])
    written = write_results(read_from_text(outcome, text, "replay (TEST)", True), tmp_path / "out", {"ehr": Hl7Party()})
    assert not written.omitted, written.omitted
    assert findings.labels[0].startswith("Mass") and len(findings.boxes) == 1
    on_source = findings.boxes[0].source
    assert (on_source.column_min, on_source.row_min, on_source.column_max, on_source.row_max) == pytest.approx(
        (60, 60, 120, 120))
    for item in written.dicom:
        assert dciodvfy_errors(item.path) == [], item.path.name
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    [raw] = [item for item in sr_items(sr, "TEXT") if item.ConceptNameCodeSequence[0].CodeValue
             == "RAW-MODEL-TEXT"]
    if "\ud83d" not in text:  # a lone surrogate cannot be stored in any encoding; it is escaped, still there
        assert _unescape_raw(str(raw.TextValue)) == text
    else:
        assert "\\u{d83d}" in str(raw.TextValue)
    oru = (tmp_path / "out" / "ehr.hl7").read_bytes().decode("utf-8")
    assert parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x1c\u2028\u2029\x85]", oru)


def test_a_series_of_mixed_sizes_gets_a_presentation_state_per_size(tmp_path: Path, dciodvfy_errors) -> None:
    """Two radiographs of one series, 256 and 192 pixels square, a box on each: two presentation states,
    each over its own image, both valid, nothing left out (issue 17: the state was lost)."""
    big = write_cr_study(tmp_path / "big", size=256)
    small = write_cr_study(tmp_path / "small", size=192)
    ds = pydicom.dcmread(small.files[0])
    first = pydicom.dcmread(big.files[0])
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = first.StudyInstanceUID, first.SeriesInstanceUID, 2
    write_file(ds, small.files[0])
    files = [big.files[0], small.files[0]]
    outcome = prepare_study(big.study_uid, files, Router.from_file(DEFAULT_RULES),
                            node_config(tmp_path / "n").imaging,
                      PROFILES["qwen2.5-vl"])
    assert len(outcome.inputs) == 2
    boxes = []
    for index, model_input in enumerate(outcome.inputs):
        frame = model_input.geometry.placements[0].source
        x1, y1, x2, y2 = model_box((40, 40, 90, 90), frame.rows, frame.columns)
        boxes.append(f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "mass", "image": {index}}}')
    text = f"<think>r</think>```json\n[{', '.join(boxes)}]\n```\\boxed{{Mass}}"
    written = write_results(read_from_text(outcome, text, "replay (TEST)", True), tmp_path / "out", {})
    assert not written.omitted
    states = sorted(p for p in written.files if p.name.startswith("gsps"))
    assert [p.name for p in states] == ["gsps-2.dcm", "gsps.dcm"]
    referenced = set()
    for path in states:
        assert dciodvfy_errors(path) == []
        state = pydicom.dcmread(path)
        referenced |= {str(r.ReferencedSOPInstanceUID) for s in state.ReferencedSeriesSequence
                       for r in s.ReferencedImageSequence}
    assert referenced == {str(first.SOPInstanceUID), str(ds.SOPInstanceUID)}
