"""Comprehensive 3D SR, TID 1500 Measurement Report: the AI read as a structured report.

Device observer (the node, the model); procedure reported; one planar ROI group per box with a
closed POLYLINE image region on its source image and frame, the box label as finding type; one
group with the answer labels as qualitative evaluations, the reasoning as TEXT (Comment), the
raw model text verbatim as TEXT, the research-use notice as TEXT; each waveform the model read (an
ECG) as a WAVEFORM "Source of Measurement" under the root — never an image region: a waveform has
no pixels; VerificationFlag UNVERIFIED; the private coding scheme declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ImageContentItem,
    ImageLibraryEntryDescriptors,
    ImageRegion,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    NumContentItem,
    ObservationContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
    WaveformContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

from node.context.text import GivenContext
from node.findings import Findings
from node.results.codes import PRIVATE_SCHEME, PRIVATE_SCHEME_NAME, label_concept
from node.results.dicom_text import raw_value, text_value
from node.results.gsps import box_polyline, names_frames
from node.results.provenance import (
    MANUFACTURER,
    Provenance,
    box_tracking,
    clip,
    contributing_equipment,
    describe_equipment,
    device_observer,
    label_series,
    result_uid,
)
from node.results.segment_reference import SegmentReference, segment_group

SERIES_NUMBER = 9902
#: SCT 363679005 "Imaging procedure": CID 100's generic code.
PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
NO_ANSWER = CodedConcept("NO-ANSWER", PRIVATE_SCHEME, "No answer from the model")
REASONING = CodedConcept("121106", "DCM", "Comment")
RAW_TEXT = CodedConcept("RAW-MODEL-TEXT", PRIVATE_SCHEME, "Raw model output")
NOTICE = CodedConcept("AI-NOTICE", PRIVATE_SCHEME, "Notice on the use of this result")
#: DCM 121112 "Source of Measurement": the waveform the model read.
SOURCE = CodedConcept("121112", "DCM", "Source of Measurement")
SOURCE_IMAGE = CodedConcept("260753009", "SCT", "Source")
IMAGING_MEASUREMENTS = "126010"
PIXELS = CodedConcept("{pixels}", "UCUM", "Pixels")
#: TID 1500 row 12: the container of qualitative evaluations of the whole report.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
#: What the model was given besides the study's images: the context paragraph, each input study, the labs.
CONTEXT = CodedConcept("AI-CONTEXT", PRIVATE_SCHEME, "Patient context given to the model")
CONTEXT_TEXT = CodedConcept("AI-CONTEXT-TEXT", PRIVATE_SCHEME, "Clinical context as given to the model")
INPUT_STUDY = CodedConcept("AI-INPUT", PRIVATE_SCHEME, "Study read by the model")
LOINC_SYSTEMS = frozenset({"LN", "LOINC"})
TEXT_LIMIT = 1_000_000  # UT holds up to 2^32-2 bytes; keep reports a reasonable size


#: DICOM CID 100 (Quantitative Diagnostic Imaging Procedures) by modality, where the source names no procedure.
PROCEDURE_BY_MODALITY = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion, "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion, "PT": codes.cid100.PETUnspecifiedBodyRegion,
    **dict.fromkeys(("CR", "DX", "MG", "RF", "XA", "IO", "PX"), codes.cid100.XRUnspecifiedBodyRegion),
}


def procedure_reported(source: Dataset) -> CodedConcept:
    """What was examined: the source's own procedure code (Procedure Code Sequence, else the Requested
    Procedure Code of its request), else its modality's CID 100 code (e.g. LOINC 43468-8 "XR unspecified
    body region"), else CID 100's generic (363679005, SCT, "Imaging procedure")."""
    for sequence in ("ProcedureCodeSequence", "RequestedProcedureCodeSequence"):
        items = source.get(sequence) or []
        if items and items[0].get("CodeValue") and items[0].get("CodingSchemeDesignator"):
            item = items[0]
            return CodedConcept(str(item.CodeValue), str(item.CodingSchemeDesignator),
                                clip(str(item.get("CodeMeaning", "") or item.CodeValue), 64))
    by_modality = PROCEDURE_BY_MODALITY.get(str(source.get("Modality", "")))
    return CodedConcept(by_modality.value, by_modality.scheme_designator, by_modality.meaning) if by_modality \
        else PROCEDURE


