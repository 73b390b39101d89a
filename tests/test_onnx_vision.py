"""The vision tower on ONNX Runtime (CPU provider here): the same image embeddings as torch and the
same generated tokens, exported once per checkpoint into the engine cache."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from node.config import TransformersOptions
from node.engine import EngineRequest, GenerationSettings
from node.engine.engine_cache import model_fingerprint
from node.engine.onnx_vision import GRAPH_LAYOUT, ExportableTower, OnnxVisionTower, tower_inputs, window_layout
from node.engine.transformers_backend import TransformersEngine
from node.model.prompt import build_prompt


def _requests() -> list[EngineRequest]:
    """Images of different grids and windows in one batch: one study of one image, one of two."""
    noise = [Image.effect_noise(size, sigma).convert("L") for size, sigma in (((476, 448), 50), ((448, 448), 80))]
    return [EngineRequest((noise[0],), build_prompt("Findings?", 1), "*", GenerationSettings(24)),
            EngineRequest((noise[1], Image.new("L", (560, 448), 30)), build_prompt("Compare.", 2), "*",
                          GenerationSettings(24))]


def test_onnx_tower_matches_torch_and_generation_gives_the_same_tokens(tiny_dir: Path, tmp_path: Path) -> None:
    reference = TransformersEngine(tiny_dir, device="cpu")
    onnx = TransformersEngine(tiny_dir, device="cpu", options=TransformersOptions(vision="onnx"),
                              cache_dir=tmp_path / "cache")
    tower = onnx.model.model.visual
    assert isinstance(tower, OnnxVisionTower) and tower.providers == ["CPUExecutionProvider"]
    assert (tmp_path / "cache" / f"vision-{GRAPH_LAYOUT}-{model_fingerprint(tiny_dir)}" / "tower.onnx").is_file()
    assert "vision tower on ONNX Runtime (CPUExecutionProvider)" in onnx.model_identity

    requests = _requests()  # noise images: made once, given to both
    inputs = reference._inputs(requests)
    torch_tower = reference.model.model.visual
    grids = inputs["image_grid_thw"]
    with torch.inference_mode():
        expected = torch_tower(inputs["pixel_values"], grid_thw=grids).pooler_output
        rebuilt = torch.cat([ExportableTower(torch_tower)(**tower_inputs(torch_tower, patches, grid[None]))
                             for patches, grid in zip(torch.split(inputs["pixel_values"], grids.prod(-1).tolist()),
                                                      grids, strict=True)])
        exported = tower(inputs["pixel_values"], grids).pooler_output
    assert expected.shape == exported.shape == (sum(int(g.prod()) for g in grids) // 4, 64)
    torch.testing.assert_close(rebuilt, expected, rtol=1e-5, atol=1e-6)  # the re-written tower is the tower
    torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-5)  # and ONNX Runtime runs it the same

    assert [r.text for r in onnx.generate(requests)] == [r.text for r in reference.generate(requests)]


def test_the_export_is_reused(tiny_dir: Path, tmp_path: Path) -> None:
    options = TransformersOptions(vision="onnx")
    TransformersEngine(tiny_dir, device="cpu", options=options, cache_dir=tmp_path)
    [exported] = tmp_path.glob("vision-*/tower.onnx")
    stamp = exported.stat().st_mtime_ns
    TransformersEngine(tiny_dir, device="cpu", options=options, cache_dir=tmp_path)
    assert exported.stat().st_mtime_ns == stamp and not list(tmp_path.glob("*.partial"))


def test_window_layout_pads_windows_and_scatters_back() -> None:
    # three windows of 4, 2 and 3 patches; an empty window (a repeated bound) is dropped
    layout = window_layout(torch.tensor([0, 4, 4, 6, 9], dtype=torch.int32))
    assert layout["window_gather"].shape == layout["window_valid"].shape == (3, 4)
    assert layout["window_valid"].sum(dim=1).tolist() == [4, 2, 3]
    assert layout["window_gather"][layout["window_valid"]].tolist() == list(range(9))  # each position once
    positions = layout["window_gather"].reshape(-1)[layout["window_scatter"]]
    assert positions.tolist() == list(range(9))  # the scatter puts every window slot back where it came from
