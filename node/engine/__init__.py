"""The ``Engine`` protocol: a batch of requests in, a batch of results out.

Backends: ``transformers`` (the reference, CPU or CUDA), ``tensorrt-llm`` (the fast path on local
GPUs), ``openai`` (a remote OpenAI-compatible server: scale-out) and ``replay`` (recorded responses,
labelled as test results everywhere). Every backend returns results in request order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate: greedy unless ``temperature`` > 0. ``min_new_tokens`` > 0 forces that many
    tokens past the end-of-sequence (benchmarks: fixed work per request)."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    seed: int = 0
    min_new_tokens: int = 0


@dataclass(frozen=True)
class EngineRequest:
    """One study's model input: images at their recorded model size, the prompt (with one image marker
    per image), and for a model that takes one, the ECG signal ([8, 2500] float32)."""

    images: tuple[Image.Image, ...]
    prompt: str
    domain: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    time_series: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class EngineResult:
    """The model's text for one request, with token counts and timings."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    model: str  # the model's identity: name and version, for provenance
    is_test_result: bool  # True for the replay backend and test models: never clinical output


class Engine(Protocol):
    """A model backend."""

    @property
    def model_identity(self) -> str:
        """Name and version of the model, as provenance in every output."""
        ...

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run the model on a batch of requests; results in the same order."""
        ...
