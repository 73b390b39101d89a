"""One step of the GPU benchmark (benchmarks/gpu.py), run in its own process so that a crash, a poisoned
CUDA context or a step past its deadline costs that step only.

    python -m benchmarks.gpu_steps STEP --spec JSON --result FILE

STEP is one of :data:`STEPS`. The step writes its figures to ``--result`` as JSON — a row writes after
each concurrency, so a step cut at its deadline keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from benchmarks.engine import build_7b_checkpoint, built_whole, hbm_bandwidth, measure, workload
from benchmarks.gpu import VARIANTS
from benchmarks.vision_tower import measure_tower
from node import __version__ as node_version
from node.config import EngineConfig
from node.engine import EngineRequest, GenerationSettings
from node.engine.tiny import build_tiny_checkpoint
from node.engine.transformers_backend import TransformersEngine
from node.testing.synthetic import write_cr_study

#: The tiny checkpoint's tower shape, for the dry run.
TINY_TOWER = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2}
#: ONNX Runtime providers worth timing the tower on, by the device measured.
ONNX_PROVIDERS = {"cuda": {"TensorrtExecutionProvider", "CUDAExecutionProvider"}, "cpu": {"CPUExecutionProvider"}}


def _write(result: Path, figures: dict[str, Any]) -> None:
    """Replace ``result`` with ``figures`` in one rename (a reader never sees half a file)."""
    partial = result.with_suffix(".partial")
    partial.write_text(json.dumps(figures, indent=2) + "\n")
    partial.replace(result)


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _synchronize(device: str) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize()


def _onnx_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def prepare(spec: dict[str, Any], result: Path) -> None:
    """The machine, the versions, the HBM bandwidth; and the tiny checkpoint (for ``infer`` and the dry run)."""
    gpu, bandwidth = hbm_bandwidth(spec.get("hbm_tbps"))
    figures: dict[str, Any] = {
        "gpu": gpu, "hbm_bytes_per_s": bandwidth, "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": transformers.__version__, "node": node_version,
        "onnxruntime_providers": _onnx_providers(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        figures.update(gpu_memory_bytes=properties.total_memory, compute_capability=f"{properties.major}."
                       f"{properties.minor}", gpus=torch.cuda.device_count())
    started = time.monotonic()
    tiny = built_whole(Path(spec["workdir"]) / "tiny", build_tiny_checkpoint)
    figures["tiny_checkpoint"] = str(tiny)
    figures["tiny_seconds"] = round(time.monotonic() - started, 1)
    _write(result, figures)
    if _is_cuda(spec["device"]) and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU host, or --dry-run to check the script on the CPU")


def infer(spec: dict[str, Any], result: Path) -> None:
    """The tiny model through ``qoq-node infer`` on the device: the transformers backend's own device path."""
    workdir = Path(spec["workdir"])
    study = write_cr_study(workdir / "infer-cr")
    environment = {**os.environ, "QOQ_NODE__STORAGE__ROOT": str(workdir / "infer-var"),
                   "QOQ_NODE__ENGINE__BACKEND": "transformers", "QOQ_NODE__ENGINE__MODEL": str(workdir / "tiny"),
                   "QOQ_NODE__ENGINE__DEVICE": spec["device"], "QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "64"}
    command = [str(Path(sys.executable).with_name("qoq-node")), "infer", "--json", str(workdir / "infer-cr")]
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=workdir)
    figures: dict[str, Any] = {"command": " ".join(command[1:]), "device": spec["device"], "exit": run.returncode,
                               "seconds": round(time.monotonic() - started, 1)}
    if run.returncode != 0:
        raise RuntimeError(f"qoq-node infer exited {run.returncode}: {run.stderr[-2000:]}")
    [outcome] = json.loads(run.stdout)
    figures.update(study_matches=outcome["study_uid"] == study.study_uid, model=outcome["model"],
                   task=outcome["task"], test_result=outcome["test_result"], error=outcome["error"])
    _write(result, figures)


def build(spec: dict[str, Any], result: Path) -> None:
    """The QoQ-Med-VL-7B-shaped checkpoint with random bf16 weights (no download)."""
    started = time.monotonic()
    directory = build_7b_checkpoint(Path(spec["model_dir"]), Path(spec["workdir"]) / "tiny")
    _write(result, {"model_dir": str(directory), "seconds": round(time.monotonic() - started, 1),
                    "checkpoint_bytes": sum(p.stat().st_size for p in directory.glob("*.safetensors"))})


