"""Engines: the tiny checkpoint through the production transformers path, and replay."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from node.config import EngineConfig, load_config
from node.engine import EngineRequest, GenerationSettings
from node.engine.errors import EngineLoadError
from node.engine.factory import make_engine
from node.engine.replay import MODEL_IDENTITY, ReplayEngine, ReplayError
from node.engine.tiny import build_tiny_checkpoint
from node.engine.transformers_backend import TransformersEngine
from node.findings import locate, parse_output
from node.imaging.geometry import FrameRef, Geometry
from node.model.profiles import PROFILES
from node.model.prompt import build_prompt, question_text
from node.testing.synthetic import write_ct_study
from tests.reference import model_box

QWEN25 = PROFILES["qwen2.5-vl"]


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_tiny_checkpoint_is_small_and_byte_identical_per_seed(tiny_dir: Path, tmp_path: Path) -> None:
    again = subprocess.run([sys.executable, "-m", "node", "model", "tiny", str(tmp_path / "again"), "--seed", "0"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "Writing model shards" not in again.stderr and "it/s]" not in again.stderr  # no progress bar
    assert again.stdout.startswith("tiny qwen2.5-vl test checkpoint")  # no blank lines before what it says
    assert _digest(tmp_path / "again") == _digest(tiny_dir)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert _digest(other)["model.safetensors"] != _digest(tiny_dir)["model.safetensors"]
    assert sum(p.stat().st_size for p in tiny_dir.iterdir()) < 5_000_000


def _ct_image(tmp_path: Path) -> tuple[Image.Image, Geometry, np.ndarray]:
    """A real DICOM file's pixels (HU), windowed and pre-resized (nearest) as training did."""
    [path] = write_ct_study(tmp_path / "ct", slices=1, size=600).files
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = 40 - 200, 40 + 200
    grey = (np.clip((hu - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    size = QWEN25.model_size(ds.Columns, ds.Rows)
    geometry = Geometry.single(FrameRef(ds.SOPInstanceUID, 1, ds.Rows, ds.Columns), size, QWEN25.grid_size(*size))
    image = Image.fromarray(grey).resize(size, Image.Resampling.NEAREST).convert("RGB")
    return image, geometry, hu


def test_transformers_backend_generates_deterministically_and_parses(tiny_engine, tmp_path: Path) -> None:
    image, geometry, _ = _ct_image(tmp_path)
    request = EngineRequest((image,), build_prompt(question_text("What are the findings?", ["Mass", "Nodule"]), 1),
                            "ct", GenerationSettings(max_new_tokens=24))
    first, second = tiny_engine.generate([request, request])
    assert first.text == second.text  # batched, left-padded, greedy
    again = tiny_engine.generate([request])[0]
    assert again.text == first.text  # and the same on its own
    assert first.completion_tokens > 0 and first.prompt_tokens > QWEN25.visual_tokens(geometry.width, geometry.height)
    assert first.is_test_result and "TEST MODEL" in first.model
    findings = locate(parse_output(first.text), [geometry])  # meaningless text: parsed without error
    assert findings.raw_text == first.text


def test_a_processor_that_resizes_otherwise_than_recorded_is_refused(tiny_dir: Path) -> None:
    """A checkpoint whose processor would shrink images further than the grid the node recorded (here its
    budget cut to 224²) is caught: its boxes would not be in the node's coordinates."""
    engine = TransformersEngine(tiny_dir, device="cpu")
    request = EngineRequest((Image.new("RGB", (500, 500)),), build_prompt("x", 1), "ct", GenerationSettings(2))
    assert engine.generate([request])[0].completion_tokens > 0
    engine.processor.image_processor.size = {"shortest_edge": 3136, "longest_edge": 224 * 224}
    with pytest.raises(ValueError, match="the processor resized images"):
        engine.generate([request])


def test_a_prompt_whose_markers_do_not_match_its_images_is_refused(tiny_engine) -> None:
    request = EngineRequest((Image.new("RGB", (300, 300)),), "no marker", "ct", GenerationSettings(2))
    with pytest.raises(ValueError, match="0 image markers for 1 images"):
        tiny_engine.generate([request])


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match=r"qoq-node model tiny"):
        TransformersEngine(tmp_path)
    with pytest.raises(EngineLoadError, match=r"engine\.model is not set"):
        make_engine(EngineConfig())


def test_factory_builds_the_configured_backend(tiny_dir: Path, tmp_path: Path) -> None:
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"*": "\\boxed{No finding}"}))
    assert isinstance(make_engine(EngineConfig(backend="replay", replay_responses=responses)), ReplayEngine)
    engine = make_engine(EngineConfig(model=tiny_dir, device="cpu"))
    assert isinstance(engine, TransformersEngine) and engine.device == "cpu"


def test_replay_box_on_a_synthetic_lesion_lands_on_the_lesion(tmp_path: Path) -> None:
    image, geometry, hu = _ct_image(tmp_path)
    rows, columns = np.nonzero(hu > 200)  # the phantom's dense lesion (+300 HU over water)
    edges = (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
    x1, y1, x2, y2 = model_box(tuple(map(float, edges)), *hu.shape)
    recorded = (f"<think>Dense focus.</think>\n```json\n[{{\"bbox_2d\": [{round(x1)}, {round(y1)}, {round(x2)}, "
                f"{round(y2)}], \"label\": \"mass\"}}]\n```\n\\boxed{{Mass}}")
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"ct": recorded, "*": "\\boxed{No finding}"}))
    engine = ReplayEngine.from_file(responses)
    [result, other] = engine.generate([
        EngineRequest((image,), "q", "ct"), EngineRequest((image,), "q", "fundus")])
    assert result.is_test_result and result.model == MODEL_IDENTITY
    assert parse_output(other.text).labels == ("No finding",)
    [box] = locate(parse_output(result.text), [geometry]).boxes
    assert box.label == "mass"
    got = (box.source.column_min, box.source.row_min, box.source.column_max, box.source.row_max)
    assert all(abs(g - w) <= 1 for g, w in zip(got, edges, strict=True))  # within one source pixel


