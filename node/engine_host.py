"""The engine host: builds the configured model once, says whether it is ready, backs off while a remote
engine cannot be reached, and meters every batch.

:func:`build_engine` is the one place an engine is made: ``qoq-node serve`` (through :class:`EngineHost`),
``qoq-node infer`` and ``qoq-node engine serve`` all call it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from node.backoff import Backoff
from node.config import NodeConfig
from node.engine import Engine, EngineRequest, EngineResult
from node.engine.errors import EngineLoadError
from node.engine.factory import engine_profile, make_engine, resolve_model
from node.model.profiles import ModelProfile
from node.ops.logging import get_logger
from node.ops.metrics import Metrics

log = get_logger("engine")


@dataclass(frozen=True)
class LoadedEngine:
    """A loaded engine and the family profile its inputs are made for."""

    engine: Engine
    profile: ModelProfile


def build_engine(config: NodeConfig, test_model_when_unset: bool) -> LoadedEngine:
    """The configured engine, loaded, with its profile. ``test_model_when_unset``: with the transformers
    backend and no ``engine.model``, build and use the tiny test model (every result labelled a test
    result) rather than refuse."""
    engine_config = resolve_model(config.engine, config.storage.root) if test_model_when_unset else config.engine
    return LoadedEngine(make_engine(engine_config), engine_profile(engine_config))


class MeteredEngine:
    """An engine whose batches are timed and counted in the metrics."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine, self._metrics = engine, metrics

    @property
    def model_identity(self) -> str:
        """The wrapped engine's model identity."""
        return self._engine.model_identity

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run the wrapped engine and record batch size, duration and tokens per second."""
        started = time.perf_counter()
        results = self._engine.generate(requests)
        seconds = time.perf_counter() - started
        tokens = sum(result.completion_tokens for result in results)
        self._metrics.engine_batch_size.observe(len(requests))
        self._metrics.engine_seconds.observe(seconds)
        self._metrics.engine_tokens.inc(tokens)
        if seconds > 0 and tokens:
            self._metrics.engine_tokens_per_second.observe(tokens / seconds)
        return results


class EngineHost:
    """The node's engine: loaded once (in the background), metered, and waited for while unreachable."""

    def __init__(self, config: NodeConfig, metrics: Metrics) -> None:
        self._config, self._metrics = config, metrics
        self.loaded: LoadedEngine | None = None
        self._load_error: str | None = None
        self._load_finished = threading.Event()
        self._outage = Backoff()  # while the engine cannot be reached, studies wait: 5 s doubling to 60 s

    def load(self) -> None:
        """Load the configured model (building the tiny test model when none is configured)."""
        try:
            loaded = build_engine(self._config, test_model_when_unset=True)
        except EngineLoadError as exc:
            self._load_error = str(exc)
            log.error("engine.load_failed", error=str(exc))
            return
        finally:
            self._load_finished.set()
        self.loaded = LoadedEngine(MeteredEngine(loaded.engine, self._metrics), loaded.profile)
        self._metrics.model_loaded.set(1)
        self._metrics.engine_available.set(1)
        log.info("engine.loaded", model=loaded.engine.model_identity)

    def load_finished(self) -> bool:
        """Whether the model load has ended, loaded or failed (start-up is over either way: a failure
        shows in readiness and ``qoqnode_model_loaded``, not in a restart loop)."""
        return self._load_finished.is_set()

    def not_ready_reason(self) -> str | None:
        """Why studies cannot be read now (None when the model is loaded)."""
        if self.loaded is not None:
            return None
        return f"model failed to load: {self._load_error}" if self._load_error else "model is loading"

    def accepting(self, now: float) -> bool:
        """Whether a batch may be given to the engine now (loaded, and not waiting out an outage)."""
        return self.loaded is not None and self._outage.ready(now)

    def unavailable(self, error: str) -> None:
        """The engine could not be reached: wait before the next batch, doubling up to the cap."""
        wait = self._outage.failed(time.time())
        self._metrics.engine_available.set(0)
        log.warning("engine.unavailable", error=error, retry_in_seconds=wait)

    def answered(self) -> None:
        """The engine read a batch: an outage, if there was one, is over."""
        if self._outage.succeeded():
            log.info("engine.available_again")
            self._metrics.engine_available.set(1)
