"""Build the configured engine backend."""

from __future__ import annotations

from node.config import EngineConfig
from node.engine import Engine
from node.engine.errors import EngineLoadError
from node.engine.replay import ReplayEngine


def make_engine(config: EngineConfig) -> Engine:
    """The backend ``config.backend`` names, loaded and ready."""
    if config.backend == "replay":
        assert config.replay_responses is not None  # the config validator guarantees it
        return ReplayEngine.from_file(config.replay_responses)
    from node.engine.transformers_backend import TransformersEngine

    if config.model is None:
        raise EngineLoadError("engine.model is not set: point it at the QoQ-Med weights, "
                              "or build a test model with 'qoq-node model tiny DIR'")
    return TransformersEngine(config.model, device=config.device, dtype=config.dtype,
                              min_pixels=config.min_pixels, max_pixels=config.max_pixels)