def test_replay_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ReplayError, match="JSON object"):
        ReplayEngine.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ReplayError, match="not valid JSON"):
        ReplayEngine.from_file(bad)
    with pytest.raises(ReplayError, match="cannot read"):
        ReplayEngine.from_file(tmp_path / "absent.json")


def test_engine_config_checks() -> None:
    with pytest.raises(Exception, match="replay_responses is required"):
        load_config(None, environ={"QOQ_NODE__ENGINE__BACKEND": "replay"})
    with pytest.raises(Exception, match="min_pixels is above max_pixels"):
        load_config(None, environ={"QOQ_NODE__ENGINE__MIN_PIXELS": "2000000", "QOQ_NODE__ENGINE__MAX_PIXELS": "100000"})
    with pytest.raises(Exception, match=r"engine\.device"):
        load_config(None, environ={"QOQ_NODE__ENGINE__DEVICE": "tpu"})


@pytest.mark.parametrize(("height", "width"), [(512, 512), (2500, 3000), (300, 1200), (64, 80), (4000, 3000)])
def test_processor_grid_is_the_recorded_one(tiny_engine, height: int, width: int) -> None:
    """Our smart_resize is the processor's: the grid the node records is the grid the model sees."""
    grid = tiny_engine.processor.image_processor(images=[Image.new("RGB", (width, height))],
                                                 return_tensors="pt")["image_grid_thw"][0]
    assert (int(grid[2]) * 14, int(grid[1]) * 14) == tiny_engine.profile.grid_size(width, height)


def test_cuda_speed_options_keep_the_tokens_and_a_missing_kernel_is_named(tiny_dir: Path,
                                                                          tiny_engine: TransformersEngine) -> None:
    """The static KV cache (used with torch.compile on CUDA) gives the reference's tokens; flash
    attention without its package is a start-up error that names the key."""
    from node.config import TransformersOptions

    requests = [EngineRequest((Image.new("L", (448, 448), 100),), build_prompt("Findings?", 1), "*",
                              GenerationSettings(24)),
                EngineRequest((Image.new("L", (476, 448), 30),), build_prompt("Findings?", 1), "*",
                              GenerationSettings(24))]
    static = TransformersEngine(tiny_dir, device="cpu", options=TransformersOptions(static_cache=True))
    assert [r.text for r in static.generate(requests)] == [r.text for r in tiny_engine.generate(requests)]
    with pytest.raises(EngineLoadError, match=r"engine\.transformers\.attention flash_attention_2 cannot be used"):
        TransformersEngine(tiny_dir, device="cpu", options=TransformersOptions(attention="flash_attention_2"))


def _compiled_frames(engine: TransformersEngine, requests: list[EngineRequest]) -> tuple[int, list[str]]:
    """Frames torch.compile compiled while ``engine`` generated, with transformers made to compile on the CPU
    as it does on CUDA (its ``_compile_all_devices``; the eager backend: no C compiler needed)."""
    import torch._dynamo
    from transformers import CompileConfig

    on_every_device = CompileConfig(backend="eager", mode=None)
    on_every_device._compile_all_devices = True
    engine._cache["compile_config"] = on_every_device
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["frames"]["ok"]
    texts = [result.text for result in engine.generate(requests)]
    return torch._dynamo.utils.counters["frames"]["ok"] - before, texts


def test_compile_is_transformers_own_once_and_a_static_cache_alone_compiles_nothing(
        tiny_dir: Path, tiny_engine: TransformersEngine) -> None:
    """On CUDA transformers compiles the decode step of a static cache by itself: ``compile`` is that
    compile and nothing more (the language model is not wrapped a second time), and ``static_cache``
    without ``compile`` compiles nothing; the tokens stay the reference's. ``compile`` without the static
    cache is refused."""
    from pydantic import ValidationError

    from node.config import TransformersOptions

    requests = [EngineRequest((Image.new("L", (448, 448), 100),), build_prompt("Findings?", 1), "*",
                              GenerationSettings(6))]
    reference = [result.text for result in tiny_engine.generate(requests)]
    compiled = TransformersEngine(tiny_dir, device="cpu",
                                  options=TransformersOptions(static_cache=True, compile=True))
    assert type(compiled.model.model.language_model).__name__ != "OptimizedModule"
    assert type(compiled._cache["compile_config"]).__name__ == "CompileConfig"  # the engine asks for it
    frames, texts = _compiled_frames(compiled, requests)
    assert frames > 0 and texts == reference
    static = TransformersEngine(tiny_dir, device="cpu", options=TransformersOptions(static_cache=True))
    assert _compiled_frames(static, requests) == (0, reference)
    with pytest.raises(ValidationError, match="compile needs static_cache"):
        TransformersOptions(compile=True)


def test_the_benchmark_shape_is_qwen25_vl_7b() -> None:
    """The 7B shape the engine benchmark builds has QoQ-Med-VL-7B's size (about 8.3 B parameters)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from node.engine.shapes import QWEN25_VL_7B_TEXT, QWEN25_VL_7B_VISION

    config = Qwen2_5_VLConfig(text_config=QWEN25_VL_7B_TEXT, vision_config=QWEN25_VL_7B_VISION)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert 8.2e9 < parameters < 8.4e9
    assert sum(p.numel() for p in model.model.visual.parameters()) < 0.7e9
