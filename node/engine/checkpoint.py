"""A QoQ-Med checkpoint directory: what it is called, which family it is, whether it is the test
model, and its processor (as shipped: its own rounding is part of what the model was trained with)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.engine import EngineRequest
from node.engine.chat import user_turn
from node.engine.errors import EngineLoadError
from node.engine.profiles import ModelProfile, checkpoint_profile
from node.engine.tiny import TINY_MARKER, TINY_MODEL_NAME


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory and the facts about it that provenance needs."""

    directory: Path
    name: str
    is_test_model: bool
    config: dict[str, Any]
    profile: ModelProfile

    @property
    def has_own_code(self) -> bool:
        """Whether the checkpoint ships its own modelling code (Omni): loaded with ``trust_remote_code``."""
        return self.profile.family == "omni"


def open_checkpoint(model_dir: Path, family: str = "auto", min_pixels: int | None = None,
                    max_pixels: int | None = None) -> Checkpoint:
    """The checkpoint in ``model_dir`` and its profile (pre-resize bounds overridden where given);
    :class:`EngineLoadError` when it is not one."""
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
    profile = checkpoint_profile(model_dir, family, min_pixels, max_pixels)
    # the family goes early in the name: DICOM keeps the first 64 characters of it
    name = (f"{TINY_MODEL_NAME} {profile.family} (TEST MODEL, random weights)" if is_test_model
            else f"{model_dir.name} ({profile.family})")
    return Checkpoint(model_dir, name, is_test_model, config, profile)


def load_processor(checkpoint: Checkpoint):
    """The checkpoint's processor as shipped, with left padding (for batches)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint.directory, local_files_only=True,
                                              trust_remote_code=checkpoint.has_own_code)
    processor.tokenizer.padding_side = "left"
    return processor


def chat_prompt(processor, request: EngineRequest) -> str:
    """The request as the model's chat-templated text, one image placeholder per image."""
    messages = user_turn(request, lambda _: {"type": "image"})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
