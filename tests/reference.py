"""Reference model answers, written from QoQ-Med's training rules (../shared/QOQMED.md), not from the node.

The model's boxes are absolute pixels of the image as training pre-resized it: NEAREST into
[65,536, 524,288] pixels (scale ``sqrt(bound / area)``, sides truncated with ``int``; the processor's
own ``smart_resize`` to the 28-pixel grid comes after and does not move the boxes' frame). A test that
builds the model's answer here and finds the node's result on the lesion in source pixels checks the
node's box mapping against this rule, where a round trip through ``Geometry.box_to_model`` and
``box_to_source`` would pass with an error in both directions.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
from PIL import Image

from node.testing.synthetic import BODY_LEVEL

#: The pre-resize bounds in training (``examples/grpo_climb_engaging.yaml``), written out.
MIN_PIXELS, MAX_PIXELS = 65_536, 524_288

Box = tuple[float, float, float, float]


def reference_training_image(image: Image.Image, min_pixels: int = MIN_PIXELS,
                             max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``ImageProcessMixin.process_image``: NEAREST into the bounds, sides truncated, then RGB."""
    if image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)), Image.Resampling.NEAREST)
    if image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)), Image.Resampling.NEAREST)
    return image.convert("RGB") if image.mode != "RGB" else image


def model_box(box: Box, rows: int, columns: int) -> Box:
    """Where a box in source pixel edges (column min, row min, column max, row max) on a ``rows`` × ``columns``
    frame lies in the training's pre-resized image: each side scaled by the pre-resized size over the source's."""
    width, height = reference_training_image(Image.new("L", (columns, rows))).size
    x1, y1, x2, y2 = box
    return x1 * width / columns, y1 * height / rows, x2 * width / columns, y2 * height / rows


def lesion_model_box(ds: pydicom.Dataset) -> Box:
    """The box a model that found the synthetic phantom's lesion answers: the bounding box of the lesion's
    pixels (brighter than the body) in the image as training pre-resized it, max edges exclusive."""
    mask = Image.fromarray(np.where(ds.pixel_array > BODY_LEVEL, 255, 0).astype(np.uint8))
    rows, columns = np.nonzero(np.asarray(reference_training_image(mask))[..., 0])
    return float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1)


def answer(label: str, *boxes: Box, reasoning: str = "A dense round opacity is seen.") -> str:
    """A model response in QoQ-Med's format: reasoning, the boxes (one per input image, in order, labelled
    ``label`` in lower case) and the answer ``label``."""
    listed = ", ".join(f'{{"bbox_2d": [{x1:g}, {y1:g}, {x2:g}, {y2:g}], "label": "{label.lower()}", '
                       f'"image_index": {index}}}' for index, (x1, y1, x2, y2) in enumerate(boxes))
    return f"<think>{reasoning}</think>\n```json\n[{listed}]\n```\n\\boxed{{{label}}}"


def lesion_answer(ds: pydicom.Dataset, label: str) -> str:
    """A model response boxing the phantom lesion of ``ds`` (its only input image) and answering ``label``."""
    return answer(label, lesion_model_box(ds))
