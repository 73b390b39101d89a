"""The engine's section: which backend reads studies, and each backend's own options."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from node.config.base import Section


class TransformersOptions(Section):
    """Speed options of the ``transformers`` backend (they matter on CUDA; the CPU reference keeps the defaults)."""

    attention: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        default="sdpa", description="flash_attention_2 needs the flash-attn package and a CUDA GPU.")
    static_cache: bool = Field(default=False, description="Static KV cache: fixed shapes, for compile.")
    compile: bool = Field(default=False, description="Compile the decode step with torch.compile (CUDA; needs "
                          "static_cache; the first batches of a new size compile again).")
    vision: Literal["torch", "onnx"] = Field(
        default="torch", description="onnx: the vision tower on ONNX Runtime (TensorRT, CUDA or CPU provider), "
        "exported once per checkpoint into engine.cache_dir.")

    @model_validator(mode="after")
    def _compile_needs_static_cache(self) -> TransformersOptions:
        if self.compile and not self.static_cache:
            raise ValueError("compile needs static_cache: true (transformers compiles the decode step of a static "
                             "KV cache; a growing cache would compile at every length)")
        return self


class TensorRtLlmOptions(Section):
    """The ``tensorrt-llm`` backend: TensorRT-LLM's LLM API on the node's own GPUs."""

    quantization: Literal["none", "fp8"] = Field(
        default="none", description="fp8: FP8 weights, from the checkpoint 'qoq-node engine prepare' makes.")
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    kv_cache_fraction: float = Field(default=0.6, gt=0, lt=1, description="Share of free GPU memory for KV cache.")
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Sequences in flight at once.")
    max_num_tokens: int = Field(default=16384, ge=256, description="Tokens per scheduler step (prefill chunk).")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs per replica (2-4 for 32B).")
    replicas: int = Field(default=1, ge=1, le=64, description="Model replicas, each on its own GPU(s) (7B: 1/GPU).")
    warmup: bool = Field(default=True, description="Run one request at start so the first study is not slow.")


class OpenAIOptions(Section):
    """The ``openai`` backend: QoQ-Med on an OpenAI-compatible server (trtllm-serve, vLLM, engine serve)."""

    url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The server's API root, e.g. http://qoq-engine:8000/v1.")
    served_model: str | None = Field(default=None, description="The model name the server serves.")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (never the key itself).")
    timeout_seconds: float = Field(default=300.0, gt=0, description="Seconds one request may take.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight at once.")
    retries: int = Field(default=3, ge=0, le=20, description="Retries of a request the server could not answer "
                         "(connection error, timeout, 429, 5xx), with backoff.")


class EngineConfig(Section):
    """The model backend."""

    backend: Literal["transformers", "tensorrt-llm", "openai", "replay"] = "transformers"
    model: Path | None = Field(
        default=None,
        description="Checkpoint directory (QoQ-Med-VL-7B/32B). Unset: a tiny random TEST model is built "
        "under storage.root on first start, and every result says it comes from a test model.",
    )
    family: Literal["auto", "qwen2.5-vl", "qwen3-vl", "omni"] = Field(
        default="auto", description="The model family: auto reads it from the checkpoint's config.json (with the "
        "openai or replay backend, which have no checkpoint here, auto means qwen2.5-vl).")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_new_tokens: int = Field(default=1024, ge=1, le=32768, description="Longest answer (training allowed 4000; "
                                "fewer than ~1000 cut the reasoning short).")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy, reproducible (the default); "
                               "training validated at 0.5.")
    min_pixels: int | None = Field(default=None, ge=1024, description="Pre-resize lower bound in pixels; unset: the "
                                   "family's trained bound (65536).")
    max_pixels: int | None = Field(default=None, ge=1024, description="Pre-resize upper bound in pixels; unset: the "
                                   "family's trained bound (524288).")
    replay_responses: Path | None = Field(default=None, description="JSON file of recorded responses (replay).")
    cache_dir: Path | None = Field(
        default=None, description="Where prepared artefacts are kept (FP8 checkpoint, ONNX vision tower); default: "
        "next to the model (<model>.qoq-node-cache). Set it when the model volume is read-only.")
    transformers: TransformersOptions = TransformersOptions()
    tensorrt_llm: TensorRtLlmOptions = TensorRtLlmOptions()
    openai: OpenAIOptions = OpenAIOptions()

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is above max_pixels")
        if self.backend == "replay" and self.replay_responses is None:
            raise ValueError("replay_responses is required for the replay backend")
        if self.backend == "openai":
            missing = [f"openai.{key}" for key in ("url", "served_model") if getattr(self.openai, key) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required for the openai backend")
        return self
