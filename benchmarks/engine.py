"""Engine benchmark: QoQ-Med-VL-7B-shaped model (random weights) on the node's real workload.

    # on a GPU machine (builds ~16.6 GB of random bf16 weights under --workdir once):
    python -m benchmarks.engine --shape 7b --device cuda --json docs/engine-benchmark.json
    # anywhere, to check the script itself (the tiny model on the CPU):
    python -m benchmarks.engine --shape tiny --device cpu --concurrency 1 4 --new-tokens 16

Workload: a synthetic chest radiograph the size of a CR (2048², pre-resized by the node's imaging as
training did, to 724² ≈ 676 visual tokens on the 28-pixel grid), routed and prompted exactly as the
node does (the shipped routing rules' chest_xray question and labels), ``--new-tokens`` tokens forced per study
(``min_new_tokens``, end-of-sequence ignored), at each ``--concurrency`` (studies in one batch).
Random weights cost the same compute as trained ones.

Backends measured: the ``transformers`` variants (eager attention, the baseline; SDPA; SDPA with the
vision tower on ONNX Runtime; SDPA with a static KV cache and torch.compile — CUDA only) and
``tensorrt-llm`` when the library is installed.
Reported per backend and concurrency: time to first token (a 1-token run), decode tokens/s per
stream and in total, studies/hour, peak GPU memory, and batch-1 decode as a fraction of the
memory-bandwidth roofline (HBM bandwidth ÷ the bytes one decoded token reads: benchmarks/roofline.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from benchmarks.roofline import batch1_against_roofline, decode_bytes
from node.chain import prepare_study
from node.config import EngineConfig, TensorRtLlmOptions, TransformersOptions, load_config
from node.engine import Engine, EngineRequest, GenerationSettings
from node.engine.shapes import QWEN25_VL_7B_TEXT, QWEN25_VL_7B_VISION
from node.engine.tiny import build_tiny_checkpoint
from node.model.profiles import PROFILES
from node.reading import engine_request
from node.routing import DEFAULT_RULES, Router
from node.testing.synthetic import write_cr_study

REPO = Path(__file__).resolve().parents[1]
#: HBM bandwidth (bytes/s) by GPU name fragment; --hbm-tbps overrides.
HBM_BYTES_PER_SECOND = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
                        "A100": 1.56e12, "L40S": 0.864e12}

def built_whole(directory: Path, build: Callable[[Path], object]) -> Path:
    """``directory``, ``build`` into it first when it is not there yet — into a folder beside it, renamed to it
    once complete: a build cut midway (a deadline) leaves no checkpoint that a rerun would take for a whole one."""
    if directory.is_dir():
        return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    partial.rename(directory)
    return directory


def build_7b_checkpoint(directory: Path, tiny: Path) -> Path:
    """A QoQ-Med-VL-7B-shaped checkpoint with random bf16 weights, using the tiny model's processor
    (its token ids are valid ids of the large vocabulary; the compute is the 7B model's)."""
    return built_whole(directory, lambda partial: _write_7b_checkpoint(partial, tiny))


def _write_7b_checkpoint(directory: Path, tiny: Path) -> None:
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    small = Qwen2_5_VLConfig.from_pretrained(tiny)
    config = Qwen2_5_VLConfig(
        text_config={**QWEN25_VL_7B_TEXT, "bos_token_id": small.text_config.bos_token_id,
                     "eos_token_id": small.text_config.eos_token_id, "pad_token_id": small.text_config.pad_token_id},
        vision_config=QWEN25_VL_7B_VISION, image_token_id=small.image_token_id, video_token_id=small.video_token_id,
        vision_start_token_id=small.vision_start_token_id, vision_end_token_id=small.vision_end_token_id)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = small.text_config.eos_token_id
    model.generation_config.pad_token_id = small.text_config.pad_token_id
    model.save_pretrained(directory)
    AutoProcessor.from_pretrained(tiny).save_pretrained(directory)
    del model


def workload(workdir: Path, config: EngineConfig) -> EngineRequest:
    """One chest radiograph study, imaged, routed and prompted the way the node does."""
    study = write_cr_study(workdir / "cr", size=2048)
    node_config = load_config(None, environ={})
    outcome = prepare_study(study.study_uid, list(study.files), Router.from_file(DEFAULT_RULES),
                      node_config.imaging, PROFILES["qwen2.5-vl"])
    return engine_request(outcome, GenerationSettings())


def backends(model_dir: Path, device: str) -> dict[str, Any]:
    """Engine factories of every backend available here."""
    from node.engine.transformers_backend import TransformersEngine

    found: dict[str, Any] = {
        "transformers eager (baseline)": lambda: TransformersEngine(
            model_dir, device=device, options=TransformersOptions(attention="eager")),
        "transformers sdpa": lambda: TransformersEngine(model_dir, device=device),
        "transformers sdpa + onnx vision tower": lambda: TransformersEngine(
            model_dir, device=device, options=TransformersOptions(vision="onnx"),
            cache_dir=model_dir.parent / "engine-cache"),
    }
    found["openai client → qoq-node engine serve (transformers sdpa, loopback)"] = lambda: _loopback_openai(
        TransformersEngine(model_dir, device=device))
    if device.startswith("cuda"):
        found["transformers sdpa + static cache + compile"] = lambda: TransformersEngine(
            model_dir, device=device, options=TransformersOptions(static_cache=True, compile=True))
        try:
            import tensorrt_llm  # noqa: F401
        except ImportError:
            pass
        else:
            from node.engine.trtllm_backend import TensorRtLlmEngine

            found["tensorrt-llm bf16"] = lambda: TensorRtLlmEngine(EngineConfig(
                backend="tensorrt-llm", model=model_dir, tensorrt_llm=TensorRtLlmOptions(max_batch_size=64)))
    return found


def _loopback_openai(engine) -> Any:
    """The openai backend against ``engine`` served by ``qoq-node engine serve`` on loopback: the
    scale-out path's own cost (PNG encoding, HTTP, JSON) on top of the engine's."""

    from node.engine.openai_backend import OpenAIEngine
    from node.engine.openai_server import EngineServer

    server = EngineServer("127.0.0.1", 0, engine, "qoq-med", max_batch=64)
    server.start()
    return OpenAIEngine(EngineConfig(backend="openai", openai={"url": f"http://127.0.0.1:{server.port}/v1",
                                                               "served_model": "qoq-med", "max_concurrency": 64,
                                                               "timeout_seconds": 3600}),
                        PROFILES["qwen2.5-vl"])


def _timed(engine, requests: list[EngineRequest], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        engine.generate(requests)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(engine: Engine, request: EngineRequest, concurrency: int, new_tokens: int, rounds: int) -> dict[str, Any]:
    """TTFT, decode speed and throughput of one backend at one concurrency."""
    first = EngineRequest(request.images, request.prompt, request.domain,
                          GenerationSettings(max_new_tokens=1, min_new_tokens=1))
    full = EngineRequest(request.images, request.prompt, request.domain,
                         GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens))
    [warm, *_] = engine.generate([full] * concurrency)  # warm-up: kernels, graphs, compile
    ttft = _timed(engine, [first] * concurrency, rounds)
    total = _timed(engine, [full] * concurrency, rounds)
    decode = total - ttft  # below timer noise when generation is trivially short: no figure then
    per_stream = (new_tokens - 1) / decode if decode > 0 else None
    return {"concurrency": concurrency, "prompt_tokens": warm.prompt_tokens, "new_tokens": new_tokens,
            "ttft_s": round(ttft, 4), "total_s": round(total, 4),
            "decode_tokens_per_s_per_stream": round(per_stream, 1) if per_stream else None,
            "decode_tokens_per_s_total": round(per_stream * concurrency, 1) if per_stream else None,
            "studies_per_hour": round(concurrency / total * 3600, 1)}


def hbm_bandwidth(override_tbps: float | None) -> tuple[str, float | None]:
    """The GPU's name and HBM bandwidth (bytes/s), if known."""
    if not torch.cuda.is_available():
        return platform.processor() or "CPU", None
    name = torch.cuda.get_device_name(0)
    if override_tbps:
        return name, override_tbps * 1e12
    return name, next((value for key, value in HBM_BYTES_PER_SECOND.items() if key in name), None)


def main() -> None:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qoq-engine-benchmark")
    parser.add_argument("--hbm-tbps", type=float, default=None, help="HBM bandwidth in TB/s, if not in the table")
    parser.add_argument("--only", default=None, help="run only backends whose name contains this text")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    tiny = built_whole(args.workdir / "tiny", build_tiny_checkpoint)
    model_dir = build_7b_checkpoint(args.workdir / "qoq-med-7b-shape", tiny) if args.shape == "7b" else tiny
    request = workload(args.workdir, EngineConfig())
    gpu, bandwidth = hbm_bandwidth(args.hbm_tbps)
    report: dict[str, Any] = {
        "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "shape": args.shape, "decode_bytes": decode_bytes(model_dir, 0),
        "visual_tokens": sum(PROFILES["qwen2.5-vl"].visual_tokens(i.width, i.height) for i in request.images),
        "new_tokens": args.new_tokens,
        "hbm_bytes_per_s": bandwidth, "backends": {},
    }
    print(json.dumps({k: v for k, v in report.items() if k != "backends"}))
    for name, factory in backends(model_dir, args.device).items():
        if args.only and args.only not in name:
            continue
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        engine = factory()
        rows = [measure(engine, request, c, args.new_tokens, args.rounds) for c in args.concurrency]
        memory = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        entry = {"rows": rows, "peak_gpu_memory_bytes": memory,
                 "batch1_against_roofline": batch1_against_roofline(rows, bandwidth, model_dir)}
        report["backends"][name] = entry
        print(json.dumps({"backend": name, **entry}), flush=True)
        del engine
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