def _device_events(profiler: Any, device: str) -> list[tuple[str, float, int]]:
    """The profiled work that ran on the device — kernels and copies on CUDA, operators on the CPU in a dry
    run — as (name, own time in microseconds, count), longest first."""
    from torch.autograd import DeviceType

    if _is_cuda(device):
        events = [(e.key, float(e.self_device_time_total), e.count) for e in profiler.key_averages()
                  if e.device_type == DeviceType.CUDA]
    else:
        events = [(e.key, float(e.self_cpu_time_total), e.count) for e in profiler.key_averages()]
    return sorted((e for e in events if e[1] > 0), key=lambda e: e[1], reverse=True)


def profile_decode(engine: TransformersEngine, request: EngineRequest, tokens: int, device: str) -> dict[str, Any]:
    """One batch-1 study of ``tokens`` new tokens under the profiler: how busy the device was over the wall
    time, how many kernels ran per new token, and the kernels that took the most time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if _is_cuda(device) else [])
    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens)
    single = EngineRequest(request.images, request.prompt, request.domain, settings)
    engine.generate([single])  # outside the window: a compile or CUDA graph capture for this shape
    _synchronize(device)
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        engine.generate([single])
        _synchronize(device)
    wall_us = (time.perf_counter() - started) * 1e6
    kernels = _device_events(profiler, device)
    busy_us = sum(time_us for _, time_us, _ in kernels)
    return {"new_tokens": tokens, "wall_ms": round(wall_us / 1000, 1),
            "device_busy_fraction": round(busy_us / wall_us, 3) if _is_cuda(device) else None,
            "kernels_per_new_token": round(sum(count for _, _, count in kernels) / tokens, 1),
            "top": [{"name": name[:90], "ms": round(time_us / 1000, 2), "share": round(time_us / busy_us, 3)}
                    for name, time_us, _ in kernels[:8]] if busy_us else []}


def row(spec: dict[str, Any], result: Path) -> None:
    """One transformers variant at each concurrency (TTFT, decode speed, studies/hour, peak GPU memory),
    then a profile of a batch-1 study."""
    device = spec["device"]
    started = time.monotonic()
    engine = TransformersEngine(Path(spec["model_dir"]), device=device, options=VARIANTS[spec["variant"]])
    request = workload(Path(spec["workdir"]), EngineConfig())
    figures: dict[str, Any] = {"variant": spec["variant"], "load_seconds": round(time.monotonic() - started, 1),
                               "rows": []}
    for concurrency in spec["concurrency"]:
        if _is_cuda(device):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        measured = measure(engine, request, concurrency, spec["new_tokens"], spec["rounds"])
        measured["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated() if _is_cuda(device) else None
        figures["rows"].append(measured)
        figures["seconds"] = round(time.monotonic() - started, 1)
        _write(result, figures)
    try:
        figures["profile"] = profile_decode(engine, request, spec["profile_tokens"], device)
    except Exception as exc:  # the rows stand without it
        figures["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    figures["seconds"] = round(time.monotonic() - started, 1)
    _write(result, figures)


def _why_no_onnx(device: str) -> str | None:
    """Why the tower cannot be timed on ONNX Runtime for ``device`` here, or ``None`` when it can: it needs
    a provider for the device and the exporter's onnxscript."""
    providers = _onnx_providers()
    if not set(providers) & ONNX_PROVIDERS["cuda" if _is_cuda(device) else "cpu"]:
        return f"ONNX Runtime has no provider for {device} here (it has: {', '.join(providers) or 'none'})"
    try:
        import onnxscript  # noqa: F401  # torch.onnx.export's exporter
    except ImportError:
        return "onnxscript, which torch.onnx.export needs, is not installed"
    return None


def tower(spec: dict[str, Any], result: Path) -> None:
    """The vision tower at ``side``² in torch, and on ONNX Runtime where it can run for the device."""
    device = spec["device"]
    why_not = _why_no_onnx(device)
    figures = measure_tower(spec["side"], device, spec["rounds"], Path(spec["workdir"]),
                            TINY_TOWER if spec["dry_run"] else None, onnx_too=why_not is None)
    if why_not:
        figures["onnx_skipped"] = why_not
    _write(result, figures)


STEPS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "prepare": prepare, "infer": infer, "build": build, "row": row, "tower": tower}


def main() -> None:
    """Run one step."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--spec", required=True, help="the step's settings as JSON")
    parser.add_argument("--result", type=Path, required=True, help="where the step writes its figures")
    args = parser.parse_args()
    STEPS[args.step](json.loads(args.spec), args.result)


if __name__ == "__main__":
    main()
