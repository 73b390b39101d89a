"""A QoQ-Med (Qwen2.5-VL) checkpoint directory: what it is called, whether it is the test model,
and its processor with the node's visual budget."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.engine import EngineRequest
from node.engine.chat import user_turn
from node.engine.errors import EngineLoadError
from node.engine.tiny import TINY_MARKER, TINY_MODEL_NAME


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory and the facts about it that provenance needs."""

    directory: Path
    name: str
    is_test_model: bool
    config: dict[str, Any]


def open_checkpoint(model_dir: Path) -> Checkpoint:
    """The checkpoint in ``model_dir``; :class:`EngineLoadError` when it is not one."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise EngineLoadError(f"{model_dir} is not a model directory (no config.json); "
                              "set engine.model to the QoQ-Med weights or run 'qoq-node model tiny DIR'")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineLoadError(f"{config_path} cannot be read as JSON: {exc}") from exc
    is_test_model = bool(config.get(TINY_MARKER))
    name = f"{TINY_MODEL_NAME} (TEST MODEL, random weights)" if is_test_model else model_dir.name
    return Checkpoint(model_dir, name, is_test_model, config)


def load_processor(checkpoint: Checkpoint, min_pixels: int, max_pixels: int):
    """The checkpoint's processor with the node's visual budget and left padding (for batches)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint.directory, local_files_only=True)
    # transformers 5 keeps the visual budget in the image processor's size
    processor.image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    processor.tokenizer.padding_side = "left"
    return processor


def chat_prompt(processor, request: EngineRequest) -> str:
    """The request as the model's chat-templated text, one image placeholder per image."""
    messages = user_turn(request, lambda _: {"type": "image"})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
