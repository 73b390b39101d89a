"""A study's files → model inputs: key frames, decoded (or, for ECG waveforms, plotted), resized to
Qwen2.5-VL's grid, each with its geometry back to the source pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from node.imaging.decode import DecodedFrame, iter_frames
from node.imaging.ecg import render_ecg
from node.imaging.geometry import Geometry
from node.imaging.series import InstanceInfo, select_key_frames


@dataclass(frozen=True)
class ModelInput:
    """One image as the model sees it, and how it was made."""

    image: Image.Image
    geometry: Geometry
    window: tuple[float, float] | None  # the VOI window applied (centre, width), for presentation states
    path: Path  # the stored instance the frame comes from


def to_model_input(frame: DecodedFrame, path: Path, min_pixels: int, max_pixels: int) -> ModelInput:
    """Resize a decoded frame (of the instance at ``path``) to its smart_resize size: the whole
    frame, no crop, no padding."""
    geometry = Geometry.single(frame.source, min_pixels, max_pixels)
    image = Image.fromarray(frame.pixels).resize((geometry.width, geometry.height), Image.Resampling.BICUBIC)
    return ModelInput(image, geometry, frame.window, path)


def study_inputs(
    paths: Sequence[Path],
    max_images: int,
    min_pixels: int,
    max_pixels: int,
    default_window: str | None = None,
) -> list[ModelInput]:
    """The model inputs of one study's files (pixels are decoded only for the key frames)."""
    infos = [InstanceInfo.read(path) for path in paths]
    waveforms = {info.path for info in infos if info.is_waveform}
    wanted: dict[Path, list[int]] = {}
    for path, frame_index in select_key_frames(infos, max_images):
        wanted.setdefault(path, []).append(frame_index)
    inputs = []
    for path, indices in wanted.items():  # each instance decoded once, however many key frames it has
        frames = [render_ecg(path)] if path in waveforms else list(iter_frames(path, default_window))
        inputs.extend(to_model_input(frames[index], path, min_pixels, max_pixels) for index in indices)
    return inputs
