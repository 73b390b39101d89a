"""Binary DICOM Segmentations of the AI boxes, on the source images: one segment per label, each
box rasterised on the frame it sits on, with the algorithm identified (family "Artificial
Intelligence", the model, the node's version)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.spatial import get_image_coordinate_system
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node.findings import Findings, LocatedBox
from node.results.codes import label_concept
from node.results.provenance import MANUFACTURER, Provenance, clip, label_series, result_uid

SERIES_NUMBER = 9903


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
                        sources: Sequence[Dataset]) -> list[list[Dataset]]:
    """The source images one SEG each covers, in the order of the boxes: with patient geometry (CT,
    MR), every single-frame key image of the box's series and size, or an enhanced multi-frame image
    alone; without it (CR/DX, US, photographs), the box's image alone, since highdicom 0.28 places
    images without geometry only one to a SEG. Boxes on multi-frame images without geometry (cine
    ultrasound) are left out; the SR and GSPS still carry them."""
    groups: dict[str, list[Dataset]] = {}
    for box in boxes:
        image = by_uid[box.source.frame.sop_instance_uid]
        if get_image_coordinate_system(image) is None:
            if _frames(image) == 1:
                groups.setdefault(str(image.SOPInstanceUID), [image])
        elif _frames(image) > 1:
            groups.setdefault(str(image.SOPInstanceUID), [image])
        else:
            groups.setdefault(f"{image.SeriesInstanceUID}/{image.Rows}x{image.Columns}", [
                ds for ds in sources if ds.SeriesInstanceUID == image.SeriesInstanceUID and _frames(ds) == 1
                and (ds.Rows, ds.Columns) == (image.Rows, image.Columns)])
    return list(groups.values())


def build_segs(
    findings: Findings, sources: Sequence[Dataset], provenance: Provenance, study_version: int, task: str
) -> list[Dataset]:
    """The SEGs of the boxes, in one result series: one per series with patient geometry (or per
    enhanced multi-frame image), one per image without it (see :func:`_segmentable_groups`). Empty
    when there is no box to segment."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes = [box for box in findings.boxes if box.source.frame.sop_instance_uid in by_uid]
    return [_build_seg(boxes, images, provenance, study_version, task, number)
            for number, images in enumerate(_segmentable_groups(boxes, by_uid, sources), start=1)]


def _build_seg(boxes: Sequence[LocatedBox], images: Sequence[Dataset], provenance: Provenance, study_version: int,
               task: str, number: int) -> Dataset:
    """One SEG over ``images`` (single-frame images of one series and size, or one multi-frame image)
    of the boxes that lie on them: a mask frame per source image, or per frame of the multi-frame one."""
    first = images[0]
    position = {str(ds.SOPInstanceUID): n for n, ds in enumerate(images)}
    boxes = [box for box in boxes if box.source.frame.sop_instance_uid in position]
    labels = list(dict.fromkeys(box.label for box in boxes))
    mask = np.zeros((max(len(images), _frames(first)), int(first.Rows), int(first.Columns), len(labels)), dtype=bool)
    for box in boxes:
        # the image's place in the group, then the frame's in the image (1-based; single-frame images: 1)
        frame = position[box.source.frame.sop_instance_uid] + box.source.frame.frame - 1
        _rasterise(mask[frame, :, :, labels.index(box.label)], box)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=clip(provenance.model_identity, 64), family=codes.cid7162.ArtificialIntelligence,
        version=clip(provenance.node_version, 64),
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=clip(label, 64),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=label_concept(label),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
        )
        for number, label in enumerate(labels, start=1)
    ]
    study_uid = str(first.StudyInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=images,
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
        software_versions=f"qoq-node {provenance.node_version}",
        device_serial_number="0",
        content_label="AI_BOXES",
        content_description=clip(provenance.banner, 64),
    )
    label_series(seg, first, provenance)
    if "FrameOfReferenceUID" not in first and "PatientOrientation" not in seg:
        # General Image Patient Orientation (Type 2C) for sources without plane geometry (US, XC)
        seg.PatientOrientation = first.get("PatientOrientation", "")
    return seg
