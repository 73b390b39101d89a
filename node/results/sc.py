"""Secondary Capture with the AI boxes and labels burned in, under a research-use banner: for
viewers that show nothing else. Made for images without patient geometry (radiographs,
mammograms, photographs) by default (``results.secondary_capture``).

Text, line width and banner are scaled to the image (a 3000-pixel radiograph gets a banner a
radiologist can read at fit-to-screen); the outline is drawn outside the box so the lesion stays
visible, and the label above the box (below it at the top edge), never over the lesion.
"""

from __future__ import annotations

import re

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
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
#: Sizes for a 512-pixel image; larger images scale them up.
BANNER_HEIGHT = 28
TEXT_SIZE = 11
LINE_WIDTH = 2


_AXES = (("L", "R"), ("P", "A"), ("H", "F"))  # + and - along patient x, y, z (LPS)


def patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation, or the main patient axis of its rows and columns (from
    Image Orientation (Patient)); None when the source says neither."""
    if len(source.get("PatientOrientation", []) or []) == 2:
        return tuple(str(v) for v in source.PatientOrientation)  # type: ignore[return-value]  # two values (checked above)
    if "ImageOrientationPatient" not in source:
        return None
    cosines = np.asarray(source.ImageOrientationPatient, dtype=float).reshape(2, 3)
    letters = []
    for direction in cosines:
        axis = int(np.argmax(np.abs(direction)))
        letters.append(_AXES[axis][0] if direction[axis] > 0 else _AXES[axis][1])
    return letters[0], letters[1]


def scale(rows: int, columns: int) -> float:
    """How much larger than on a 512-pixel image the banner, text and lines are drawn."""
    return max(1.0, min(rows, columns) / 512)


def burn_in(frame: DecodedFrame, findings: Findings, provenance: Provenance) -> np.ndarray:
    """The frame as RGB with a banner on top and every box on this frame outlined, with its label."""
    pixels = frame.pixels if frame.pixels.ndim == 3 else np.stack([frame.pixels] * 3, axis=-1)
    factor = scale(*pixels.shape[:2])
    banner, width = round(BANNER_HEIGHT * factor), max(LINE_WIDTH, round(LINE_WIDTH * factor))
    font = ImageFont.load_default(size=max(TEXT_SIZE, round(TEXT_SIZE * factor)))
    image = Image.new("RGB", (pixels.shape[1], pixels.shape[0] + banner), (0, 0, 0))
    image.paste(Image.fromarray(pixels), (0, banner))
    draw = ImageDraw.Draw(image)
    answer = ", ".join(findings.labels) or "no answer"
    margin = round(2 * factor)
    draw.text((margin, margin), clip(f"{provenance.banner} - NOT FOR DIAGNOSIS", 120), fill=(255, 255, 0), font=font)
    draw.text((margin, banner // 2), clip(f"AI answer: {answer}", 120), fill=(255, 255, 0), font=font)
    for box in findings.boxes:
        if box.source.frame != frame.source:
            continue
        s = box.source
        # edges to the nearest pixel edge: a mapped-back edge (2129.9999) is not cut to the pixel before it
        left, right = round(s.column_min), round(s.column_max) - 1
        top, bottom = round(s.row_min) + banner, round(s.row_max) - 1 + banner
        # outside the box: its pixels (the lesion) stay as they are
        draw.rectangle([left - width, top - width, right + width, bottom + width], outline=BOX_COLOUR, width=width)
        text_height = font.getbbox("Ag")[3]
        above = top - width - margin - text_height
        y = above if above >= banner else bottom + width + margin
        draw.text((left, y), clip(box.label, 40), fill=BOX_COLOUR, font=font)
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
        # highdicom requires an orientation of single letters; when the source gives none, or an oblique
        # one ("PF"), a placeholder is set here and replaced below by the source's, else "unknown" (empty).
        patient_orientation=orientation if orientation and all(len(v) == 1 for v in orientation) else ("L", "P"),
        contributing_equipment=[contributing_equipment(provenance)],
    )
    sc.PatientOrientation = list(orientation) if orientation and all(
        re.fullmatch(r"[LRAPHF]{1,3}", v) for v in orientation) else ""  # type: ignore[assignment]  # empty (Type 2, unknown): highdicom says a list
    label_series(sc, source, provenance, "sc", laterality=True)
    sc.ImageComments = clip(f"{provenance.banner}. {DISCLAIMER} Model: {provenance.model_identity}", 10240)
    sc.BurnedInAnnotation = "YES"
    return sc
