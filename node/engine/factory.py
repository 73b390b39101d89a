"""Build the configured engine backend."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from node.config import EngineConfig
from node.engine import Engine
from node.engine.checkpoint import checkpoint_profile
from node.engine.errors import EngineLoadError
from node.engine.replay import ReplayEngine
from node.model.profiles import ModelProfile
from node.ops.logging import get_logger

if TYPE_CHECKING:
    from node.engine.openai_backend import OpenAIEngine

log = get_logger("engine")

#: Where the tiny test model is built when no weights are configured (under ``storage.root``).
TEST_MODEL_DIR = "test-model"


def resolve_model(config: EngineConfig, storage_root: Path) -> EngineConfig:
    """``config`` with a model directory: the configured weights, or — when none are configured for
    the ``transformers`` backend — the tiny random test model, built under ``storage_root`` on first
    use. Results of the test model are labelled as test results in every object and message."""
    if config.backend != "transformers" or config.model is not None:
        return config
    from node.engine.tiny import build_tiny_checkpoint

    directory = storage_root / TEST_MODEL_DIR
    if not (directory / "config.json").is_file():
        partial = storage_root / f"{TEST_MODEL_DIR}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build_tiny_checkpoint(partial, family="qwen2.5-vl" if config.family == "auto" else config.family)
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    log.warning(
        "engine.TEST_MODEL_IN_USE",
        message="NO MODEL CONFIGURED (engine.model is null): results come from a tiny random TEST model, "
        "not QoQ-Med. Every result is marked as a test result. Set engine.model to the QoQ-Med weights.",
        model_dir=str(directory),
    )
    return config.model_copy(update={"model": directory})


def engine_profile(config: EngineConfig) -> ModelProfile:
    """The family profile the configured engine runs (from its checkpoint, or ``engine.family``), with the
    configured pre-resize bounds: how the node makes the model's inputs."""
    local = config.model if config.backend in ("transformers", "tensorrt-llm") else None
    return checkpoint_profile(local, config.family, config.min_pixels, config.max_pixels)


def make_openai_engine(config: EngineConfig) -> OpenAIEngine:
    """The ``openai`` backend: a client of the server ``engine.openai`` names, with the API key from the
    variable ``api_key_env`` names."""
    from node.engine.openai_backend import OpenAIEngine

    key_env = config.openai.api_key_env
    return OpenAIEngine(config, engine_profile(config), api_key=os.environ.get(key_env) if key_env else None)


def make_engine(config: EngineConfig) -> Engine:
    """The backend ``config.backend`` names, loaded and ready."""
    if config.backend == "replay":
        assert config.replay_responses is not None  # the config validator guarantees it
        return ReplayEngine.from_file(config.replay_responses)
    if config.backend == "openai":
        return make_openai_engine(config)
    if config.model is None:
        raise EngineLoadError("engine.model is not set: point it at the QoQ-Med weights, "
                              "or build a test model with 'qoq-node model tiny DIR'")
    if config.backend == "tensorrt-llm":
        from node.engine.trtllm_backend import TensorRtLlmEngine

        return TensorRtLlmEngine(config)
    from node.engine.transformers_backend import TransformersEngine

    return TransformersEngine(config.model, device=config.device, dtype=config.dtype, family=config.family,
                              min_pixels=config.min_pixels, max_pixels=config.max_pixels, options=config.transformers,
                              cache_dir=config.cache_dir)
