"""A DICOM 12-lead ECG waveform → a standard paper-style plot.

No QoQ-Med model was trained on ECG plots: the VL models take no ECG, Omni takes the signal
(:mod:`node.imaging.ecg_signal`). The plot is offered to a VL model only on an explicit opt-in
(``imaging.ecg_as_image``), and every result made from it says it is outside the model's training.

Layout: 3 rows × 4 columns of 2.5 s (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6) and a 10 s
lead II rhythm strip, on a 1 mm / 5 mm grid, at 25 mm/s and 10 mm/mV. The plot is the model
input's "source frame": its geometry refers to the waveform instance, frame 1, in plot pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from node.imaging.decode import DecodedFrame, ImagingError
from node.imaging.geometry import FrameRef
from node.imaging.waveform import read_waveform

PX_PER_MM = 4
MM_PER_SECOND = 25
MM_PER_MV = 10
ROW_HEIGHT_MM = 30
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
SECONDS_SHOWN = 10.0


def _grid(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    for mm in range(0, width // PX_PER_MM + 1):
        colour = (240, 160, 160) if mm % 5 == 0 else (252, 225, 225)
        draw.line([(mm * PX_PER_MM, 0), (mm * PX_PER_MM, height)], fill=colour)
    for mm in range(0, height // PX_PER_MM + 1):
        colour = (240, 160, 160) if mm % 5 == 0 else (252, 225, 225)
        draw.line([(0, mm * PX_PER_MM), (width, mm * PX_PER_MM)], fill=colour)


def _trace(draw: ImageDraw.ImageDraw, signal: np.ndarray, rate: float, left: int, baseline: int,
           seconds: float, label: str) -> None:
    samples = signal[: int(seconds * rate)]
    x = left + np.arange(len(samples)) / rate * MM_PER_SECOND * PX_PER_MM
    y = baseline - samples * MM_PER_MV * PX_PER_MM
    draw.line(list(zip(x.tolist(), y.tolist(), strict=True)), fill=(0, 0, 0), width=1)
    draw.text((left + 4, baseline - ROW_HEIGHT_MM * PX_PER_MM // 2 + 2), label, fill=(0, 0, 0))


def render_ecg(path: Path) -> DecodedFrame:
    """Plot the 12-lead ECG at ``path``; raises ImagingError when it is not one."""
    waveform = read_waveform(path)
    leads, rate = waveform.leads, waveform.rate_hz
    missing = [name for row in LAYOUT for name in row if name not in leads]
    if missing:
        raise ImagingError(f"{path.name} lacks leads {missing} of a 12-lead ECG")
    width = int(SECONDS_SHOWN * MM_PER_SECOND * PX_PER_MM)
    height = (len(LAYOUT) + 1) * ROW_HEIGHT_MM * PX_PER_MM
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    _grid(draw, width, height)
    column_seconds = SECONDS_SHOWN / 4
    for row, names in enumerate(LAYOUT):
        baseline = (row * ROW_HEIGHT_MM + ROW_HEIGHT_MM // 2) * PX_PER_MM
        for column, name in enumerate(names):
            start = int(column * column_seconds * rate)  # each column shows its own 2.5 s
            left = int(column * column_seconds * MM_PER_SECOND * PX_PER_MM)
            _trace(draw, leads[name][start:], rate, left, baseline, column_seconds, name)
    rhythm_baseline = (len(LAYOUT) * ROW_HEIGHT_MM + ROW_HEIGHT_MM // 2) * PX_PER_MM
    _trace(draw, leads[RHYTHM_LEAD], rate, 0, rhythm_baseline, SECONDS_SHOWN, RHYTHM_LEAD)
    source = FrameRef(waveform.sop_instance_uid, 1, height, width)
    return DecodedFrame(np.asarray(image), source, None)
