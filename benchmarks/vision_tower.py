"""Vision tower: torch vs ONNX Runtime, the QoQ-Med-VL-7B tower shape (random weights), float32.

    python -m benchmarks.vision_tower --side 448 --rounds 3            # CPU
    python -m benchmarks.vision_tower --side 1008 --device cuda        # GPU (ONNX Runtime's best provider)

Builds Qwen2.5-VL-7B's vision tower (32 blocks, hidden 1280, window attention with full attention at
blocks 7/15/23/31, merger to 3584), exports it with :mod:`node.engine.onnx_vision`, and times one
image of ``--side``² pixels through each. The option is worth keeping only where ONNX Runtime wins.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from node.engine.onnx_vision import GRAPH_LAYOUT, OnnxVisionTower, export_tower
from node.engine.shapes import QWEN25_VL_7B_VISION


def _median_seconds(run, rounds: int) -> tuple[float, list[float]]:
    run()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times), [round(t, 3) for t in times]


def measure_tower(side: int, device: str, rounds: int, workdir: Path, vision: dict | None = None,
                  onnx_too: bool = True) -> dict:
    """Time one ``side``² image through the torch tower and (``onnx_too``) its ONNX Runtime export
    (``vision``: the tower's shape, QoQ-Med-VL-7B's by default); the figures as a dict."""
    config = Qwen2_5_VLConfig(vision_config=vision or QWEN25_VL_7B_VISION).vision_config
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    tower = Qwen2_5_VisionTransformerPretrainedModel(config).eval().to(device)
    patch = config.patch_size
    grid = torch.tensor([[1, side // patch, side // patch]], device=device)
    patches = torch.randn(int(grid.prod()), 3 * config.temporal_patch_size * patch * patch, device=device)
    figures: dict = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU",
                     "torch": torch.__version__, "side": side, "patches": int(grid.prod()),
                     "parameters": sum(p.numel() for p in tower.parameters())}
    with torch.inference_mode():
        torch_median, torch_runs = _median_seconds(lambda: tower(patches, grid_thw=grid), rounds)
    figures.update(torch_median_s=round(torch_median, 3), torch_runs=torch_runs)
    if not onnx_too:
        return figures
    shape = "7b-shape" if vision is None else f"depth{config.depth}-hidden{config.hidden_size}"
    directory = workdir / f"vision-{GRAPH_LAYOUT}-{shape}-{side}"
    started = time.perf_counter()
    path = directory / "tower.onnx" if (directory / "tower.onnx").is_file() else export_tower(tower, directory)
    export_seconds = time.perf_counter() - started
    onnx = OnnxVisionTower(tower, path, directory)
    with torch.inference_mode():
        onnx_median, onnx_runs = _median_seconds(lambda: onnx(patches, grid), rounds)
        difference = (tower(patches, grid_thw=grid).pooler_output - onnx(patches, grid).pooler_output).abs().max()
    return {**figures, "export_seconds": round(export_seconds, 1), "onnx_providers": onnx.providers,
            "onnx_median_s": round(onnx_median, 3), "onnx_runs": onnx_runs, "max_abs_difference": float(difference)}


def main() -> None:
    """Time the torch tower and the ONNX Runtime tower on one image."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=448, help="image side in pixels (a multiple of 28)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qoq-vision-benchmark")
    args = parser.parse_args()
    print(json.dumps(measure_tower(args.side, args.device, args.rounds, args.workdir), indent=2))


if __name__ == "__main__":
    main()