#: DICOM CID 29 (Acquisition Modality): what TID 1602's Modality takes.
ACQUISITION_MODALITIES = frozenset(code.value for code in codes.cid29.concepts.values())


def _acquisition_modality(item: Dataset) -> bool:
    """False for a TID 1602 Modality item whose code is no acquisition modality (OT, RTDOSE: not in CID 29),
    which the entry then goes without; True for every other item."""
    return item.ConceptNameCodeSequence[0].CodeValue != "121139" or \
        item.ConceptCodeSequence[0].CodeValue in ACQUISITION_MODALITIES


def _image_library(images: Sequence[Dataset]) -> ContainerContentItem:
    """TID 1600 Image Library: one entry per image the model read, with highdicom's descriptors (TID
    1602–1604) where the image has what they need, else only its modality and matrix size (a DX
    without Imager Pixel Spacing or a CR without Patient Orientation is still listed)."""
    entries = []
    for image in images:
        entry = ImageContentItem(SOURCE_IMAGE, str(image.SOPClassUID), str(image.SOPInstanceUID),
                                 relationship_type="CONTAINS")
        try:
            descriptors = list(ImageLibraryEntryDescriptors(image))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            descriptors = [NumContentItem(name, int(value), PIXELS, relationship_type="HAS ACQ CONTEXT")
                           for name, value in ((codes.DCM.PixelDataRows, image.Rows),
                                               (codes.DCM.PixelDataColumns, image.Columns))]
        entry.ContentSequence = DicomSequence([item for item in descriptors if _acquisition_modality(item)])
        entries.append(entry)
    group = ContainerContentItem(codes.DCM.ImageLibraryGroup, relationship_type="CONTAINS")
    group.ContentSequence = DicomSequence(entries)
    library = ContainerContentItem(codes.DCM.ImageLibrary, relationship_type="CONTAINS")
    library.ContentSequence = DicomSequence([group])
    return library


def _qualitative_evaluations(findings: Findings, provenance: Provenance) -> ContainerContentItem:
    """TID 1500's Qualitative Evaluations: the answer (coded), the reasoning, the raw text and the notice.
    Outside Imaging Measurements, whose groups viewers expect to carry geometry."""
    container = ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = DicomSequence([
        CodeContentItem(codes.DCM.Finding, label_concept(label), relationship_type="CONTAINS")
        for label in findings.labels] or [CodeContentItem(codes.DCM.Finding, NO_ANSWER, relationship_type="CONTAINS")])
    for concept, text in ((REASONING, text_value(findings.reasoning, TEXT_LIMIT)),
                          (RAW_TEXT, raw_value(findings.raw_text, TEXT_LIMIT)),
                          (NOTICE, text_value(provenance.banner, TEXT_LIMIT))):
        if text:
            container.ContentSequence.append(TextContentItem(name=concept, value=text, relationship_type="CONTAINS"))
    return container


def _context_container(given: GivenContext) -> ContainerContentItem:
    """What the model was given besides the study: the context paragraph, each study read (the priors and
    the ECG are also listed as Pertinent Other Evidence), and each LOINC-coded numeric lab as a NUM."""
    container = ContainerContentItem(CONTEXT, relationship_type="CONTAINS")
    items: list = [TextContentItem(INPUT_STUDY, text_value(line, TEXT_LIMIT), relationship_type="CONTAINS")
                   for line in given.inputs]
    if given.text:
        items.append(TextContentItem(CONTEXT_TEXT, text_value(given.text, TEXT_LIMIT), relationship_type="CONTAINS"))
    for lab in given.labs:
        if lab.coding_system.upper() in LOINC_SYSTEMS and lab.numeric is not None and lab.code.strip():
            unit = lab.unit.strip() or "1"
            items.append(NumContentItem(CodedConcept(clip(lab.code.strip(), 16), "LN", clip(lab.name or lab.code, 64)),
                                        lab.numeric, CodedConcept(clip(unit, 16), "UCUM", clip(unit, 64)),
                                        relationship_type="CONTAINS"))
    container.ContentSequence = DicomSequence(items)
    return container


