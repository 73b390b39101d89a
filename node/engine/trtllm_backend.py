"""The ``tensorrt-llm`` backend: QoQ-Med through TensorRT-LLM's LLM API on the node's own GPUs.

TensorRT-LLM runs Qwen2.5-VL in its PyTorch workflow with multimodal inputs: each request is the
chat-templated prompt (the same template the reference backend uses) with its images under
``multi_modal_data``. The library batches requests in flight; ``engine.tensorrt_llm`` sets KV-cache
share and dtype, batch and token limits, tensor parallelism (32B) and replicas (7B: one per GPU,
requests spread over them). FP8 weights come from the checkpoint ``qoq-node engine prepare`` writes.
A warm-up request at start keeps the first study from paying for kernel selection and graph capture.

Everything that does not need the library (arguments, request building, output mapping, errors)
is plain code here, tested on the CPU; the library itself is imported only when the engine loads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image

from node.config import EngineConfig, TensorRtLlmOptions
from node.engine import EngineRequest, EngineResult, GenerationSettings
from node.engine.chat import require_inputs_fit
from node.engine.checkpoint import Checkpoint, chat_prompt, load_processor, open_checkpoint
from node.engine.engine_cache import prepared_checkpoint
from node.engine.errors import EngineLoadError
from node.model.prompt import build_prompt
from node.ops.logging import get_logger

log = get_logger("engine.trtllm")

INSTEAD = "use engine.backend 'transformers' (CPU or CUDA) or 'openai' (a remote GPU server) instead"


def import_tensorrt_llm() -> ModuleType:
    """The ``tensorrt_llm`` module, or an :class:`EngineLoadError` that says what to do."""
    try:
        import tensorrt_llm
    except ImportError as exc:
        raise EngineLoadError(f"the tensorrt-llm backend needs TensorRT-LLM, which is not installed here ({exc}); "
                              f"install it on a GPU host with pip install 'qoq-node[gpu]', or {INSTEAD}") from exc
    return tensorrt_llm


def visible_gpus() -> int:
    """How many CUDA GPUs this process can use."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_name() -> str:
    """The first visible GPU's name (part of the prepared checkpoint's cache key)."""
    import torch

    return torch.cuda.get_device_name(0)


def require_gpus(options: TensorRtLlmOptions, available: int) -> None:
    """Raise :class:`EngineLoadError` unless ``replicas × tensor_parallel_size`` GPUs are there."""
    needed = options.replicas * options.tensor_parallel_size
    if available == 0:
        raise EngineLoadError(f"the tensorrt-llm backend needs an NVIDIA GPU and none is visible; {INSTEAD}")
    if needed > available:
        raise EngineLoadError(f"engine.tensorrt_llm asks for {options.replicas} replica(s) × "
                              f"{options.tensor_parallel_size} GPU(s) = {needed} GPUs; {available} visible")


def replica_devices(options: TensorRtLlmOptions) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each replica: consecutive groups of ``tensor_parallel_size`` GPUs."""
    size = options.tensor_parallel_size
    return [",".join(str(r * size + i) for i in range(size)) for r in range(options.replicas)]


def llm_arguments(options: TensorRtLlmOptions, checkpoint: Path, llmapi: ModuleType) -> dict[str, Any]:
    """Keyword arguments of ``tensorrt_llm.LLM`` (the PyTorch workflow, the default LLM since 1.0) for one
    replica. The LLM's arguments forbid unknown keys: the KV cache's dtype belongs to ``KvCacheConfig``."""
    return {
        "model": str(checkpoint),
        "tensor_parallel_size": options.tensor_parallel_size,
        "max_batch_size": options.max_batch_size,
        "max_num_tokens": options.max_num_tokens,
        # the KV cache of one image cannot be reused for another: no block reuse for multimodal prompts
        "kv_cache_config": llmapi.KvCacheConfig(free_gpu_memory_fraction=options.kv_cache_fraction,
                                                dtype=options.kv_cache_dtype, enable_block_reuse=False),
    }


def sampling_arguments(settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments of ``tensorrt_llm.SamplingParams`` (greedy unless a temperature is set)."""
    arguments: dict[str, Any] = {"max_tokens": settings.max_new_tokens, "seed": settings.seed}
    if settings.min_new_tokens:
        arguments.update(min_tokens=settings.min_new_tokens, ignore_eos=True)
    if settings.temperature > 0:
        arguments["temperature"] = settings.temperature
    else:
        arguments["top_k"] = 1
    return arguments


