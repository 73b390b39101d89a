"""The tensorrt-llm backend's own logic on the CPU: TensorRT-LLM cannot be installed here, so a
stand-in module takes the place of the library's ``LLM``/``SamplingParams``/``KvCacheConfig`` and
records what the backend gives them; everything else (the checkpoint, its processor and chat
template, the images, the cache, the errors) is the real code path."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from node.config import EngineConfig, TensorRtLlmOptions
from node.engine import EngineRequest, GenerationSettings
from node.engine import trtllm_backend as backend
from node.engine.engine_cache import cache_entry, cache_key, write_manifest
from node.engine.errors import EngineLoadError
from node.engine.factory import make_engine
from node.engine.prepare import calibration_requests, prepare
from node.engine.tiny import TINY_MODEL_NAME, build_tiny_checkpoint
from node.model.prompt import IMAGE_MARKER, build_prompt
from node.testing.synthetic import calibration_study

GPU = "NVIDIA H100 80GB HBM3"
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


class _Output:
    def __init__(self, text: str, prompt_length: int, generated: int) -> None:
        self.prompt_token_ids = list(range(prompt_length))
        self.outputs = [types.SimpleNamespace(text=text, token_ids=list(range(generated)))]


class _FakeLLM:
    """Records its arguments, the GPUs it was started on and every generate call; answers with the
    number of images and the length of the prompt, so results can be traced to their request."""

    instances: ClassVar[list[_FakeLLM]] = []

    def __init__(self, **arguments) -> None:
        self.arguments = arguments
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.calls: list[tuple[list[dict], list]] = []
        type(self).instances.append(self)

    def generate(self, inputs, sampling_params):
        self.calls.append((inputs, sampling_params))
        return [_Output(f"images={len(i.get('multi_modal_data', {}).get('image', []))} prompt={len(i['prompt'])}",
                        len(i["prompt"]), s.kwargs["max_tokens"]) for i, s in zip(inputs, sampling_params, strict=True)]


@pytest.fixture
def stand_in(monkeypatch) -> types.ModuleType:
    """``tensorrt_llm`` as a stand-in module, two visible GPUs."""
    module = types.ModuleType("tensorrt_llm")
    module.__version__ = "1.2.0"
    module.LLM = type("LLM", (_FakeLLM,), {"instances": []})
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(kwargs=kwargs)
    module.llmapi = types.SimpleNamespace(KvCacheConfig=lambda **kwargs: ("KvCacheConfig", kwargs))
    monkeypatch.setitem(sys.modules, "tensorrt_llm", module)
    monkeypatch.setattr(backend, "visible_gpus", lambda: 2)
    monkeypatch.setattr(backend, "gpu_name", lambda: GPU)
    return module


def _config(model: Path, **options) -> EngineConfig:
    return EngineConfig(backend="tensorrt-llm", model=model, tensorrt_llm=TensorRtLlmOptions(**options))


def _request(*sizes: tuple[int, int], tokens: int = 16) -> EngineRequest:
    images = tuple(Image.new("L", size, 100) for size in sizes)
    return EngineRequest(images, build_prompt("Findings?", len(images)), "*", GenerationSettings(max_new_tokens=tokens))


def test_without_the_library_or_a_gpu_start_up_says_what_to_use_instead(tiny_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # "not installed"
    with pytest.raises(EngineLoadError, match=r"pip install 'qoq-node\[gpu\]'.*'transformers'.*'openai'"):
        make_engine(_config(tiny_dir))
    monkeypatch.setitem(sys.modules, "tensorrt_llm", types.ModuleType("tensorrt_llm"))
    with pytest.raises(EngineLoadError, match=r"needs an NVIDIA GPU and none is visible; use engine\.backend"):
        make_engine(_config(tiny_dir))  # this machine has no GPU


def test_gpus_are_counted_and_split_between_replicas() -> None:
    with pytest.raises(EngineLoadError, match=r"2 replica\(s\) × 2 GPU\(s\) = 4 GPUs; 3 visible"):
        backend.require_gpus(TensorRtLlmOptions(replicas=2, tensor_parallel_size=2), 3)
    assert backend.replica_devices(TensorRtLlmOptions(replicas=2, tensor_parallel_size=2)) == ["0,1", "2,3"]
    assert backend.replica_devices(TensorRtLlmOptions(replicas=3)) == ["0", "1", "2"]


def test_requests_are_chat_templated_with_their_images_and_spread_over_replicas(stand_in, tiny_dir: Path) -> None:
    engine = make_engine(_config(tiny_dir, replicas=2, kv_cache_dtype="fp8", kv_cache_fraction=0.5,
                                 max_batch_size=16))
    first, second = stand_in.LLM.instances
    assert (first.devices, second.devices) == ("0", "1") and os.environ.get("CUDA_VISIBLE_DEVICES") is None
    assert first.arguments == {
        "model": str(tiny_dir), "tensor_parallel_size": 1, "max_batch_size": 16, "max_num_tokens": 16384,
        "kv_cache_config": ("KvCacheConfig", {"free_gpu_memory_fraction": 0.5, "dtype": "fp8",
                                              "enable_block_reuse": False}),
    }
    assert len(first.calls) == len(second.calls) == 1  # warmed up, each replica once
    assert engine.model_identity == (f"{TINY_MODEL_NAME} qwen2.5-vl (TEST MODEL, random weights), TensorRT-LLM 1.2.0 "
                                     "(bf16 weights, FP8 KV cache)")
    requests = [_request((448, 448)), _request((476, 476), (448, 448), tokens=7), _request(), _request((448, 476))]
    results = engine.generate(requests)
    assert [r.text.split()[0] for r in results] == ["images=1", "images=2", "images=0", "images=1"]
    assert [r.completion_tokens for r in results] == [16, 7, 16, 16]
    assert all(r.is_test_result and r.model == engine.model_identity for r in results)
    inputs, sampling = first.calls[-1][0] + second.calls[-1][0], first.calls[-1][1] + second.calls[-1][1]
    assert len(inputs) == 4  # two requests per replica
    two_images = next(i for i in inputs if len(i.get("multi_modal_data", {}).get("image", [])) == 2)
    assert two_images["prompt"].count(PLACEHOLDER) == 2 and two_images["prompt"].endswith("<|im_start|>assistant\n")
    assert [im.size for im in two_images["multi_modal_data"]["image"]] == [(476, 476), (448, 448)]
    assert all(im.mode == "RGB" for im in two_images["multi_modal_data"]["image"])
    assert sampling[0].kwargs == {"max_tokens": 16, "seed": 0, "top_k": 1}  # greedy
    assert backend.sampling_arguments(GenerationSettings(max_new_tokens=256, min_new_tokens=256, temperature=0.7)) \
        == {"max_tokens": 256, "seed": 0, "min_tokens": 256, "ignore_eos": True, "temperature": 0.7}
    with pytest.raises(ValueError, match="trained with at most 4"):
        engine.generate([_request(*[(300, 300)] * 5)])


def test_fp8_weights_need_the_prepared_checkpoint(stand_in, tiny_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_dir, quantization="fp8", warmup=False).model_copy(update={"cache_dir": tmp_path / "cache"})
    with pytest.raises(EngineLoadError, match="run 'qoq-node engine prepare --config FILE'"):
        make_engine(config)
    entry = cache_entry(config, "1.2.0", GPU)
    entry.mkdir(parents=True)  # half-built (no manifest): still not prepared
    with pytest.raises(EngineLoadError, match="no fp8 checkpoint prepared"):
        make_engine(config)
    write_manifest(entry, {"quantization": "fp8"})
    engine = make_engine(config)
    assert stand_in.LLM.instances[-1].arguments["model"] == str(entry)
    assert "FP8 weights" in engine.model_identity


def test_the_cache_key_names_precision_gpu_library_and_model(tiny_dir: Path, tmp_path: Path) -> None:
    key = cache_key(tiny_dir, "fp8", "1.2.0", GPU)
    assert key.startswith("fp8-nvidia-h100-80gb-hbm3-trtllm1.2.0-")
    assert cache_key(tiny_dir, "fp8", "1.2.1", GPU) != key and cache_key(tiny_dir, "fp8", "1.2.0", "L40S") != key
    changed = build_tiny_checkpoint(tmp_path / "other", seed=1)
    (changed / "model.safetensors").write_bytes((changed / "model.safetensors").read_bytes() + b"\0")
    assert cache_key(changed, "fp8", "1.2.0", GPU) != key
    default = EngineConfig(backend="tensorrt-llm", model=tiny_dir)
    assert cache_entry(default, "1.2.0", GPU).parent == tiny_dir.parent / "model.qoq-node-cache"


def test_prepare_says_what_it_did_or_why_it_cannot(stand_in, tiny_dir: Path, tmp_path: Path, monkeypatch) -> None:
    assert prepare(EngineConfig(), calibration_study) == "nothing to prepare for the transformers backend"
    assert prepare(_config(tiny_dir), calibration_study).startswith(
        "nothing to build: TensorRT-LLM's PyTorch workflow runs the bf16")
    monkeypatch.setitem(sys.modules, "modelopt", None)
    config = _config(tiny_dir, quantization="fp8").model_copy(update={"cache_dir": tmp_path / "cache"})
    with pytest.raises(EngineLoadError, match="needs NVIDIA ModelOpt"):
        prepare(config, calibration_study)
    assert not any((tmp_path / "cache").iterdir())  # nothing half-built is left behind
    write_manifest(_made(cache_entry(config, "1.2.0", GPU)), {"quantization": "fp8"})
    assert prepare(config, calibration_study) == f"already prepared: {cache_entry(config, '1.2.0', GPU)}"


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True)
    return directory


def test_calibration_inputs_are_made_like_the_nodes_own() -> None:
    requests = calibration_requests(EngineConfig(), calibration_study)
    assert len(requests) == 16 and {len(r.images) for r in requests} == {1, 2}  # a CR; a CT volume's 2 slices
    for request in requests:
        for image in request.images:  # pre-resized as training did: inside the trained bounds
            assert 65_536 * 0.99 <= image.width * image.height <= 524_288 and image.mode == "RGB"
        assert request.prompt.count(IMAGE_MARKER) == len(request.images)


def test_an_omni_checkpoint_is_refused_with_what_to_use(stand_in, tiny_family_dir) -> None:
    """TensorRT-LLM cannot run Omni's own modelling code (its ECG encoder): start-up says so."""
    with pytest.raises(EngineLoadError, match=r"cannot run the omni family .* use the transformers backend"):
        make_engine(_config(tiny_family_dir("omni")))
