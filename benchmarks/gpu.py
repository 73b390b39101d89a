"""The GPU figures in one short run, within a time budget.

    python -m benchmarks.gpu --out /tmp/gpu-figures                  # on a GPU host (see benchmarks/gpu.sh)
    python -m benchmarks.gpu --dry-run --out /tmp/gpu-dry-run         # anywhere: the tiny shape on the CPU

Steps, in order, each only if the budget (``--budget-s``, 420 s by default) still holds its estimated
cost — a skipped step is written down with the reason instead of overrunning:

1. build the QoQ-Med-VL-7B-shaped model with random bf16 weights on the GPU (no download);
2. the node's chest radiograph workload (benchmarks/engine.py) through the ``transformers`` backend
   with eager attention, SDPA, and SDPA + static KV cache + torch.compile, at each ``--concurrency``
   (1 and 32): time to first token, decode tokens/s, studies/hour, peak GPU memory;
3. batch-1 decode as a fraction of the HBM roofline (weight bytes ÷ bandwidth per token; H200: 4.8 TB/s);
4. the vision tower at ``--side``² (1008) in torch and on ONNX Runtime (whichever provider exists).

Writes ``gpu-benchmark.json`` and ``gpu-benchmark.md`` (a table) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from benchmarks.engine import build_7b_checkpoint, hbm_bandwidth, measure, parameter_bytes, workload
from benchmarks.vision_tower import measure_tower
from node.config import EngineConfig, TransformersOptions
from node.engine.tiny import build_tiny_checkpoint
from node.engine.transformers_backend import TransformersEngine

#: Estimated seconds a torch.compile row adds before its first figure (compilation at two shapes).
COMPILE_ESTIMATE_S = 150.0
#: Estimated seconds of the vision tower step (ONNX export of the 7B tower, then a few runs).
TOWER_ESTIMATE_S = 90.0
#: The tiny checkpoint's tower shape, for the dry run.
TINY_TOWER = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2}
VARIANTS: dict[str, TransformersOptions] = {
    "eager": TransformersOptions(attention="eager"),
    "sdpa": TransformersOptions(attention="sdpa"),
    "sdpa + static cache + compile": TransformersOptions(attention="sdpa", static_cache=True, compile=True),
}


class Budget:
    """Seconds left of the run; steps ask before they start."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    @property
    def left(self) -> float:
        """Seconds left (negative once spent)."""
        return self._deadline - time.monotonic()

    def allows(self, estimate: float) -> bool:
        """Whether a step estimated to take ``estimate`` seconds fits."""
        return estimate <= self.left


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = step()
    return result, round(time.monotonic() - started, 1)


