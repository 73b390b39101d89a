"""The SR's reference to a box's SEG segment, as TID 1410 has it: a measurement group of its own (the
template makes the image region and the segmentation exclusive) with a Referenced Segmentation Frame
(121214, DCM) and its Source image for segmentation (121233, DCM), under the box's tracking identifier."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import (
    CodedConcept,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    ReferencedSegmentationFrame,
    SourceImageForSegmentation,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class SegmentReference:
    """Where a box's segment is: the SEG that holds it and the segment's number."""

    seg: Dataset
    segment_number: int


def _segmentation_frame(segment: SegmentReference) -> ReferencedSegmentationFrame | None:
    """The SEG frame holding the segment, with the source image (and frame) it was derived from; None when
    the SEG holds no frame of it (highdicom leaves empty frames out). Built here, not with highdicom 0.28's
    ``ReferencedSegmentationFrame.from_segmentation``, which reads the segment number only from the per-frame
    groups (highdicom puts it in the shared ones for a single segment) and gives the source image the SEG's
    frame number instead of the source's."""
    seg = segment.seg
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        identification = item.get("SegmentIdentificationSequence") or shared
        derivations = item.get("DerivationImageSequence") or []
        if int(identification[0].ReferencedSegmentNumber) != segment.segment_number or not derivations:
            continue
        source = derivations[0].SourceImageSequence[0]
        frame = source.get("ReferencedFrameNumber")
        reference = ReferencedSegmentationFrame(
            str(seg.SOPClassUID), str(seg.SOPInstanceUID), number, segment.segment_number,
            SourceImageForSegmentation(str(source.ReferencedSOPClassUID), str(source.ReferencedSOPInstanceUID),
                                       [int(frame)] if frame else None))
        # The frame names its segment: PS3.3 C.17.3.3 forbids Referenced Segment Number beside a Referenced
        # Frame Number, which highdicom 0.28 writes both of.
        del reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
        return reference
    return None


def segment_group(segment: SegmentReference, tracking: TrackingIdentifier, finding_type: CodedConcept,
                   algorithm: hd.sr.AlgorithmIdentification) -> PlanarROIMeasurementsAndQualitativeEvaluations | None:
    """The box's segment as its own TID 1410 group (the template makes the image region and the segmentation
    frame exclusive): a Referenced Segmentation Frame (121214, DCM) and its Source image for segmentation
    (121233, DCM), under the box's Tracking Identifier and UID; None when the SEG holds no frame of it."""
    frame = _segmentation_frame(segment)
    if frame is None:
        return None
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_segment=frame, finding_type=finding_type, algorithm_id=algorithm)