def llm_input(prompt: str, images: Sequence[Image.Image]) -> dict[str, Any]:
    """One request as the LLM API takes multimodal input."""
    entry: dict[str, Any] = {"prompt": prompt}
    if images:
        entry["multi_modal_data"] = {"image": [image.convert("RGB") for image in images]}
    return entry


def engine_result(output: Any, seconds: float, identity: str, is_test: bool) -> EngineResult:
    """An LLM API ``RequestOutput`` as the node's result: first completion's text and token counts."""
    completion = output.outputs[0]
    return EngineResult(text=completion.text or "", prompt_tokens=len(output.prompt_token_ids or ()),
                        completion_tokens=len(completion.token_ids or ()), seconds=seconds, model=identity,
                        is_test_result=is_test)


class TensorRtLlmEngine:
    """QoQ-Med on TensorRT-LLM, one LLM per replica."""

    def __init__(self, config: EngineConfig) -> None:
        assert config.model is not None  # make_engine guarantees it
        options = config.tensorrt_llm
        library = import_tensorrt_llm()
        require_gpus(options, visible_gpus())
        checkpoint: Checkpoint = open_checkpoint(config.model, config.family, config.min_pixels, config.max_pixels)
        if checkpoint.has_own_code:
            raise EngineLoadError(f"TensorRT-LLM cannot run the {checkpoint.profile.family} family (its own "
                                  "modelling code and ECG encoder); use the transformers backend")
        served = config.model
        if options.quantization == "fp8":
            served = prepared_checkpoint(config, library.__version__, gpu_name())
        self._options, self._library = options, library
        self.profile = checkpoint.profile
        self.is_test_model = checkpoint.is_test_model
        self.processor = load_processor(checkpoint)
        self._llms = [self._replica(served, devices) for devices in replica_devices(options)]
        self._next = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(len(self._llms), thread_name_prefix="trtllm")
        quantization = "FP8 weights" if options.quantization == "fp8" else "bf16 weights"
        kv = ", FP8 KV cache" if options.kv_cache_dtype == "fp8" else ""
        self._identity = f"{checkpoint.name}, TensorRT-LLM {library.__version__} ({quantization}{kv})"
        if options.warmup:
            self._warm_up()

    def _replica(self, checkpoint: Path, devices: str) -> Any:
        # The LLM's worker processes take the GPUs they see when they start.
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        try:
            return self._library.LLM(**llm_arguments(self._options, checkpoint, self._library.llmapi))
        except Exception as exc:  # the library's own errors: out of memory, unsupported GPU, bad checkpoint
            raise EngineLoadError(f"TensorRT-LLM cannot load {checkpoint} on GPU(s) {devices}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous

    def _warm_up(self) -> None:
        started = time.perf_counter()
        image = Image.new("L", (448, 448), 0)
        request = EngineRequest((image,), build_prompt("Warm-up.", 1), "*", GenerationSettings(max_new_tokens=8))
        for llm in self._llms:
            self._run(llm, [request])
        log.info("engine.warmed_up", replicas=len(self._llms), seconds=round(time.perf_counter() - started, 2))

    @property
    def model_identity(self) -> str:
        """The checkpoint's name, TensorRT-LLM's version and the precision."""
        return self._identity

    def _run(self, llm: Any, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        inputs = [llm_input(chat_prompt(self.processor, r), r.images) for r in requests]
        sampling = [self._library.SamplingParams(**sampling_arguments(r.settings)) for r in requests]
        started = time.perf_counter()
        outputs = llm.generate(inputs, sampling_params=sampling)
        seconds = time.perf_counter() - started
        return [engine_result(output, seconds, self._identity, self.is_test_model) for output in outputs]

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Spread the batch over the replicas (in-flight batching within each); results in request order."""
        if not requests:
            return []
        require_inputs_fit(requests, self.profile)
        with self._lock:
            first, self._next = self._next, (self._next + len(requests)) % len(self._llms)
        shares: list[list[int]] = [[] for _ in self._llms]
        for index in range(len(requests)):
            shares[(first + index) % len(self._llms)].append(index)
        futures = {replica: self._pool.submit(self._run, self._llms[replica], [requests[i] for i in indexes])
                   for replica, indexes in enumerate(shares) if indexes}
        results: list[EngineResult | None] = [None] * len(requests)
        for replica, future in futures.items():
            for index, result in zip(shares[replica], future.result(), strict=True):
                results[index] = result
        return [result for result in results if result is not None]
