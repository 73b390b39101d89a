"""Stored DICOM instance → display-ready 8-bit frames, each naming its source frame.

Decodes every transfer syntax the SCP accepts (pylibjpeg plugins: JPEG, JPEG-LS, JPEG 2000,
RLE), applies the Modality LUT (rescale) and the VOI LUT (window centre/width or a VOI LUT
sequence from the header, else the domain's default window, else the frame's own robust
range; a task's *trained* window, the one its training data set was rendered with, overrides
the header), inverts MONOCHROME1, and turns YBR and palette colour into RGB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, iter_pixels
from pydicom.pixels.utils import get_expected_length

from node.dicom_files import read_attributes
from node.errors import DataError
from node.imaging.geometry import FrameRef

#: Default windows (centre, width) in modality units, by name, for images without their own.
DEFAULT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
    # CLIMB's CT pulmonary angiography sets (src/datasets/ct/nifti_utils.py, rspect.py): level 80, window 700
    "ctpa": (80.0, 700.0),
}


class ImagingError(DataError):
    """An instance cannot be turned into an image; the message says why."""


@dataclass(frozen=True)
class DecodedFrame:
    """One frame as 8-bit pixels (H×W grey or H×W×3 RGB) and where it came from."""

    pixels: np.ndarray
    source: FrameRef
    window: tuple[float, float] | None  # the (centre, width) applied, when one was


def _window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    low, high = centre - width / 2, centre + width / 2
    return (np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return (low + high) / 2, max(high - low, 1.0)


def _grey(ds: Dataset, frame: np.ndarray, default_window: str | None,
          trained_window: str | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    values = apply_modality_lut(frame, ds)
    if trained_window is not None:
        window = DEFAULT_WINDOWS[trained_window]
        pixels = _window(values, *window)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre = float(np.atleast_1d(ds.WindowCenter)[0])
        width = float(np.atleast_1d(ds.WindowWidth)[0])
        pixels, window = _window(values, centre, width), (centre, width)
    elif "VOILUTSequence" in ds:
        mapped = apply_voi_lut(values, ds).astype(np.float32)
        pixels, window = _window(mapped, *_robust_range(mapped)), None
    elif default_window is not None:
        window = DEFAULT_WINDOWS[default_window]
        pixels = _window(values, *window)
    else:
        window = _robust_range(values)
        pixels = _window(values, *window)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels, window


def _colour(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.dtype != np.uint8:  # 16-bit colour (palette LUTs, some RGB): scale to 8 bits
        top = float(frame.max()) or 1.0
        frame = (frame.astype(np.float32) / top * 255).astype(np.uint8)
    return frame


def iter_frames(path: Path, default_window: str | None = None, trained_window: str | None = None,
                indices: Sequence[int] | None = None) -> Iterator[DecodedFrame]:
    """The frames of the instance at ``path`` (those at the 0-based ``indices`` when given, else every one),
    decoded and windowed, in that order: in ``trained_window`` when given (whatever the header says), else as
    the header or ``default_window`` says. Only those frames are read and decoded (a multi-frame's others
    stay on disk); an instance whose pixel data its header does not describe is an :class:`ImagingError`."""
    ds, count = _header(path)
    wanted = list(range(count)) if indices is None else list(indices)
    if not all(0 <= index < count for index in wanted):
        raise ImagingError(f"cannot decode {path.name}: it has {count} frame(s)")
    arrays = _pixels(path, ds, wanted)
    for index in wanted:
        try:
            pixels, window = _display(ds, next(arrays), default_window, trained_window)
        except Exception as exc:  # pydicom, its plugins and the LUTs raise many types for bad or unsupported data
            # the library's message may quote header values: only its type is kept
            raise ImagingError(f"cannot decode {path.name}: {type(exc).__name__}") from exc
        source = FrameRef(str(ds.SOPInstanceUID), index + 1, int(ds.Rows), int(ds.Columns))
        yield DecodedFrame(np.ascontiguousarray(pixels), source, window)


def _header(path: Path) -> tuple[Dataset, int]:
    """The instance's attributes (its pixel data left on disk) and its number of frames; refused when its
    native pixel data holds a frame more than its header says (which frames are the image would be a guess;
    padding short of a frame is let be)."""
    try:
        ds = read_attributes(path)
        count = int(ds.get("NumberOfFrames", 1) or 1)
        element = ds.get_item("PixelData", keep_deferred=True)
        if element is None:
            raise ValueError("no pixel data")
        if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
            expected = get_expected_length(ds)
            length = element.length if isinstance(element, RawDataElement) else len(element.value)
            if length >= expected + expected // max(count, 1):
                raise ValueError("pixel data holds more frames than the header says")
        return ds, count
    except Exception as exc:  # pydicom raises many types for a malformed header
        raise ImagingError(f"cannot decode {path.name}: {type(exc).__name__}") from exc


def _pixels(path: Path, ds: Dataset, wanted: list[int]) -> Iterator[np.ndarray]:
    """The frames at ``wanted``, decoded (YBR converted to RGB): native pixel data read from the file a frame
    at a time; compressed or deflated from the whole dataset, as pydicom reads those from a file less
    tolerantly (a frame's compressed bytes are a fraction of the image)."""
    syntax = ds.file_meta.TransferSyntaxUID
    source: Path | Dataset = pydicom.dcmread(path) if syntax.is_encapsulated or syntax.is_deflated else path
    yield from iter_pixels(source, indices=wanted, allow_excess_frames=False)


def _display(ds: Dataset, frame: np.ndarray, default_window: str | None,
             trained_window: str | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """One decoded frame as 8-bit display pixels, and the window applied (none for colour)."""
    samples = int(ds.get("SamplesPerPixel", 1))
    if frame.shape[:2] != (int(ds.Rows), int(ds.Columns)) or frame.ndim != (2 if samples == 1 else 3):
        raise ValueError("frame shape differs from the header")
    if samples > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return _colour(ds, frame), None
    return _grey(ds, frame, default_window, trained_window)
