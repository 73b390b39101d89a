"""Binary DICOM Segmentation of the AI boxes, on the source series: one segment per label, each
box rasterised on the frame it sits on, with the algorithm identified (family "Artificial
Intelligence", the model, the node's version)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
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


def build_seg(
    findings: Findings, sources: Sequence[Dataset], provenance: Provenance, study_version: int, task: str
) -> Dataset | None:
    """The SEG over the series of the first box. None when there is no box to segment, or when
    the box is on a multi-frame image (highdicom 0.28 places frames of a multi-frame source only
    with enhanced plane information, which cine ultrasound lacks; the SR and GSPS still carry
    those boxes)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes = [box for box in findings.boxes if box.source.frame.sop_instance_uid in by_uid]
    if not boxes:
        return None
    first = by_uid[boxes[0].source.frame.sop_instance_uid]
    series = [ds for ds in sources if ds.SeriesInstanceUID == first.SeriesInstanceUID
              and (ds.Rows, ds.Columns) == (first.Rows, first.Columns)]
    labels = list(dict.fromkeys(box.label for box in boxes))
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        return None
    mask = np.zeros((len(series), int(first.Rows), int(first.Columns), len(labels)), dtype=bool)
    index = {str(ds.SOPInstanceUID): position for position, ds in enumerate(series)}
    for box in boxes:
        uid = box.source.frame.sop_instance_uid
        if uid not in index:
            continue
        _rasterise(mask[index[uid], :, :, labels.index(box.label)], box)
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
        source_images=series,
        pixel_array=mask,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=result_uid(study_uid, study_version, task, provenance, "seg-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(study_uid, study_version, task, provenance, "seg"),
        instance_number=1,
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
