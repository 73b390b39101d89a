"""A QoQ-Med checkpoint directory: what it is called, which family it is (its profile, from its
``config.json`` and its processor's bounds), whether it is the test model, and its processor (as
shipped: its own rounding is part of what the model was trained with)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.engine import EngineRequest
from node.engine.chat import user_turn
from node.engine.errors import EngineLoadError
from node.engine.tiny import TINY_MARKER, TINY_MODEL_NAME
from node.model.profiles import FAMILIES, PROFILES, Family, ModelProfile

if TYPE_CHECKING:
    from transformers import ProcessorMixin


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
    listed_size = config.get("size")
    size: dict[str, Any] = listed_size if isinstance(listed_size, dict) else {}
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
    profile = PROFILES[family]
    if config and model_dir is not None:  # (a config was read only from a model_dir)
        profile = _processor_bounds(Path(model_dir), profile)
    low = profile.min_pixels if min_pixels is None else min_pixels
    high = profile.max_pixels if max_pixels is None else max_pixels
    return replace(profile, min_pixels=low, max_pixels=high)



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


def load_processor(checkpoint: Checkpoint) -> ProcessorMixin:
    """The checkpoint's processor as shipped, with left padding (for batches)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint.directory, local_files_only=True,
                                              trust_remote_code=checkpoint.has_own_code)
    processor.tokenizer.padding_side = "left"
    return processor


def chat_prompt(processor: ProcessorMixin, request: EngineRequest) -> str:
    """The request as the model's chat-templated text, one image placeholder per image."""
    messages = user_turn(request, lambda _: {"type": "image"})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