def build_sr(
    findings: Findings,
    sources: Sequence[Dataset],
    provenance: Provenance,
    study_version: int,
    task: str,
    previous: Sequence[Dataset] = (),
    analysed_at: datetime | None = None,
    segments: Mapping[str, SegmentReference] | None = None,
    given: GivenContext | None = None,
) -> Dataset:
    """The TID 1500 report over ``sources`` (the images the model read); ``previous``: the reports
    of earlier study versions it supersedes (Predecessor Documents Sequence); ``analysed_at``: when
    the analysis began (the report's Content Date/Time; default: now); ``segments``: the SEG segment of
    each box, by its Tracking UID, which the box's measurement group then references; ``given``: what the
    model was given besides the study (a container of it when there is any)."""
    study_uid = str(sources[0].StudyInstanceUID)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    algorithm = hd.sr.AlgorithmIdentification(clip(provenance.model_identity, 64), clip(provenance.node_version, 64))

    def uid(kind: str) -> str:
        return result_uid(study_uid, study_version, task, provenance, kind)

    groups: list = []
    for index, box in enumerate(findings.boxes, start=1):
        source = by_uid.get(box.source.frame.sop_instance_uid)
        if source is None or "PixelData" not in source:  # boxes go on images only
            continue
        multi = names_frames(source)
        region = ImageRegion(
            graphic_type="POLYLINE",
            graphic_data=box_polyline(box),
            source_image=SourceImageForRegion(
                str(source.SOPClassUID), str(source.SOPInstanceUID), [box.source.frame.frame] if multi else None
            ),
        )
        tracking_id, tracking_uid = box_tracking(study_uid, study_version, task, provenance, index)
        tracking = TrackingIdentifier(uid=tracking_uid, identifier=tracking_id)
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=region, finding_type=label_concept(box.label),
            algorithm_id=algorithm,
        ))
        segment = (segments or {}).get(tracking_uid)
        segmented = segment_group(segment, tracking, label_concept(box.label), algorithm) if segment else None
        if segmented is not None:
            groups.append(segmented)
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device_observer(provenance)),
        procedure_reported=procedure_reported(sources[0]),
        # highdicom 0.28 insists on a measurement group: a report without boxes gets a stand-in, taken out below
        imaging_measurements=groups or [MeasurementsAndQualitativeEvaluations(
            TrackingIdentifier(uid=uid("no-box"), identifier="none"))],
    )
    sr = Comprehensive3DSR(
        evidence=[*sources, *{id(segment.seg): segment.seg for segment in (segments or {}).values()}.values()],
        content=report,
        series_instance_uid=uid("sr-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=uid("sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=list(previous) or None,
        contributing_equipment=[contributing_equipment(provenance)],
    )
    # Joined once the tree is built: highdicom 0.28's report template has no Qualitative Evaluations
    # container, and it builds WAVEFORM items but cannot parse them back.
    if not groups:  # no box: TID 1500's Imaging Measurements (user option) is left out
        sr.ContentSequence = [item for item in sr.ContentSequence
                              if item.ConceptNameCodeSequence[0].CodeValue != IMAGING_MEASUREMENTS]
    images = [ds for ds in sources if "PixelData" in ds]
    if images:  # TID 1500 row 5, before Imaging Measurements
        at = next((n for n, item in enumerate(sr.ContentSequence) if item.ValueType == "CONTAINER"),
                  len(sr.ContentSequence))
        sr.ContentSequence.insert(at, _image_library(images))
    sr.ContentSequence.append(_qualitative_evaluations(findings, provenance))
    if given is not None and given.any:
        sr.ContentSequence.append(_context_container(given))
    sr.ContentSequence.extend(
        WaveformContentItem(SOURCE, str(source.SOPClassUID), str(source.SOPInstanceUID), relationship_type="CONTAINS")
        for source in sources if "WaveformSequence" in source)
    if analysed_at is not None:  # the observation's time: when the model read the study, not when this was written
        sr.ContentDate, sr.ContentTime = analysed_at.strftime("%Y%m%d"), analysed_at.strftime("%H%M%S.%f")  # type: ignore[assignment]  # highdicom types them DA, TM
    describe_equipment(sr, provenance)
    label_series(sr, sources[0], provenance, "sr")
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "qoq-node"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
