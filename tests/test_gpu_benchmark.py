"""The one-run GPU benchmark's parts that must hold before a GPU is lent: the roofline's bytes per token,
the step runner's deadlines and failures, and the report's derived figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu import run_step
from benchmarks.gpu_report import derive, markdown
from benchmarks.roofline import decode_bytes, decode_bytes_of
from tests.helpers import LONGEST_WAIT_SECONDS

REPO = Path(__file__).resolve().parents[1]


def test_a_decoded_token_reads_the_7b_text_weights_not_the_tower_nor_the_embedding_table() -> None:
    """QoQ-Med-VL-7B: 16.58 GB of bf16 weights, of which a decoded token reads about 14.14 GB (not the
    1.35 GB tower, not the 1.09 GB input embedding table) — at 4.8 TB/s about 338 tokens/s, not 289."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from node.engine.shapes import QWEN25_VL_7B_TEXT, QWEN25_VL_7B_VISION

    config = Qwen2_5_VLConfig(text_config=QWEN25_VL_7B_TEXT, vision_config=QWEN25_VL_7B_VISION)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    sizes = {name: tensor.numel() * 2 for name, tensor in model.state_dict().items()}
    read = decode_bytes_of(sizes, config.to_dict(), context_tokens=0)
    assert 16.5e9 < read["checkpoint_bytes"] < 16.7e9
    assert 14.1e9 < read["weights_read_bytes"] < 14.2e9
    assert read["kv_bytes_per_context_token"] == 2 * 28 * 4 * 128 * 2  # K and V, 28 layers, 4 KV heads of 128
    assert 335 < 4.8e12 / read["bytes_per_token"] < 340
    with_context = decode_bytes_of(sizes, config.to_dict(), context_tokens=1000)
    assert with_context["bytes_per_token"] == read["bytes_per_token"] + 1000 * 57344


def test_the_roofline_reads_the_checkpoint_headers_and_counts_a_tied_head(tmp_path: Path) -> None:
    """From the safetensors headers on disk: the tower is never read per token, the embedding table is
    read when the output head is that table."""
    header = {"visual.blocks.0.weight": {"dtype": "BF16", "shape": [10], "data_offsets": [0, 20]},
              "model.embed_tokens.weight": {"dtype": "BF16", "shape": [50], "data_offsets": [20, 120]},
              "model.layers.0.mlp.weight": {"dtype": "BF16", "shape": [200], "data_offsets": [120, 520]},
              "__metadata__": {"format": "pt"}}
    encoded = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(encoded).to_bytes(8, "little") + encoded + bytes(520))
    text = {"hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1}
    (tmp_path / "config.json").write_text(json.dumps({"text_config": text, "tie_word_embeddings": False}))
    assert decode_bytes(tmp_path, 0)["weights_read_bytes"] == 400
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {**text, "tie_word_embeddings": True}}))
    read = decode_bytes(tmp_path, 3)
    assert read["weights_read_bytes"] == 500 and read["checkpoint_bytes"] == 520
    assert read["kv_bytes"] == 3 * 2 * 1 * 1 * 4 * 2


