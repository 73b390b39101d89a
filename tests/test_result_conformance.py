"""The result objects as independent validators read them (issue 26, items 10 and 18-25): dciodvfy,
pixelmed's DicomSRValidator, dcmtk's dcmp2pgm, highdicom read-back and hl7apy. The whole corpus goes
through the same checks in tests/test_corpus.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from node.chain import prepare_study
from node.config import load_config
from node.model.profiles import PROFILES
from node.reading import read_from_text
from node.results.gsps import build_presentation_state
from node.results.hl7 import Hl7Party, NoPatientIdentifier
from node.results.provenance import Provenance
from node.results.writer import ResultSet, write_results
from node.routing import DEFAULT_RULES, Router
from node.testing.synthetic import boxed_response, lesion_box, write_cr_study, write_file
from tests.corpus import catch_all_router, corpus_results
from tests.helpers import DCMTK_ENV, PYDICOM_TEST_FILES

PROVENANCE = Provenance("replay (recorded responses; TEST RESULT, not a model output)", True)
RULES = DEFAULT_RULES


def _cr(tmp_path: Path, **attributes: object) -> Path:
    """A synthetic chest CR (its phantom lesion brighter than the body), with ``attributes`` set."""
    [path] = write_cr_study(tmp_path / "cr", size=256).files
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    write_file(ds, path)
    return path


def _written(tmp_path: Path, path: Path, **kwargs: object) -> ResultSet:
    """The results of the study of ``path`` read through the node's routing and imaging, the model boxing
    its lesion: SR, SEG, GSPS, KOS, SC and one ORU."""
    ds = pydicom.dcmread(path)
    prepared = prepare_study(str(ds.StudyInstanceUID), [path], Router.from_file(RULES),
                             load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"])
    read = read_from_text(prepared, boxed_response(ds, "Mass"), PROVENANCE.model_identity, True)
    return write_results(read, tmp_path / "out", {"ehr": Hl7Party()},
                         secondary_capture=True, **kwargs)


def _object(result: ResultSet, prefix: str) -> Path:
    [path] = [item.path for item in result.dicom if item.path.name.startswith(prefix)]
    return path


def test_a_deidentified_sources_results_say_how_it_was_deidentified(tmp_path: Path, dciodvfy_errors) -> None:
    """Item 10: Patient Identity Removed YES comes with its De-identification Method (Type 1C) in every
    result object; a source that states none gets a method saying so."""
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    path = _cr(tmp_path, PatientIdentityRemoved="YES", DeidentificationMethod="DICOM PS3.15 E.1",
               DeidentificationMethodCodeSequence=[code])
    result = _written(tmp_path, path)
    for item in result.dicom:
        ds = pydicom.dcmread(item.path, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES", item.path.name
        assert ds.DeidentificationMethod == "DICOM PS3.15 E.1", item.path.name
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100", item.path.name
        assert dciodvfy_errors(item.path) == [], item.path.name
    unstated = _written(tmp_path / "unstated", _cr(tmp_path / "unstated", PatientIdentityRemoved="YES"))
    for item in unstated.dicom:
        assert pydicom.dcmread(item.path, stop_before_pixels=True).DeidentificationMethod, item.path.name
        assert dciodvfy_errors(item.path) == [], item.path.name


@pytest.mark.usefixtures("dcmtk")
def test_the_gsps_of_a_monochrome1_radiograph_shows_it_as_the_source_does(tmp_path: Path) -> None:
    """Item 18: dcmtk renders the source alone and through its GSPS with the same polarity (the lesion
    brighter or darker than the body in both): INVERSE Presentation LUT Shape for MONOCHROME1."""
    path = _cr(tmp_path, PhotometricInterpretation="MONOCHROME1")
    source = pydicom.dcmread(path)
    state = build_presentation_state(read_from_text(
        prepare_study(str(source.StudyInstanceUID), [path], Router.from_file(RULES),
                      load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"]),
        boxed_response(source, "Mass"), PROVENANCE.model_identity, True).findings, [source], PROVENANCE, 1, "cr",
        None)
    assert state.PresentationLUTShape == "INVERSE"
    state.save_as(tmp_path / "gsps.dcm", enforce_file_format=True)
    column_min, row_min, column_max, row_max = (int(v) for v in lesion_box(source))

    def contrast(*pstate: str) -> float:
        out = tmp_path / f"render{len(pstate)}.pgm"
        subprocess.run(["dcmp2pgm", *pstate, str(path), str(out)], check=True, capture_output=True, env=DCMTK_ENV)
        pixels = np.asarray(Image.open(out), dtype=float)
        return pixels[row_min:row_max, column_min:column_max].mean() - pixels.mean()  # the lesion against the rest

    alone, through_gsps = contrast(), contrast("-p", str(tmp_path / "gsps.dcm"))
    assert alone != 0 and np.sign(alone) == np.sign(through_gsps), (alone, through_gsps)


def test_the_srs_segment_reference_follows_tid_1410(tmp_path: Path, dciodvfy_errors, sr_validator_errors) -> None:
    """Item 19: the box's segment is its own TID 1410 group — Referenced Segmentation Frame (121214) with
    its Source image for segmentation (121233), under the box's tracking UID — never beside the image
    region; pixelmed finds no error."""
    result = _written(tmp_path, _cr(tmp_path))
    sr, seg = pydicom.dcmread(_object(result, "sr")), pydicom.dcmread(_object(result, "seg"))
    [measurements] = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    names = [{entry.ConceptNameCodeSequence[0].CodeValue for entry in group.ContentSequence}
             for group in measurements.ContentSequence]
    assert len(names) == 2
    region, segment = names
    assert "111030" in region and "121214" not in region  # the image region alone
    assert {"121214", "121233"} <= segment and "111030" not in segment
    uids = {str(entry.UID) for group in measurements.ContentSequence for entry in group.ContentSequence
            if entry.ValueType == "UIDREF"}
    assert uids == {str(seg.SegmentSequence[0].TrackingUID)}
    [frame] = [entry for entry in measurements.ContentSequence[1].ContentSequence
               if entry.ConceptNameCodeSequence[0].CodeValue == "121214"]
    assert frame.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert dciodvfy_errors(_object(result, "sr")) == []
    assert sr_validator_errors([_object(result, "sr")]) == {_object(result, "sr"): []}


def test_key_object_selection_items_have_no_concept_name(tmp_path: Path, sr_validator_errors) -> None:
    """Item 21: TID 2010 forbids a concept name on the IMAGE items, which highdicom writes; pixelmed finds
    no error."""
    result = _written(tmp_path, _cr(tmp_path))
    kos = pydicom.dcmread(_object(result, "kos"))
    images = [item for item in kos.ContentSequence if item.ValueType == "IMAGE"]
    assert images and all("ConceptNameCodeSequence" not in item for item in images)
    assert sr_validator_errors([_object(result, "kos")]) == {_object(result, "kos"): []}


def test_no_oru_is_sent_for_a_source_without_a_patient_id(tmp_path: Path) -> None:
    """Item 22: PID-3 would be empty: the ORU is held, named with its reason; the DICOM results are written."""
    result = _written(tmp_path, _cr(tmp_path, PatientID=None))
    assert not result.messages and _object(result, "sr").exists()
    [(kind, error)] = result.omitted
    assert kind == "oru" and isinstance(error, NoPatientIdentifier) and "Patient ID" in str(error)


def test_results_name_the_ai_as_ihe_air_asks(tmp_path: Path, dciodvfy_errors) -> None:
    """Item 25: Contributing Equipment purpose (Newcode1, 99IHE, "Processing Algorithm"), IHE AIR's, with the
    Device UID in every object; the SR's General Equipment names the model and the node's version; no Laterality for an
    unpaired body part (a chest), an empty one for a paired body part of unknown side (a breast)."""
    result = _written(tmp_path, _cr(tmp_path, BodyPartExamined="CHEST"))
    for item in result.dicom:
        ds = pydicom.dcmread(item.path, stop_before_pixels=True)
        [equipment] = [item for item in ds.ContributingEquipmentSequence if item.Manufacturer == "qoq-node"]
        purpose = equipment.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "Newcode1", "99IHE", "Processing Algorithm"), item.path.name
        assert equipment.DeviceUID, item.path.name
        if item.path.name.startswith(("gsps", "sc")):
            assert "Laterality" not in ds and ds.BodyPartExamined == "CHEST", item.path.name
        assert dciodvfy_errors(item.path) == [], item.path.name
    sr = pydicom.dcmread(_object(result, "sr"))
    assert sr.ManufacturerModelName == PROVENANCE.model_identity[:64] and sr.SoftwareVersions.startswith("qoq-node ")
    breast = _written(tmp_path / "breast", _cr(tmp_path / "breast", BodyPartExamined="BREAST"))
    for prefix in ("gsps", "sc"):
        assert pydicom.dcmread(_object(breast, prefix), stop_before_pixels=True).Laterality == "", prefix


def _corpus_file(name: str) -> Path:
    return next(PYDICOM_TEST_FILES.rglob(name))


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm", "SC_rgb_dcmtk_+eb+cr.dcm"])
def test_seg_pixel_measures_have_a_slice_thickness(tmp_path: Path, name: str, dciodvfy_errors) -> None:
    """Items 10 and 20: a source with Pixel Spacing but no Slice Thickness, with or without a Frame of
    Reference (an NM Secondary Capture with one and no orientation): the SEG has Slice Thickness and Patient
    Orientation, dciodvfy finds no error and highdicom reads it back."""
    result = corpus_results(_corpus_file(name), tmp_path / "out", catch_all_router())
    assert result is not None and not result.omitted
    path = _object(result, "seg")
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness > 0
    assert "PatientOrientation" in seg


def test_a_lossy_flag_without_its_method_is_never_copied(tmp_path: Path, dciodvfy_errors) -> None:
    """Item 23: Lossy Image Compression 01 without a method: the SEG names the method the transfer syntax
    implies, or none when none does (the SEG's own pixels are not lossy: highdicom writes 00)."""
    result = corpus_results(_corpus_file("JPEG2000.dcm"), tmp_path / "j2k", catch_all_router())
    seg = pydicom.dcmread(_object(result, "seg"))
    assert (seg.LossyImageCompression, seg.LossyImageCompressionMethod) == ("01", "ISO_15444_1")
    assert dciodvfy_errors(_object(result, "seg")) == []
    plain = _written(tmp_path, _cr(tmp_path, LossyImageCompression="01"))
    assert pydicom.dcmread(_object(plain, "seg")).get("LossyImageCompression", "00") == "00"
    assert dciodvfy_errors(_object(plain, "seg")) == []


def test_a_frame_of_reference_that_is_the_study_uid_is_not_copied(tmp_path: Path, dciodvfy_errors) -> None:
    """pydicom's DICOMDIR test files reuse the Study Instance UID as Frame of Reference UID: the SEG gets one
    of its own."""
    result = corpus_results(_corpus_file("5641"), tmp_path / "out", catch_all_router())
    seg = pydicom.dcmread(_object(result, "seg"))
    assert seg.FrameOfReferenceUID != seg.StudyInstanceUID
    assert dciodvfy_errors(_object(result, "seg")) == []


def test_presentation_states_only_for_the_images_they_can_show(tmp_path: Path, dciodvfy_errors) -> None:
    """Item 24: no GSPS for a PALETTE COLOR image (nor a CSPS, which takes three samples); a 2-frame RGB
    Secondary Capture (a single-frame IOD) gets its CSPS and an SR whose references name no frame."""
    palette = corpus_results(_corpus_file("examples_palette.dcm"), tmp_path / "palette", catch_all_router())
    assert not palette.omitted
    assert not [item for item in palette.dicom if item.path.name.startswith(("gsps", "csps"))]
    two_frames = corpus_results(_corpus_file("SC_rgb_rle_2frame.dcm"), tmp_path / "sc", catch_all_router())
    assert not two_frames.omitted
    for prefix in ("csps", "sr"):
        assert dciodvfy_errors(_object(two_frames, prefix)) == [], prefix
    assert "ReferencedFrameNumber" not in str(pydicom.dcmread(_object(two_frames, "sr")).ContentSequence)


def test_an_oblique_patient_orientation_is_kept_in_the_sc(tmp_path: Path, dciodvfy_errors) -> None:
    """highdicom takes only single-letter orientations: an oblique one ("PF") still gets its SC, with it."""
    path = _corpus_file("J2K_pixelrep_mismatch.dcm")
    result = corpus_results(path, tmp_path / "out", catch_all_router())
    assert not result.omitted
    sc = pydicom.dcmread(_object(result, "sc"))
    assert list(sc.PatientOrientation) == list(pydicom.dcmread(path).PatientOrientation)
    assert dciodvfy_errors(_object(result, "sc")) == []


def test_the_image_library_names_only_acquisition_modalities(tmp_path: Path, sr_validator_errors) -> None:
    """TID 1602's Modality takes CID 29 (Acquisition Modality): a Secondary Capture's OT is left out of its
    entry; pixelmed finds no error."""
    result = corpus_results(_corpus_file("SC_rgb_rle.dcm"), tmp_path / "out", catch_all_router())
    sr = _object(result, "sr")
    [library] = [item for item in pydicom.dcmread(sr).ContentSequence
                 if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    [entry] = library.ContentSequence[0].ContentSequence
    assert "121139" not in {item.ConceptNameCodeSequence[0].CodeValue for item in entry.ContentSequence}
    assert sr_validator_errors([sr]) == {sr: []}
