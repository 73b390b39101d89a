"""Model families of QoQ-Med and the facts that differ between them.

A hospital mounts whichever checkpoint it licensed; the checkpoint directory says which family it
is (``config.json``), and the family decides how studies are put to it:

| family | checkpoints | patch × merge | inputs |
| --- | --- | --- | --- |
| ``qwen2.5-vl`` | QoQ-Med-VL-7B, -VL-32B | 14 × 2 (28-pixel grid) | images |
| ``omni`` | QoQ-Med-Omni-7B (its own modelling code) | 14 × 2 | images, ECG signal [8, 2500] |
| ``qwen3-vl`` | QoQ-Med3-VL-8B (-MIMIC) | 16 × 2 (32-pixel grid) | images |

Pixels as trained (../shared/QOQMED.md): every image was first resized with NEAREST so that its
area lies in [65,536, 524,288] pixels (``sqrt(bound/area)`` scale, sides truncated with ``int``),
converted to RGB, then handed to the processor, whose own ``smart_resize`` rounds it to the grid.
The model learnt its box coordinates in the pre-resized image, so that is the frame the node reads
boxes in; the processor's grid is recorded too (what the vision tower sees, and what a backend
checks it really got).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from node.engine.errors import EngineLoadError
from node.imaging.geometry import smart_resize

Family = Literal["qwen2.5-vl", "qwen3-vl", "omni"]
FAMILIES: tuple[Family, ...] = ("qwen2.5-vl", "qwen3-vl", "omni")

#: The pre-resize bounds of QoQ-Med's training (``examples/grpo_climb_engaging.yaml``: min_pixels, max_pixels).
TRAINED_MIN_PIXELS = 65_536
TRAINED_MAX_PIXELS = 524_288
#: Images per prompt in training (``limit_images: 4``).
TRAINED_MAX_IMAGES = 4
#: The Omni model's ECG input: leads × samples at this rate (the first 5 s).
ECG_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
ECG_SAMPLES = 2500
ECG_RATE_HZ = 500.0


def trained_resize(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The training's pre-resize (``ImageProcessMixin.process_image``): (width, height) scaled by
    ``sqrt(max/area)`` when above ``max_pixels``, then by ``sqrt(min/area)`` when below ``min_pixels``,
    each side truncated with ``int``; an image inside the bounds is left as it is."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width * height < min_pixels:
        factor = math.sqrt(min_pixels / (width * height))
        width, height = int(width * factor), int(height * factor)
    if width < 1 or height < 1:
        raise ValueError(f"image of {width}×{height} after the trained resize: the aspect ratio is too extreme")
    return width, height


@dataclass(frozen=True)
class ModelProfile:
    """What one model family takes and how its inputs are made."""

    family: Family
    patch_size: int
    merge_size: int
    takes_time_series: bool
    processor_min_pixels: int  # the processor's own rounding bounds (its preprocessor_config.json)
    processor_max_pixels: int
    min_pixels: int = TRAINED_MIN_PIXELS  # the pre-resize bounds the model was trained with
    max_pixels: int = TRAINED_MAX_PIXELS
    max_images: int = TRAINED_MAX_IMAGES

    @property
    def grid_factor(self) -> int:
        """Pixels per visual token along one side (patch × spatial merge)."""
        return self.patch_size * self.merge_size

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The kinds of input the family takes besides text."""
        return ("image", "time-series") if self.takes_time_series else ("image",)

    def model_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a source image after the trained pre-resize: the frame boxes are read in."""
        return trained_resize(width, height, self.min_pixels, self.max_pixels)

    def grid_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the processor turns an image of this size into (its ``smart_resize``)."""
        grid_height, grid_width = smart_resize(height, width, self.processor_min_pixels, self.processor_max_pixels,
                                               self.grid_factor)
        return grid_width, grid_height

    def visual_tokens(self, width: int, height: int) -> int:
        """Visual tokens an image of this (model) size becomes."""
        grid_width, grid_height = self.grid_size(width, height)
        return grid_width * grid_height // (self.grid_factor * self.grid_factor)

    def describe(self) -> str:
        """One line for operators: family, inputs, pixel chain."""
        return (f"family {self.family}: inputs {', '.join(self.input_kinds)}, text; images pre-resized (nearest) into "
                f"[{self.min_pixels}, {self.max_pixels}] pixels, then the processor's {self.grid_factor}-pixel grid "
                f"within [{self.processor_min_pixels}, {self.processor_max_pixels}]; at most {self.max_images} images")