def engine_rows(model_dir: Path, device: str, args: argparse.Namespace, budget: Budget,
                roofline: float | None) -> dict[str, Any]:
    """Each transformers variant at each concurrency, or why it was skipped."""
    request = workload(args.workdir, EngineConfig())
    results: dict[str, Any] = {}
    spent_per_row = 0.0
    for name, options in VARIANTS.items():
        estimate = spent_per_row * len(args.concurrency) + (COMPILE_ESTIMATE_S if options.compile else 0.0)
        if not budget.allows(estimate):
            results[name] = {"skipped": f"estimated {estimate:.0f} s, {max(budget.left, 0):.0f} s of the budget left"}
            continue
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.monotonic()
        engine = TransformersEngine(model_dir, device=device, options=options)
        rows = [measure(engine, request, c, args.new_tokens, args.rounds) for c in args.concurrency]
        spent_per_row = max(spent_per_row, (time.monotonic() - started) / len(args.concurrency))
        batch_1 = next((row for row in rows if row["concurrency"] == 1), None)
        speed = batch_1["decode_tokens_per_s_per_stream"] if batch_1 else None
        results[name] = {
            "rows": rows,
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None,
            "batch1_fraction_of_roofline": round(speed / roofline, 3) if roofline and speed else None,
            "seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps({"variant": name, **results[name]}), flush=True)
        del engine
    return results


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table, for docs/performance.md."""
    lines = [f"GPU: {report['gpu']}; torch {report['torch']}, transformers {report['transformers']}, "
             f"CUDA {report['cuda']}; shape {report['shape']}; {report['new_tokens']} new tokens per study; "
             f"roofline {report['roofline_tokens_per_s']} tokens/s; total {report['total_seconds']} s.", "",
             "| variant | studies at once | TTFT (s) | decode tok/s per stream | decode tok/s total | studies/hour "
             "| peak GPU memory (GB) | batch-1 fraction of roofline |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in report["engine"].items():
        if "skipped" in entry:
            lines.append(f"| {name} | skipped: {entry['skipped']} | | | | | | |")
            continue
        memory = f"{entry['peak_gpu_memory_bytes'] / 1e9:.1f}" if entry["peak_gpu_memory_bytes"] else "—"
        for row in entry["rows"]:
            lines.append(f"| {name} | {row['concurrency']} | {row['ttft_s']} | {row['decode_tokens_per_s_per_stream']}"
                         f" | {row['decode_tokens_per_s_total']} | {row['studies_per_hour']} | {memory} | "
                         f"{entry['batch1_fraction_of_roofline']} |")
    tower = report["vision_tower"]
    lines.append("")
    if "skipped" in tower:
        lines.append(f"Vision tower: skipped ({tower['skipped']}).")
    else:
        lines.append(f"Vision tower at {tower['side']}² ({tower['patches']} patches): "
                     f"torch {tower['torch_median_s']} s, ONNX Runtime {tower['onnx_median_s']} s "
                     f"on {tower['onnx_providers'][0]} "
                     f"(export {tower['export_seconds']} s; max difference {tower['max_abs_difference']:.2e}).")
    return "\n".join(lines) + "\n"


def parse_arguments() -> argparse.Namespace:
    """The command line; ``--dry-run`` swaps in the tiny shape on the CPU and small counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-benchmark.json and .md")
    parser.add_argument("--dry-run", action="store_true", help="the tiny shape on the CPU: proves the script")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole run (420; dry run 120)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="studies at once (1 32)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens forced per study (128)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", type=int, default=None, help="vision tower image side (1008)")
    parser.add_argument("--hbm-tbps", type=float, default=None, help="HBM bandwidth in TB/s, if not in the table")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qoq-gpu-benchmark")
    args = parser.parse_args()
    small = args.dry_run
    args.budget_s = args.budget_s if args.budget_s is not None else (120.0 if small else 420.0)
    args.concurrency = args.concurrency or ([1, 4] if small else [1, 32])
    args.new_tokens = args.new_tokens or (8 if small else 128)
    args.side = args.side or (224 if small else 1008)
    args.rounds = 1 if small else args.rounds
    return args


def main() -> None:
    """Run the steps within the budget and write the report."""
    args = parse_arguments()
    budget = Budget(args.budget_s)
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU host, or --dry-run to check the script on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    tiny = args.workdir / "tiny"
    if not (tiny / "config.json").is_file():
        build_tiny_checkpoint(tiny)
    model_dir, build_seconds = (tiny, 0.0) if args.dry_run else _timed(
        lambda: build_7b_checkpoint(args.workdir / "qoq-med-7b-shape", tiny))
    gpu, bandwidth = hbm_bandwidth(args.hbm_tbps)
    weights = parameter_bytes(model_dir)
    roofline = bandwidth / weights if bandwidth else None
    report: dict[str, Any] = {
        "gpu": gpu if not args.dry_run else f"{platform.processor() or 'CPU'} (dry run: tiny shape)",
        "torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
        "shape": "tiny" if args.dry_run else "7b", "weights_bytes": weights, "build_seconds": build_seconds,
        "new_tokens": args.new_tokens, "budget_s": args.budget_s,
        "roofline_tokens_per_s": round(roofline, 1) if roofline else None,
    }
    report["engine"] = engine_rows(model_dir, device, args, budget, roofline)
    if budget.allows(TOWER_ESTIMATE_S if not args.dry_run else 10.0):
        report["vision_tower"] = measure_tower(args.side, device, args.rounds, args.workdir,
                                               TINY_TOWER if args.dry_run else None)
    else:
        report["vision_tower"] = {"skipped": f"{max(budget.left, 0):.0f} s of the budget left"}
    report["total_seconds"] = round(args.budget_s - budget.left, 1)
    (args.out / "gpu-benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu-benchmark.md").write_text(markdown(report))
    print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
