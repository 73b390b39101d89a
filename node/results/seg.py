"""Binary DICOM Segmentations of the AI boxes, on the source images: one segment per box, rasterised
on the frame it sits on, labelled with the box's finding and carrying the same Tracking ID and UID as
the box's measurement group in the SR (so a viewer or a downstream system links the two), with the
algorithm identified (family "Artificial Intelligence", the model, the node's version)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.spatial import get_image_coordinate_system
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage

from node.findings import Findings, LocatedBox
from node.results.codes import label_concept
from node.results.provenance import (
    MANUFACTURER,
    Provenance,
    box_tracking,
    clip,
    contributing_equipment,
    label_series,
    result_uid,
    software_versions,
)

SERIES_NUMBER = 9903
#: Red (sRGB 255, 0, 0) as CIELab in DICOM's scaling: L* × 65535/100, (a*, b* + 128) × 65535/255.
BOX_CIELAB = (34891, 53351, 50167)

#: Multi-frame classes without geometry → the single-frame class whose header a frame of them is
#: segmented as (see :func:`_frame_view`).
_SINGLE_FRAME_CLASS = {UltrasoundMultiFrameImageStorage: UltrasoundImageStorage}
_MULTI_FRAME_ONLY = frozenset({"PixelData", "NumberOfFrames", "FrameIncrementPointer", "FrameTime",
                               "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate"})


@dataclass(frozen=True)
class _Group:
    """The source images one SEG covers; ``cine_frame``: only that frame of a multi-frame image
    without geometry."""

    images: list[Dataset]
    cine_frame: int | None = None

    @property
    def mask_frames(self) -> int:
        """How many frames the SEG's mask has: one per single-frame image, one per frame of the one
        multi-frame image, or one for a cine frame."""
        return 1 if self.cine_frame else max(len(self.images), _frames(self.images[0]))

    def mask_frame(self, image_position: int, frame: int) -> int:
        """The SEG mask frame of a box on ``frame`` (1-based) of the group's ``image_position``-th image:
        one frame per single-frame image, or per frame of the one multi-frame image, or the only one."""
        return 0 if self.cine_frame else image_position + frame - 1


def _rasterise(mask: np.ndarray, box: LocatedBox) -> None:
    """Set every pixel the box covers (pixel-edge coordinates) in a rows × columns mask."""
    s = box.source
    rows, columns = mask.shape
    r0, r1 = max(0, math.floor(s.row_min)), min(rows, math.ceil(s.row_max))
    c0, c1 = max(0, math.floor(s.column_min)), min(columns, math.ceil(s.column_max))
    mask[r0:r1, c0:c1] = True


def _frames(image: Dataset) -> int:
    return int(image.get("NumberOfFrames", 1) or 1)


def _segmentable_groups(boxes: Sequence[LocatedBox], by_uid: dict[str, Dataset],
                        sources: Sequence[Dataset]) -> list[_Group]:
    """The source images one SEG each covers, in the order of the boxes: with patient geometry (CT,
    MR), every single-frame key image of the box's series and size, or an enhanced multi-frame image
    alone; without it (CR/DX, US, photographs), the box's image alone, or the box's frame of a cine
    ultrasound loop alone, since highdicom 0.28 places images without geometry only one frame to a
    SEG. Boxes on other multi-frame images without geometry are left out; the SR and GSPS carry them."""
    groups: dict[str, _Group] = {}
    for box in boxes:
        image = by_uid[box.source.frame.sop_instance_uid]
        if get_image_coordinate_system(image) is not None:
            if _frames(image) > 1:
                groups.setdefault(str(image.SOPInstanceUID), _Group([image]))
            else:
                groups.setdefault(f"{image.SeriesInstanceUID}/{image.Rows}x{image.Columns}", _Group([
                    ds for ds in sources if ds.SeriesInstanceUID == image.SeriesInstanceUID and _frames(ds) == 1
                    and (ds.Rows, ds.Columns) == (image.Rows, image.Columns)]))
        elif _frames(image) == 1:
            groups.setdefault(str(image.SOPInstanceUID), _Group([image]))
        elif image.SOPClassUID in _SINGLE_FRAME_CLASS:
            frame = box.source.frame.frame
            groups.setdefault(f"{image.SOPInstanceUID}/{frame}", _Group([image], frame))
    return list(groups.values())


def _frame_view(image: Dataset) -> Dataset:
    """The header of a cine image as a single-frame image of the matching class: what highdicom 0.28
    segments (it refuses multi-frame images without geometry). :func:`_point_at_frame` then points
    the SEG's references back at the real image and frame."""
    view = Dataset()
    for element in image:
        if element.keyword not in _MULTI_FRAME_ONLY:
            view.add(copy.deepcopy(element))
    view.SOPClassUID = _SINGLE_FRAME_CLASS[image.SOPClassUID]
    return view


def _point_at_frame(seg: Dataset, image: Dataset, frame: int) -> None:
    """Make a SEG built on :func:`_frame_view` reference ``frame`` of the real multi-frame ``image``."""
    references = [item for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence]
    sources = [*seg.get("SourceImageSequence", []),
               *(source for item in seg.PerFrameFunctionalGroupsSequence
                 for derivation in item.DerivationImageSequence for source in derivation.SourceImageSequence)]
    for reference in references + sources:
        reference.ReferencedSOPClassUID = image.SOPClassUID
    for source in sources:
        source.ReferencedFrameNumber = frame


