"""The ``transformers`` backend: the reference path, on CPU or CUDA.

Loads a Qwen2.5-VL checkpoint directory (QoQ-Med-VL-7B/32B, or the tiny test model) with
``AutoProcessor`` and ``Qwen2_5_VLForConditionalGeneration``; bf16 on CUDA, fp32 on CPU unless
configured; greedy by default; batches requests with left padding.

The images a request carries are already resized to the size their geometry records
(:func:`node.imaging.geometry.smart_resize` with the same pixel limits), so the processor's own
resize leaves them as they are and every box the model gives is in the recorded coordinates;
:meth:`TransformersEngine.generate` checks that it did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from node.engine import EngineRequest, EngineResult
from node.engine.errors import EngineLoadError
from node.engine.tiny import TINY_MARKER, TINY_MODEL_NAME
from node.imaging.geometry import smart_resize


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
                 max_pixels: int = 1_003_520) -> None:
        model_dir = Path(model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise EngineLoadError(f"{model_dir} is not a model directory (no config.json); "
                                  "set engine.model to the QoQ-Med weights or run 'qoq-node model tiny DIR'")
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        from transformers import __version__ as transformers_version

        config = json.loads(config_path.read_text())
        self.is_test_model = bool(config.get(TINY_MARKER))
        self.device = _pick_device(device)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        # transformers 5 keeps the visual budget in the image processor's size
        self.processor.image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        self.processor.tokenizer.padding_side = "left"
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_dir, dtype=_pick_dtype(dtype, self.device), attn_implementation="sdpa", local_files_only=True
        ).to(self.device).eval()
        self._torch = torch
        name = f"{TINY_MODEL_NAME} (TEST MODEL, random weights)" if self.is_test_model else model_dir.name
        self._identity = f"{name}, transformers {transformers_version}"

    @property
    def model_identity(self) -> str:
        """The checkpoint's name and where it was loaded from."""
        return self._identity

    def _inputs(self, requests: Sequence[EngineRequest]):
        texts, images = [], []
        for request in requests:
            for image in request.images:
                expected = smart_resize(image.height, image.width, self.min_pixels, self.max_pixels)
                if expected != (image.height, image.width):
                    raise ValueError(f"image {image.width}×{image.height} is not at its model size; "
                                     "resize it with its geometry first")
            content = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]
            messages = [{"role": "user", "content": content}]
            texts.append(self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.extend(image.convert("RGB") for image in request.images)
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
            output = self.model.generate(**inputs, max_new_tokens=settings.max_new_tokens, **sampling)
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
