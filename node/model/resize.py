"""How an image's size becomes the model's: the training's pre-resize and the processor's grid.

Pixels as trained (../shared/QOQMED.md): every image was first resized with NEAREST so that its
area lies in [65,536, 524,288] pixels (``sqrt(bound/area)`` scale, sides truncated with ``int``)
(:func:`trained_resize`), then handed to the processor, whose own rule (:func:`smart_resize`,
Qwen-VL's) rounds it to the family's grid.
"""

from __future__ import annotations

import math

#: The pre-resize bounds of QoQ-Med's training (``examples/grpo_climb_engaging.yaml``: min_pixels, max_pixels).
TRAINED_MIN_PIXELS = 65_536
TRAINED_MAX_PIXELS = 524_288
MAX_ASPECT_RATIO = 200


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


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int) -> tuple[int, int]:
    """Qwen-VL's resize rule: (height, width) rounded to multiples of ``factor``, scaled into
    ``[min_pixels, max_pixels]`` keeping the aspect ratio as closely as the rounding allows."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}×{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio above {MAX_ASPECT_RATIO}: {height}×{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
