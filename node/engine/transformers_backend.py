"""The ``transformers`` backend: the reference path, on CPU or CUDA.

Loads a QoQ-Med checkpoint directory of any family (VL-7B/32B: Qwen2.5-VL; QoQ-Med3: Qwen3-VL,
both through ``AutoModelForImageTextToText``; Omni: ``AutoModel`` with its own modelling code,
``trust_remote_code``), or a tiny test model of each; bf16 on CUDA, fp32 on CPU unless configured;
greedy by default; batches requests with left padding. Omni gets each request's ECG as
``time_series_data`` [requests, 8, 2500]. On CUDA,
``engine.transformers`` picks the attention kernel (SDPA or flash attention 2), a static KV cache
and the compile of its decode step (:func:`generation_options`); on any device it can run the vision tower on ONNX
Runtime (:mod:`node.engine.onnx_vision`).

The images a request carries are already pre-resized as training did (the frame the model's boxes
are in); the processor rounds them to its grid, and :meth:`TransformersEngine.generate` checks that
the grid it used (``image_grid_thw``) is the one the node recorded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from node.config import TransformersOptions
from node.engine import EngineRequest, EngineResult
from node.engine.chat import expected_grids, require_inputs_fit
from node.engine.checkpoint import Checkpoint, chat_prompt, load_processor, open_checkpoint
from node.engine.engine_cache import cache_root, model_fingerprint
from node.engine.errors import EngineLoadError
from node.engine.extras import require_transformers

if TYPE_CHECKING:
    import torch
    from transformers import BatchFeature, GenerationMixin, PreTrainedModel

    class GeneratingModel(PreTrainedModel, GenerationMixin):
        """A checkpoint's model as the auto classes load it: a ``PreTrainedModel`` that generates."""


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model(checkpoint: Checkpoint, dtype: torch.dtype, attention: str, device: str) -> GeneratingModel:
    """The checkpoint's model class for its family, loaded from the directory alone onto ``device``, for
    inference (``eval``)."""
    from transformers import AutoModel, AutoModelForImageTextToText

    loader = AutoModel if checkpoint.has_own_code else AutoModelForImageTextToText
    model = loader.from_pretrained(checkpoint.directory, dtype=dtype, attn_implementation=attention,
                                   local_files_only=True, trust_remote_code=checkpoint.has_own_code)
    return model.to(device).eval()  # type: ignore[arg-type]  # functools.wraps on PreTrainedModel.to hides self


def generation_options(options: TransformersOptions) -> dict[str, object]:
    """What ``generate`` is given for the KV cache and compilation: transformers compiles the decode step
    by itself whenever a static cache is used on CUDA, so ``compile`` is that compile (one ``CompileConfig``,
    prefill left eager) rather than a second ``torch.compile`` around it, and a static cache without
    ``compile`` turns it off (``disable_compile``) so that it costs no compile the configuration did not ask for."""
    if not options.static_cache:
        return {}
    if not options.compile:
        return {"cache_implementation": "static", "disable_compile": True}
    from transformers import CompileConfig

    return {"cache_implementation": "static", "compile_config": CompileConfig()}


class TransformersEngine:
    """QoQ-Med through Hugging Face transformers."""

    def __init__(self, model_dir: Path, device: str = "auto", dtype: str = "auto", family: str = "auto",
                 min_pixels: int | None = None, max_pixels: int | None = None,
                 options: TransformersOptions | None = None, cache_dir: Path | None = None) -> None:
        require_transformers("the transformers backend")
        checkpoint = open_checkpoint(model_dir, family, min_pixels, max_pixels)
        import torch
        from transformers import __version__ as transformers_version

        options = options or TransformersOptions()
        self.is_test_model = checkpoint.is_test_model
        self.profile = checkpoint.profile
        self.device = _pick_device(device)
        self.processor = load_processor(checkpoint)
        try:
            self.model = load_model(checkpoint, _pick_dtype(dtype, self.device), options.attention, self.device)
        except ImportError as exc:  # flash_attention_2 without the flash-attn package
            raise EngineLoadError(f"engine.transformers.attention {options.attention} cannot be used: {exc}") from exc
        self._cache = generation_options(options)
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

    def _inputs(self, requests: Sequence[EngineRequest]) -> BatchFeature:
        require_inputs_fit(requests, self.profile)
        texts = [chat_prompt(self.processor, request) for request in requests]
        images = [image.convert("RGB") for request in requests for image in request.images]
        extra = {}
        signals = [signal for request in requests for signal in request.time_series]
        if signals:
            extra["time_series_data"] = self._torch.stack([self._torch.from_numpy(s) for s in signals])
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt", **extra)
        if images:
            self._check_grids(requests, inputs["image_grid_thw"].tolist())
        return inputs.to(self.device)

    def _check_grids(self, requests: Sequence[EngineRequest], grid_thw: list[list[int]]) -> None:
        """Raise ``ValueError`` when the processor made another grid than the node recorded."""
        expected = [grid for request in requests for grid in expected_grids(request, self.profile)]
        used = [(w * self.profile.patch_size, h * self.profile.patch_size) for _, h, w in grid_thw]
        if used != expected:
            raise ValueError(f"the processor resized images to {used}, the node recorded {expected}: "
                             "the boxes would not be in the node's coordinates")

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
