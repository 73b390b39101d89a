"""Grayscale Softcopy Presentation State: the AI boxes as overlays most PACS viewers draw.

One graphic layer for AI results; per box a closed POLYLINE (5 points) in PIXEL units on the
image and frame it sits on, with its label as text; a summary text with the answer and the
research-use disclaimer on every referenced image; and the VOI window the model saw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node.findings import Findings, LocatedBox
from node.results.provenance import DISCLAIMER, MANUFACTURER, Provenance, clip, label_series, result_uid

LAYER = "AI_RESULTS"
SERIES_NUMBER = 9901
MAX_TEXT = 1024  # Unformatted Text Value (ST)


def box_polyline(box: LocatedBox) -> np.ndarray:
    """The box as a closed polyline of (column, row) points in PIXEL units (pixel edges, PS3.3 C.10.5)."""
    s = box.source
    return np.array(
        [[s.column_min, s.row_min], [s.column_max, s.row_min], [s.column_max, s.row_max],
         [s.column_min, s.row_max], [s.column_min, s.row_min]],
        dtype=float,
    )


def _annotations(findings: Findings, sources: Sequence[Dataset], layer: hd.pr.GraphicLayer, summary: str):
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes: dict[tuple[str, int], list[LocatedBox]] = defaultdict(list)
    for box in findings.boxes:
        if box.source.frame.sop_instance_uid in by_uid:
            boxes[(box.source.frame.sop_instance_uid, box.source.frame.frame)].append(box)
    annotations = []
    for ds in sources:
        uid = str(ds.SOPInstanceUID)
        frames = sorted({frame for (box_uid, frame) in boxes if box_uid == uid}) or [1]
        multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
        for frame in frames:
            frame_boxes = boxes.get((uid, frame), [])
            annotations.append(hd.pr.GraphicAnnotation(
                referenced_images=[ds],
                graphic_layer=layer,
                referenced_frame_number=frame if multi else None,
                graphic_objects=[hd.pr.GraphicObject("POLYLINE", box_polyline(b), "PIXEL") for b in frame_boxes]
                or None,
                text_objects=[
                    hd.pr.TextObject(clip(summary, MAX_TEXT), "DISPLAY", bounding_box=(0.01, 0.01, 0.99, 0.12)),
                    *(hd.pr.TextObject(clip(b.label, 64), "PIXEL",
                                       anchor_point=(b.source.column_min, max(b.source.row_min - 2.0, 0.0)),
                                       anchor_point_visible=False)
                      for b in frame_boxes),
                ],
            ))
    return annotations


def build_gsps(
    findings: Findings,
    sources: Sequence[Dataset],
    provenance: Provenance,
    study_version: int,
    task: str,
    window: tuple[float, float] | None,
) -> Dataset:
    """The GSPS over ``sources`` (the grey images the model read, from one series)."""
    study_uid = str(sources[0].StudyInstanceUID)
    answer = ", ".join(findings.labels) or "no answer"
    summary = f"{provenance.banner}: {answer}. {DISCLAIMER} Model: {provenance.model_identity}"
    layer = hd.pr.GraphicLayer(LAYER, order=1, description=clip(provenance.banner, 64))
    voi = None
    if window is not None:
        voi = [hd.pr.SoftcopyVOILUTTransformation(window_center=[window[0]], window_width=[window[1]],
                                                  window_explanation=["window the AI model saw"])]
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=clip(provenance.model_identity, 64),
        software_versions=f"qoq-node {provenance.node_version}",
        contribution_description=clip(f"{provenance.banner}; model {provenance.model_identity}", 64),
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(sources),
        series_instance_uid=result_uid(study_uid, study_version, task, provenance, "gsps-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(study_uid, study_version, task, provenance, "gsps"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=clip(provenance.model_identity, 64),
        software_versions=f"qoq-node {provenance.node_version}",
        device_serial_number="0",
        content_label="AI_RESULT",
        content_description=clip(f"{provenance.banner}: {answer}", 64),
        graphic_annotations=_annotations(findings, sources, layer, summary),
        graphic_layers=[layer],
        voi_lut_transformations=voi,
        contributing_equipment=[equipment],
    )
    label_series(gsps, sources[0], provenance, laterality=True)
    return gsps