#: Each family with its base model's processor bounds (Qwen2.5-VL-7B-Instruct: 3136 … 12845056;
#: Qwen3-VL-8B-Instruct: 65536 … 16777216).
PROFILES: dict[Family, ModelProfile] = {
    "qwen2.5-vl": ModelProfile("qwen2.5-vl", 14, 2, False, 3_136, 12_845_056),
    "omni": ModelProfile("omni", 14, 2, True, 3_136, 12_845_056),
    "qwen3-vl": ModelProfile("qwen3-vl", 16, 2, False, 65_536, 16_777_216),
}


def detect_family(config: dict[str, Any]) -> Family:
    """The family of a checkpoint from its ``config.json``: a checkpoint with its own modelling code
    (``auto_map``) and a time-series part is Omni; else the model type decides."""
    keys = " ".join(config).lower()
    if config.get("auto_map") and ("time_series" in keys or "ecg" in keys):
        return "omni"
    model_type = str(config.get("model_type", ""))
    if model_type.startswith("qwen3_vl"):
        return "qwen3-vl"
    if model_type in {"qwen2_5_vl", "qwen2_vl"}:
        return "qwen2.5-vl"
    raise EngineLoadError(f"the checkpoint's model_type '{model_type}' is not a QoQ-Med family "
                          f"({', '.join(FAMILIES)}); set engine.family if it is one")


def _image_processor_config(model_dir: Path) -> dict[str, Any]:
    """The image processor's settings: ``preprocessor_config.json`` (released checkpoints) or the
    ``image_processor`` entry of ``processor_config.json`` (transformers 5)."""
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineLoadError(f"{path} cannot be read as JSON: {exc}") from exc
        entry = data.get(key) if key else data
        if isinstance(entry, dict):
            return entry
    return {}


def _processor_bounds(model_dir: Path, profile: ModelProfile) -> ModelProfile:
    """``profile`` with the rounding bounds and patch size the checkpoint's own processor declares."""
    config = _image_processor_config(model_dir)
    size = config.get("size") if isinstance(config.get("size"), dict) else {}
    low = size.get("shortest_edge", config.get("min_pixels", profile.processor_min_pixels))
    high = size.get("longest_edge", config.get("max_pixels", profile.processor_max_pixels))
    return replace(profile, processor_min_pixels=int(low), processor_max_pixels=int(high),
                   patch_size=int(config.get("patch_size", profile.patch_size)),
                   merge_size=int(config.get("merge_size", profile.merge_size)))


def checkpoint_profile(model_dir: Path | None, family: str = "auto", min_pixels: int | None = None,
                       max_pixels: int | None = None) -> ModelProfile:
    """The profile of the checkpoint in ``model_dir`` (or of ``family`` when there is no local checkpoint,
    as with a remote server): its family's facts, its processor's bounds, and the pre-resize bounds
    (the trained ones unless overridden)."""
    config: dict[str, Any] = {}
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        try:
            config = json.loads((Path(model_dir) / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise EngineLoadError(f"{model_dir}/config.json cannot be read as JSON: {exc}") from exc
    if family == "auto":
        family = detect_family(config) if config else "qwen2.5-vl"
    if family not in PROFILES:
        raise EngineLoadError(f"unknown model family '{family}'; QoQ-Med's are {', '.join(FAMILIES)}")
    profile = PROFILES[family]  # type: ignore[index]
    if config:
        profile = _processor_bounds(Path(model_dir), profile)  # type: ignore[arg-type]
    low = profile.min_pixels if min_pixels is None else min_pixels
    high = profile.max_pixels if max_pixels is None else max_pixels
    return replace(profile, min_pixels=low, max_pixels=high)
