"""The ``transformers`` backend: the reference path, on CPU or CUDA.

Loads a Qwen2.5-VL checkpoint directory (QoQ-Med-VL-7B/32B, or the tiny test model) with
``AutoProcessor`` and ``Qwen2_5_VLForConditionalGeneration``; bf16 on CUDA, fp32 on CPU unless
configured; greedy by default; batches requests with left padding. On CUDA,
``engine.transformers`` picks the attention kernel (SDPA or flash attention 2), a static KV cache
and ``torch.compile`` of the language model; on any device it can run the vision tower on ONNX
Runtime (:mod:`node.engine.onnx_vision`).

The images a request carries are already resized to the size their geometry records
(:func:`node.imaging.geometry.smart_resize` with the same pixel limits), so the processor's own
resize leaves them as they are and every box the model gives is in the recorded coordinates;
:meth:`TransformersEngine.generate` checks that it did.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from node.config import TransformersOptions
from node.engine import EngineRequest, EngineResult
from node.engine.chat import require_model_size
from node.engine.checkpoint import chat_prompt, load_processor, open_checkpoint
from node.engine.engine_cache import cache_root, model_fingerprint
from node.engine.errors import EngineLoadError


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class TransformersEngine:
    """QoQ-Med through Hugging Face transformers."""

    def __init__(self, model_dir: Path, device: str = "auto", dtype: str = "auto", min_pixels: int = 200_704,
                 max_pixels: int = 1_003_520, options: TransformersOptions | None = None,
                 cache_dir: Path | None = None) -> None:
        checkpoint = open_checkpoint(model_dir)
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration
        from transformers import __version__ as transformers_version

        options = options or TransformersOptions()
        self.is_test_model = checkpoint.is_test_model
        self.device = _pick_device(device)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.processor = load_processor(checkpoint, min_pixels, max_pixels)
        try:
            self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                checkpoint.directory, dtype=_pick_dtype(dtype, self.device), attn_implementation=options.attention,
                local_files_only=True,
            ).to(self.device).eval()
        except ImportError as exc:  # flash_attention_2 without the flash-attn package
            raise EngineLoadError(f"engine.transformers.attention {options.attention} cannot be used: {exc}") from exc
        if options.compile:
            self.model.model.language_model = torch.compile(self.model.model.language_model)
        self._cache = {"cache_implementation": "static"} if options.static_cache else {}
        self._torch = torch
        self._identity = f"{checkpoint.name}, transformers {transformers_version}"
        if options.vision == "onnx":
            from node.engine.onnx_vision import attach_onnx_tower

            tower = attach_onnx_tower(self.model, cache_root(checkpoint.directory, cache_dir),
                                      model_fingerprint(checkpoint.directory))
            self._identity += f", vision tower on ONNX Runtime ({tower.providers[0]})"

    @property
    def model_identity(self) -> str:
        """The checkpoint's name and the library that runs it."""
        return self._identity

    def _inputs(self, requests: Sequence[EngineRequest]):
        require_model_size(requests, self.min_pixels, self.max_pixels)
        texts = [chat_prompt(self.processor, request) for request in requests]
        images = [image.convert("RGB") for request in requests for image in request.images]
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Generate for a batch; all requests share the first request's settings."""
        if not requests:
            return []
        settings = requests[0].settings
        inputs = self._inputs(requests)
        started = time.perf_counter()
        self._torch.manual_seed(settings.seed)
        sampling = {"do_sample": True, "temperature": settings.temperature} if settings.temperature > 0 else {
            "do_sample": False}
        with self._torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=settings.max_new_tokens,
                                         min_new_tokens=settings.min_new_tokens, **sampling, **self._cache)
        seconds = time.perf_counter() - started
        prompt_length = inputs["input_ids"].shape[1]
        pad_id = self.processor.tokenizer.pad_token_id
        results = []
        for row, input_ids in zip(output, inputs["input_ids"], strict=True):
            generated = row[prompt_length:]
            completion_tokens = int((generated != pad_id).sum())
            text = self.processor.tokenizer.decode(generated, skip_special_tokens=True)
            results.append(EngineResult(text, int((input_ids != pad_id).sum()), completion_tokens, seconds,
                                        self._identity, self.is_test_model))
        return results
