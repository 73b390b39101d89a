"""Softcopy Presentation States: the AI boxes as overlays most PACS viewers draw.

One graphic layer for AI results; per box a closed POLYLINE (5 points) in PIXEL units on the
image and frame it sits on, with its label as text; a summary text with the answer and the
research-use disclaimer on every referenced image; for grey images (GSPS) the VOI window the
model saw (through an INVERSE Presentation LUT for MONOCHROME1 sources), for colour images (Colour
Softcopy Presentation State) an sRGB ICC profile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from highdicom._standard_utils import is_multiframe_image  # highdicom's own test for it
from pydicom.dataset import Dataset

from node.findings import Findings, LocatedBox
from node.results.provenance import (
    DISCLAIMER,
    MANUFACTURER,
    Provenance,
    clip,
    contributing_equipment,
    label_series,
    result_uid,
    software_versions,
)

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


def names_frames(image: Dataset) -> bool:
    """Whether a reference to ``image`` names a frame: only for an image of several frames whose IOD is a
    multi-frame one (a Secondary Capture with two frames still names none: PS3.3 C.10.5 and dciodvfy)."""
    return int(image.get("NumberOfFrames", 1) or 1) > 1 and is_multiframe_image(image)


def _annotations(findings: Findings, sources: Sequence[Dataset], layer: hd.pr.GraphicLayer,
                 summary: str) -> list[hd.pr.GraphicAnnotation]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes: dict[tuple[str, int], list[LocatedBox]] = defaultdict(list)
    for box in findings.boxes:
        if box.source.frame.sop_instance_uid in by_uid:
            boxes[(box.source.frame.sop_instance_uid, box.source.frame.frame)].append(box)
    annotations = []
    for ds in sources:
        uid = str(ds.SOPInstanceUID)
        frames = sorted({frame for (box_uid, frame) in boxes if box_uid == uid}) or [1]
        multi = names_frames(ds)
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


def _icc_profile(source: Dataset) -> bytes:
    """The source's ICC profile, else sRGB as a matrix/TRC input ('scnr') profile.

    The CSPS needs an input or colour-space profile; Little CMS makes sRGB as a display ('mntr')
    profile with the same matrix and curves, so the device class is set to 'scnr' and the
    optional profile ID (an MD5 over the header) is zeroed, which ICC allows."""
    if "ICCProfile" in source:
        return bytes(source.ICCProfile)
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[12:16] = b"scnr"
    profile[84:100] = bytes(16)
    return bytes(profile)


def is_colour(image: Dataset) -> bool:
    """Whether an image is a colour one (several samples): a Colour Softcopy Presentation State's."""
    return int(image.get("SamplesPerPixel", 1)) > 1


def presentation_groups(images: Sequence[Dataset]) -> list[list[Dataset]]:
    """The images one presentation state each can cover: of one kind (grey or colour) and one size,
    in the order they come (a series of mixed sizes gets one state per size, none left out). PALETTE
    COLOR images get none: the SR, SEG and SC show their boxes."""
    groups: dict[tuple[bool, int, int], list[Dataset]] = {}
    for ds in images:
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            continue  # grey only to a GSPS (PS3.3 A.33.1), three samples to a CSPS: none shows a palette image
        key = (is_colour(ds), int(ds.Rows), int(ds.Columns))
        groups.setdefault(key, []).append(ds)
    return list(groups.values())


def build_presentation_state(
    findings: Findings,
    sources: Sequence[Dataset],
    provenance: Provenance,
    study_version: int,
    task: str,
    window: tuple[float, float] | None,
    number: int = 1,
) -> Dataset:
    """The presentation state over ``sources`` (images the model read of one kind and size): a Grayscale
    Softcopy Presentation State, or a Colour one (sRGB) for colour images. ``number``: which of the
    study's presentation states it is (one per kind and size of image; the first keeps the plain UIDs)."""
    study_uid = str(sources[0].StudyInstanceUID)
    colour = is_colour(sources[0])
    kind = ("csps" if colour else "gsps") + (f"-{number}" if number > 1 else "")
    answer = ", ".join(findings.labels) or "no answer"
    summary = f"{provenance.banner}: {answer}. {DISCLAIMER} Model: {provenance.model_identity}"
    layer = hd.pr.GraphicLayer(LAYER, order=1, description=clip(provenance.banner, 64))
    common: dict[str, Any] = {
        "referenced_images": list(sources),
        "series_instance_uid": result_uid(study_uid, study_version, task, provenance, f"{kind}-series"),
        "series_number": SERIES_NUMBER,
        "sop_instance_uid": result_uid(study_uid, study_version, task, provenance, kind),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": clip(provenance.model_identity, 64),
        "software_versions": software_versions(provenance),
        "device_serial_number": "0",
        "content_label": "AI_RESULT",
        "content_description": clip(f"{provenance.banner}: {answer}", 64),
        "graphic_annotations": _annotations(findings, sources, layer, summary),
        "graphic_layers": [layer],
        "contributing_equipment": [contributing_equipment(provenance)],
    }
    state: hd.pr.ColorSoftcopyPresentationState | hd.pr.GrayscaleSoftcopyPresentationState
    if colour:
        state = hd.pr.ColorSoftcopyPresentationState(icc_profile=_icc_profile(sources[0]), **common)
    else:
        voi = None
        if window is not None:
            voi = [hd.pr.SoftcopyVOILUTTransformation(window_center=[window[0]], window_width=[window[1]],
                                                      window_explanation=["window the AI model saw"])]
        # PS3.3 C.11.6.1: a MONOCHROME1 source is shown through an INVERSE Presentation LUT (IDENTITY, the
        # default, would show a radiograph as its negative).
        inverse = str(sources[0].get("PhotometricInterpretation", "")) == "MONOCHROME1"
        shape = hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
        state = hd.pr.GrayscaleSoftcopyPresentationState(
            voi_lut_transformations=voi, presentation_lut_transformation=hd.PresentationLUTTransformation(
                presentation_lut_shape=shape), **common)
    label_series(state, sources[0], provenance, "pr", laterality=True)
    return state
