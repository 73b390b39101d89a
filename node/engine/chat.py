"""What every backend sends the model: one user turn of image items then the prompt text, with
images already at the size their geometry records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from node.engine import EngineRequest
from node.imaging.geometry import smart_resize


def user_turn(request: EngineRequest, image_item: Callable[[Image.Image], dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of one request: its images (as ``image_item`` renders each) then its prompt."""
    content = [image_item(image) for image in request.images] + [{"type": "text", "text": request.prompt}]
    return [{"role": "user", "content": content}]


def require_model_size(requests: Sequence[EngineRequest], min_pixels: int, max_pixels: int) -> None:
    """Raise ``ValueError`` if an image is not at its model-input size: the processor would resize it
    again and the boxes the model gives would not be in the coordinates the node recorded."""
    for request in requests:
        for image in request.images:
            expected = smart_resize(image.height, image.width, min_pixels, max_pixels)
            if expected != (image.height, image.width):
                raise ValueError(f"image {image.width}×{image.height} is not at its model size; "
                                 "resize it with its geometry first")
