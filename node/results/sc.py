"""Secondary Capture with the AI boxes and labels burned in, under a research-use banner: for
viewers that show nothing else. Off by default (``results.secondary_capture``)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset

from node.findings import Findings
from node.imaging.decode import DecodedFrame
from node.results.provenance import (
    DISCLAIMER,
    MANUFACTURER,
    Provenance,
    clip,
    contributing_equipment,
    label_series,
    result_uid,
)

SERIES_NUMBER = 9904
BOX_COLOUR = (255, 40, 40)
BANNER_HEIGHT = 28


_AXES = (("L", "R"), ("P", "A"), ("H", "F"))  # + and - along patient x, y, z (LPS)


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation, or the main patient axis of its rows and columns (from
    Image Orientation (Patient)); None when the source says neither."""
    if len(source.get("PatientOrientation", []) or []) == 2:
        return tuple(str(v) for v in source.PatientOrientation)  # type: ignore[return-value]
    if "ImageOrientationPatient" not in source:
        return None
    cosines = np.asarray(source.ImageOrientationPatient, dtype=float).reshape(2, 3)
    letters = []
    for direction in cosines:
        axis = int(np.argmax(np.abs(direction)))
        letters.append(_AXES[axis][0] if direction[axis] > 0 else _AXES[axis][1])
    return letters[0], letters[1]


def burn_in(frame: DecodedFrame, findings: Findings, provenance: Provenance) -> np.ndarray:
    """The frame as RGB with a banner on top and every box on this frame drawn with its label."""
    pixels = frame.pixels if frame.pixels.ndim == 3 else np.stack([frame.pixels] * 3, axis=-1)
    image = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + BANNER_HEIGHT), (0, 0, 0))
    image.paste(Image.fromarray(pixels), (0, BANNER_HEIGHT))
    draw = ImageDraw.Draw(image)
    answer = ", ".join(findings.labels) or "no answer"
    draw.text((4, 2), clip(f"{provenance.banner} - NOT FOR DIAGNOSIS", 120), fill=(255, 255, 0))
    draw.text((4, 14), clip(f"AI answer: {answer}", 120), fill=(255, 255, 0))
    for box in findings.boxes:
        if box.source.frame != frame.source:
            continue
        s = box.source
        corners = [s.column_min, s.row_min + BANNER_HEIGHT, s.column_max - 1, s.row_max - 1 + BANNER_HEIGHT]
        draw.rectangle(corners, outline=BOX_COLOUR, width=2)
        draw.text((s.column_min + 2, s.row_min + BANNER_HEIGHT + 2), clip(box.label, 40), fill=BOX_COLOUR)
    return np.asarray(image)


def build_sc(
    frame: DecodedFrame, source: Dataset, findings: Findings, provenance: Provenance, study_version: int, task: str
) -> Dataset:
    """The burned-in Secondary Capture of one key frame."""
    study_uid = str(source.StudyInstanceUID)
    orientation = patient_orientation(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=burn_in(frame, findings, provenance),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid(study_uid, study_version, task, provenance, "sc-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(study_uid, study_version, task, provenance,
                                    f"sc-{frame.source.sop_instance_uid}-{frame.source.frame}"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        # highdicom requires an orientation in the patient coordinate system; when the source gives
        # none, a placeholder is set here and replaced by "unknown" (empty, Type 2) below.
        patient_orientation=orientation or ("L", "P"),
        contributing_equipment=[contributing_equipment(provenance)],
    )
    if orientation is None:
        sc.PatientOrientation = ""
    label_series(sc, source, provenance, "sc", laterality=True)
    sc.ImageComments = clip(f"{provenance.banner}. {DISCLAIMER} Model: {provenance.model_identity}", 10240)
    sc.BurnedInAnnotation = "YES"
    return sc