def test_a_step_past_its_deadline_is_cut_with_its_children_and_keeps_what_it_wrote(tmp_path: Path) -> None:
    """A step that hangs (a compile) is ended at its deadline, the processes it started with it; the figures
    it wrote before stay in the report."""
    child_pid = tmp_path / "child.pid"
    script = (f"import json, subprocess, sys, time; open({str(tmp_path / 'r.json')!r}, 'w').write(json.dumps("
              f"{{'rows': [1]}})); child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(child_pid)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    started = time.monotonic()
    outcome = run_step([sys.executable, "-c", script], tmp_path / "r.json", tmp_path / "log", timeout_s=3)
    assert time.monotonic() - started < 20
    assert outcome["status"] == "cut" and "deadline of 3 s" in outcome["reason"]
    assert outcome["figures"] == {"rows": [1]}
    _assert_gone(int(child_pid.read_text()))


def _assert_gone(pid: int) -> None:
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("the step's child process outlived the step")


def test_what_a_finished_step_left_running_goes_with_it(tmp_path: Path) -> None:
    """A step that exits but leaves a process of its own behind (a compile worker) does not leave it to hold
    the GPU during the next step."""
    child_pid = tmp_path / "child.pid"
    script = (f"import signal, subprocess, sys; child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); "
              f"open({str(child_pid)!r}, 'w').write(str(child.pid))")
    outcome = run_step([sys.executable, "-c", script], tmp_path / "r.json", tmp_path / "log", timeout_s=30)
    assert outcome["status"] == "ok"
    _assert_gone(int(child_pid.read_text()))


def test_a_run_without_a_gpu_says_so_skips_what_needs_one_and_fails(tmp_path: Path) -> None:
    """Not a dry run, on a machine without CUDA (none visible): prepare fails with the reason, every step that
    needs it is skipped saying why, the report is still written, and the command exits non-zero."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path / "out"), "--workdir",
                          str(tmp_path / "work"), "--budget-s", "120"], capture_output=True, text=True, cwd=REPO,
                         timeout=LONGEST_WAIT_SECONDS, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode != 0 and "measured nothing" in run.stderr
    steps = json.loads((tmp_path / "out" / "gpu-benchmark.json").read_text())["steps"]
    assert steps["prepare"]["status"] == "error" and "no CUDA device" in steps["prepare"]["reason"]
    assert {name: step["status"] for name, step in steps.items() if name != "prepare"} == {
        "infer": "skipped", "build": "skipped", "eager": "skipped", "sdpa": "skipped", "tower": "skipped",
        "sdpa + static cache + compile": "skipped"}
    assert "needs step prepare" in steps["infer"]["reason"] and "needs step build" in steps["eager"]["reason"]
    assert "| prepare | error |" in (tmp_path / "out" / "gpu-benchmark.md").read_text()


def test_a_failing_step_is_recorded_with_its_output_and_a_good_one_with_its_figures(tmp_path: Path) -> None:
    failed = run_step([sys.executable, "-c", "raise RuntimeError('CUDA error: device-side assert')"],
                      tmp_path / "r.json", tmp_path / "log", timeout_s=60)
    assert failed["status"] == "error" and "device-side assert" in failed["reason"] and "figures" not in failed
    good = run_step([sys.executable, "-c", f"open({str(tmp_path / 'r.json')!r}, 'w').write('{{\"a\": 1}}')"],
                    tmp_path / "r.json", tmp_path / "log", timeout_s=60)
    assert good == {"status": "ok", "seconds": good["seconds"], "figures": {"a": 1}}


def _row(concurrency: int, ttft: float, speed: float, per_hour: float) -> dict:
    return {"concurrency": concurrency, "prompt_tokens": 700, "new_tokens": 128, "ttft_s": ttft,
            "decode_tokens_per_s_per_stream": speed, "decode_tokens_per_s_total": speed * concurrency,
            "studies_per_hour": per_hour, "peak_gpu_memory_bytes": 20e9}


def test_the_report_derives_studies_per_answer_the_targets_and_why_a_row_falls_short(tmp_path: Path) -> None:
    sizes = {"model.layers.0.weight": 96}
    header = {name: {"dtype": "BF16", "shape": [48], "data_offsets": [0, 96]} for name in sizes}
    encoded = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(encoded).to_bytes(8, "little") + encoded + bytes(96))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8, "num_attention_heads": 2,
                                                      "num_key_value_heads": 1, "num_hidden_layers": 1}))
    profile = {"device_busy_fraction": 0.4, "kernels_per_new_token": 900.0,
               "top": [{"name": "ampere_bf16_gemm", "ms": 5.0, "share": 0.6}]}
    report = {"dry_run": False, "started": "2026-12-07T00:00:00Z", "command": "python -m benchmarks.gpu",
              "budget_s": 450.0, "new_tokens": 128, "total_seconds": 400.0, "steps": {
                  "prepare": {"status": "ok", "figures": {"gpu": "NVIDIA H200", "hbm_bytes_per_s": 9.6e6}},
                  "build": {"status": "ok", "figures": {"model_dir": str(tmp_path)}},
                  "eager": {"status": "ok", "figures": {"rows": [_row(1, 0.5, 40.0, 100.0),
                                                                 _row(32, 2.0, 30.0, 800.0)], "profile": profile}},
                  "sdpa + static cache + compile": {"status": "cut", "reason": "cut at its deadline of 200 s",
                                                    "figures": {"rows": [_row(1, 0.2, 90.0, 300.0),
                                                                         _row(32, 0.9, 80.0, 3200.0)]}}}}
    derive(report)
    variants = report["figures"]["variants"]
    eager, compiled = variants["eager"], variants["sdpa + static cache + compile"]
    # 1,024 new tokens: TTFT + 1,023 tokens at the measured speed
    assert eager["studies_per_hour_at_1024_new_tokens"]["1"] == round(3600 / (0.5 + 1023 / 40.0), 1)
    # the roofline: 96 bytes of weights + 16 of KV per token of context (K and V, 1 layer, 1 head of 4, bf16)
    # at the mean decode context (764 = 700 + 128 / 2)
    assert eager["batch1_against_roofline"]["roofline_tokens_per_s"] == round(9.6e6 / (96 + 16 * 764), 1)
    assert eager["roofline_target_met"] is False and "host side" in eager["reading"]
    assert compiled["studies_per_hour_against_eager"] == {"1": 3.0, "32": 4.0} and compiled["concurrent_target_met"]
    table = markdown(report)
    assert "| sdpa + static cache + compile | cut |" in table and "| eager | 32 | 700 | 2.0 |" in table
    assert "target 3× at 32: met" in table and "kernels 40% of the wall time" in table
