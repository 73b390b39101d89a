"""What every backend sends the model: one user turn laid out as training laid it out — the prompt
split on its image markers (an image item at each, the text between as text items) and, for a
model that takes an ECG, a time-series item after the text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from node.engine import EngineRequest
from node.model.profiles import ModelProfile
from node.model.prompt import IMAGE_MARKER

TIME_SERIES_ITEM = {"type": "time-series"}


def user_turn(request: EngineRequest, image_item: Callable[[Image.Image], dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of one request (each image as ``image_item`` renders it)."""
    parts = request.prompt.split(IMAGE_MARKER)
    if len(parts) - 1 != len(request.images):
        raise ValueError(f"the prompt has {len(parts) - 1} image markers for {len(request.images)} images")
    content: list[dict[str, Any]] = []
    for index, text in enumerate(parts):
        if index:
            content.append(image_item(request.images[index - 1]))
        if text:
            content.append({"type": "text", "text": text})
    content.extend(dict(TIME_SERIES_ITEM) for _ in request.time_series)
    return [{"role": "user", "content": content}]


def require_inputs_fit(requests: Sequence[EngineRequest], profile: ModelProfile) -> None:
    """Raise ``ValueError`` for a request the model cannot take as trained: an ECG signal for a model
    that takes none, or more images than it was trained with."""
    for request in requests:
        if request.time_series and not profile.takes_time_series:
            raise ValueError(f"a {profile.family} model takes no ECG signal")
        if len(request.images) > profile.max_images:
            raise ValueError(f"{len(request.images)} images: the model was trained with at most {profile.max_images}")


def expected_grids(request: EngineRequest, profile: ModelProfile) -> list[tuple[int, int]]:
    """(width, height) the processor should make of each of the request's images."""
    return [profile.grid_size(image.width, image.height) for image in request.images]
