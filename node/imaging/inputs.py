"""A study's files → the model's inputs, made as the model's training made them.

Images: key frames, decoded and windowed (in the task's trained windows where its training data set
was rendered in fixed ones), resized with NEAREST into the family's pre-resize bounds and converted
to RGB (``ImageProcessMixin.process_image``); the processor then rounds them to its grid. Each image
carries its geometry back to the source pixels. ECG waveforms: the raw signal for a family that takes
one (Omni); for the VL families an ECG study is not theirs to read, unless the operator opted in to a
paper-style plot, which every result then labels as outside the model's training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from node.imaging.clahe import clahe
from node.imaging.decode import DecodedFrame, ImagingError, iter_frames
from node.imaging.ecg import render_ecg
from node.imaging.ecg_signal import SignalInput, ecg_signal
from node.imaging.geometry import Geometry
from node.imaging.series import InstanceInfo, select_key_frames
from node.model.profiles import ModelProfile

#: Why an ECG study is not read by a model that takes no ECG.
NO_ECG_INPUT = "the mounted model takes no ECG"
#: The label on every result made from an ECG plot (``imaging.ecg_as_image``).
ECG_AS_IMAGE_CAVEAT = "ECG shown as an image: outside the model's training"
#: Windows whose training sets were also contrast-enhanced with CLAHE (clip 1.5, 8×8 tiles:
#: CLIMB ``src/datasets/ct/nifti_utils.py``).
CLAHE_WINDOWS = frozenset({"ctpa"})


class NotForModel(ImagingError):
    """The study holds nothing the mounted model takes (a final skip, not a failure)."""


@dataclass(frozen=True)
class ModelInput:
    """One image as the model sees it, and how it was made."""

    image: Image.Image
    geometry: Geometry
    window: tuple[float, float] | None  # the VOI window applied (centre, width), for presentation states
    path: Path  # the stored instance the frame comes from

    def describe(self) -> dict[str, Any]:
        """The input for people (``qoq-node infer --json``): kind, source and both resize steps."""
        source = self.geometry.placements[0].source
        grid = self.geometry.grid or (self.geometry.width, self.geometry.height)
        return {
            "kind": "image", "sop_instance_uid": source.sop_instance_uid, "frame": source.frame,
            "source_pixels": [source.columns, source.rows],
            "pre_resize": {"method": "nearest", "pixels": [self.geometry.width, self.geometry.height]},
            "processor_grid": {"pixels": list(grid)},
            "window": list(self.window) if self.window else None,
        }


@dataclass(frozen=True)
class StudyInputs:
    """Everything one study gives the model, and what every result must say about it."""

    images: tuple[ModelInput, ...] = ()
    signals: tuple[SignalInput, ...] = ()
    caveats: tuple[str, ...] = field(default=())


def to_model_input(frame: DecodedFrame, path: Path, profile: ModelProfile, enhance: bool = False) -> ModelInput:
    """A decoded frame (of the instance at ``path``) as the model's training prepared an image: the whole
    frame, NEAREST-resized into the pre-resize bounds, RGB; its geometry records that size and the grid
    the processor will round it to. :class:`ImagingError` for a frame the model's sizes cannot take (an
    aspect ratio beyond the processor's limit, e.g. a 1×4096 image)."""
    pixels = clahe(frame.pixels, 1.5, (8, 8)) if enhance and frame.pixels.ndim == 2 else frame.pixels
    try:
        size = profile.model_size(frame.source.columns, frame.source.rows)
        grid = profile.grid_size(*size)
    except ValueError as exc:  # the resize rules' messages name only sizes
        raise ImagingError(f"image not for the model: {exc}") from exc
    image = Image.fromarray(pixels)
    if image.size != size:
        image = image.resize(size, Image.Resampling.NEAREST)
    geometry = Geometry.single(frame.source, size, grid)
    return ModelInput(image.convert("RGB"), geometry, frame.window, path)


def _image_inputs(infos: list[InstanceInfo], profile: ModelProfile, max_images: int, volume_frames: int,
                  default_window: str | None, trained_windows: Sequence[str]) -> tuple[list[ModelInput], int]:
    """The key frames as model inputs, and how many key instances could not be decoded and were left
    out (one corrupt slice costs that slice, not the study; none decodable is an :class:`ImagingError`)."""
    wanted: dict[Path, list[int]] = {}
    for path, frame_index in select_key_frames(infos, max_images, volume_frames):
        wanted.setdefault(path, []).append(frame_index)
    inputs: list[ModelInput] = []
    broken: set[Path] = set()
    for window in trained_windows or (None,):
        for path, indices in wanted.items():  # each instance decoded once per window
            if path in broken:
                continue
            try:
                made = [to_model_input(frame, path, profile, window in CLAHE_WINDOWS)
                        for frame in iter_frames(path, default_window, window, indices)]
            except ImagingError:
                broken.add(path)
                continue
            inputs.extend(made)
    if wanted and not inputs:
        raise ImagingError(f"cannot decode any of the {len(wanted)} key image(s)")
    return inputs[:max_images], len(broken)


def study_inputs(
    paths: Sequence[Path],
    profile: ModelProfile,
    max_images: int | None = None,
    volume_frames: int = 2,
    default_window: str | None = None,
    trained_windows: Sequence[str] = (),
    ecg_as_image: bool = False,
) -> StudyInputs:
    """The model inputs of one study's files (pixels are decoded only for the key frames).

    :class:`NotForModel` when the study is only ECG and the model takes none (and no plot was asked for).
    """
    max_images = min(max_images or profile.max_images, profile.max_images)
    infos = [InstanceInfo.read(path) for path in paths]
    waveforms = [info for info in infos if info.is_waveform]
    pictures = [info for info in infos if not info.is_waveform]
    images, broken = _image_inputs(pictures, profile, max_images, volume_frames, default_window, trained_windows)
    left_out = (f"{broken} key image(s) could not be decoded and were not read",) if broken else ()
    if not waveforms:
        return StudyInputs(tuple(images), (), left_out)
    if profile.takes_time_series:
        return StudyInputs(tuple(images), (ecg_signal(waveforms[0].path),), left_out)
    if not ecg_as_image:
        if images:
            return StudyInputs(tuple(images), (), left_out)
        raise NotForModel(NO_ECG_INPUT)
    room = max(max_images - len(images), 0)
    plots = [to_model_input(render_ecg(info.path), info.path, profile) for info in waveforms[:room]]
    return StudyInputs(tuple(images + plots), (), left_out + ((ECG_AS_IMAGE_CAVEAT,) if plots else ()))