def build_segs(
    findings: Findings, sources: Sequence[Dataset], provenance: Provenance, study_version: int, task: str
) -> list[Dataset]:
    """The SEGs of the boxes, in one result series: one per series with patient geometry (or per
    enhanced multi-frame image), one per image or cine frame without it (see
    :func:`_segmentable_groups`). Empty when there is no box to segment."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes = [box for box in findings.boxes if box.source.frame.sop_instance_uid in by_uid]
    numbers = {id(box): number for number, box in enumerate(findings.boxes, start=1)}  # the SR's box numbers
    return [_build_seg(boxes, numbers, group, provenance, study_version, task, number)
            for number, group in enumerate(_segmentable_groups(boxes, by_uid, sources), start=1)]


def _build_seg(boxes: Sequence[LocatedBox], box_numbers: dict[int, int], group: _Group, provenance: Provenance,
               study_version: int, task: str, number: int) -> Dataset:
    """One SEG over a group's images (single-frame images of one series and size, one multi-frame
    image, or one frame of a cine loop) of the boxes that lie on them: a mask frame per source image,
    or per frame of the multi-frame one."""
    images = group.images
    first = images[0]
    position = {str(ds.SOPInstanceUID): n for n, ds in enumerate(images)}
    boxes = [box for box in boxes if box.source.frame.sop_instance_uid in position
             and group.cine_frame in (None, box.source.frame.frame)]
    mask = np.zeros((group.mask_frames, int(first.Rows), int(first.Columns), len(boxes)), dtype=bool)
    for segment, box in enumerate(boxes):
        slot = group.mask_frame(position[box.source.frame.sop_instance_uid], box.source.frame.frame)
        _rasterise(mask[slot, :, :, segment], box)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=clip(provenance.model_identity, 64), family=codes.cid7162.ArtificialIntelligence,
        version=clip(provenance.node_version, 64),
    )
    study_uid = str(first.StudyInstanceUID)
    descriptions = []
    for segment, box in enumerate(boxes, start=1):
        tracking_id, tracking_uid = box_tracking(study_uid, study_version, task, provenance, box_numbers[id(box)])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=segment,
            segment_label=clip(box.label, 64),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=label_concept(box.label),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
            tracking_id=tracking_id,
            tracking_uid=tracking_uid,
        ))
    seg = hd.seg.Segmentation(
        source_images=[_frame_view(first)] if group.cine_frame else images,
        pixel_array=mask,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=result_uid(study_uid, study_version, task, provenance, "seg-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(study_uid, study_version, task, provenance,
                                    "seg" if number == 1 else f"seg-{number}"),
        instance_number=number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=clip(provenance.model_identity, 64),
        software_versions=software_versions(provenance),
        device_serial_number="0",
        content_label="AI_BOXES",
        contributing_equipment=[contributing_equipment(provenance)],
        content_description=clip(provenance.banner, 64),
    )
    for description in seg.SegmentSequence:  # the colour every viewer shows the boxes in (red, as the SR's)
        description.RecommendedDisplayCIELabValue = list(BOX_CIELAB)
    if group.cine_frame:
        _point_at_frame(seg, first, group.cine_frame)
    label_series(seg, first, provenance, "seg")
    if get_image_coordinate_system(first) is None and "PatientOrientation" not in seg:
        # General Image Patient Orientation (Type 2C) for sources without plane geometry (US, XC, an NM
        # Secondary Capture with a Frame of Reference but no orientation)
        seg.PatientOrientation = first.get("PatientOrientation", "")
    if "FrameOfReferenceUID" not in first:
        _add_pixel_measures(seg, first)
    _complete_slice_thickness(seg, first)
    return seg


def _add_pixel_measures(seg: Dataset, source: Dataset) -> None:
    """Pixel Measures in the shared functional groups of a SEG on an image without patient geometry
    (CR, DX, MG, US): the source's pixel spacing (Pixel Spacing, else Imager Pixel Spacing, else 1 mm as
    a nominal spacing; the slice thickness comes from :func:`_complete_slice_thickness`). highdicom leaves
    the macro out there; OHIF reads it from every SEG and shows nothing but an error without it (see the
    conformance statement)."""
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing") or [1.0, 1.0]
    measures = Dataset()
    measures.PixelSpacing = [float(value) for value in spacing]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" not in shared:
        shared.PixelMeasuresSequence = [measures]
    if "PlaneOrientationSequence" not in shared:
        shared.PlaneOrientationSequence = [orientation]


def _complete_slice_thickness(seg: Dataset, source: Dataset) -> None:
    """Slice Thickness in every Pixel Measures item that lacks it (Type 1C, and what highdicom's own reader
    needs; highdicom leaves it out when the source has none): the source's Slice Thickness, else its Spacing
    Between Slices, else a nominal 1 mm."""
    thickness = float(source.get("SliceThickness") or source.get("SpacingBetweenSlices") or 1.0)
    groups = [*seg.SharedFunctionalGroupsSequence, *seg.get("PerFrameFunctionalGroupsSequence", [])]
    for measures in (item for group in groups for item in group.get("PixelMeasuresSequence", [])):
        if measures.get("SliceThickness") is None:
            measures.SliceThickness = thickness
