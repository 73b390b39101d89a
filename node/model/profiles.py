"""Model families of QoQ-Med and the facts that differ between them.

A hospital mounts whichever checkpoint it licensed; the checkpoint directory says which family it
is (``config.json``, read by the engine), and the family decides how studies are put to it:

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

from dataclasses import dataclass
from typing import Literal

from node.model.resize import TRAINED_MAX_PIXELS, TRAINED_MIN_PIXELS, smart_resize, trained_resize

Family = Literal["qwen2.5-vl", "qwen3-vl", "omni"]
FAMILIES: tuple[Family, ...] = ("qwen2.5-vl", "qwen3-vl", "omni")

#: Images per prompt in training (``limit_images: 4``).
TRAINED_MAX_IMAGES = 4


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
