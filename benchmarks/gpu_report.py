"""The GPU benchmark's report: the figures derived from what the steps measured, and the markdown table for
docs/performance.md. Pure Python (no torch): the benchmark's parent process writes it after every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.roofline import batch1_against_roofline, decode_bytes

#: The answer length studies/hour is also given for (the node's default engine.max_new_tokens).
ANSWER_TOKENS = 1024
#: The targets the issue set: batch-1 decode against the roofline; 32 at once against eager in studies/hour.
ROOFLINE_TARGET = 0.8
CONCURRENT_TARGET = 3.0
#: Below this share of the wall time with kernels running, a short row is host-bound.
BUSY_ENOUGH = 0.8


def _figures(report: dict[str, Any], step: str) -> dict[str, Any]:
    return report["steps"].get(step, {}).get("figures") or {}


def measured_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The engine variants that measured anything, by name, in the order they ran."""
    return {name: step["figures"] for name, step in report["steps"].items() if (step.get("figures") or {}).get("rows")}


def last_line(text: str, width: int) -> str:
    """The line that says what happened (a traceback's last), clipped to ``width``."""
    lines = text.strip().splitlines()
    return lines[-1][:width] if lines else ""


def _per_answer(row: dict[str, Any]) -> float | None:
    """Studies/hour if each study generated :data:`ANSWER_TOKENS` tokens: the measured time to the first
    token plus the rest at the measured decode speed (derived, not measured)."""
    speed = row.get("decode_tokens_per_s_per_stream")
    if not speed:
        return None
    return round(row["concurrency"] / (row["ttft_s"] + (ANSWER_TOKENS - 1) / speed) * 3600, 1)


def _reading(profile: dict[str, Any]) -> str | None:
    """What a batch-1 profile says about where the time went."""
    busy = profile.get("device_busy_fraction")
    if busy is None or not profile.get("top"):
        return None
    top = ", ".join(f"{kernel['name'][:40]} {kernel['share']:.0%}" for kernel in profile["top"][:3])
    if busy < BUSY_ENOUGH:
        return (f"the GPU ran kernels {busy:.0%} of the wall time ({profile['kernels_per_new_token']} kernels per "
                f"token): the host side (Python, kernel launches) holds decode back; longest kernels: {top}")
    return f"the GPU was busy {busy:.0%} of the wall time: the kernels themselves are slow; longest: {top}"


def derive(report: dict[str, Any]) -> None:
    """Add ``report["figures"]``: studies/hour at 1,024 new tokens, batch-1 decode against the roofline,
    the targets met or not, and what each short row's profile says."""
    environment = _figures(report, "prepare")
    model = environment.get("tiny_checkpoint") if report["dry_run"] else _figures(report, "build").get("model_dir")
    bandwidth = environment.get("hbm_bytes_per_s")
    figures: dict[str, Any] = {"variants": {}}
    if model and Path(model, "config.json").is_file():
        figures["decode_bytes_at_no_context"] = decode_bytes(Path(model), 0)
    rows = measured_rows(report)
    eager = {row["concurrency"]: row["studies_per_hour"] for row in rows.get("eager", {}).get("rows", [])}
    for name, measured in rows.items():
        roofline = batch1_against_roofline(measured["rows"], bandwidth, Path(model)) if model else None
        against_eager = {str(row["concurrency"]): round(row["studies_per_hour"] / eager[row["concurrency"]], 2)
                         for row in measured["rows"] if eager.get(row["concurrency"]) and name != "eager"}
        short = roofline is not None and roofline["fraction"] < ROOFLINE_TARGET
        figures["variants"][name] = {
            "studies_per_hour_at_1024_new_tokens": {str(row["concurrency"]): _per_answer(row)
                                                    for row in measured["rows"]},
            "batch1_against_roofline": roofline, "roofline_target_met": None if roofline is None else not short,
            "studies_per_hour_against_eager": against_eager,
            "concurrent_target_met": (against_eager["32"] >= CONCURRENT_TARGET) if "32" in against_eager else None,
            "reading": _reading(measured.get("profile") or {}) if short else None}
    report["figures"] = figures


def _gb(value: float | None) -> str:
    """Bytes in GB (a tiny model's in a fraction of one)."""
    if not value:
        return "—"
    return f"{value / 1e9:.1f}" if value >= 1e8 else f"{value / 1e9:.4f}"


def _header(report: dict[str, Any]) -> list[str]:
    environment = _figures(report, "prepare")
    machine = environment.get("gpu", "unknown machine")
    if environment.get("gpu_memory_bytes"):
        machine += (f" ({_gb(environment['gpu_memory_bytes'])} GB, compute capability "
                    f"{environment['compute_capability']})")
    return [f"{'Dry run (tiny shape on the CPU): ' if report['dry_run'] else ''}{machine}; Python "
            f"{environment.get('python')}, torch {environment.get('torch')}, CUDA {environment.get('cuda')}, "
            f"transformers {environment.get('transformers')}, qoq-node {environment.get('node')}; started "
            f"{report['started']}; `{report['command']}`; {report.get('total_seconds')} s of a "
            f"{report['budget_s']:.0f} s budget.", "",
            "| step | status | seconds | note |", "| --- | --- | --- | --- |",
            *(f"| {name} | {step['status']} | {step.get('seconds', '')} | "
              f"{last_line(step.get('reason', ''), 200)} |"
              for name, step in report["steps"].items()), ""]


def _table(report: dict[str, Any]) -> list[str]:
    derived = report.get("figures", {}).get("variants", {})
    lines = [f"| variant | studies at once | prompt tokens | TTFT (s) | decode tok/s per stream | decode tok/s total "
             f"| studies/hour ({report['new_tokens']} new tokens) | studies/hour at {ANSWER_TOKENS:,} (derived) "
             "| peak GPU memory (GB) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, measured in measured_rows(report).items():
        at_answer = derived.get(name, {}).get("studies_per_hour_at_1024_new_tokens", {})
        lines += [f"| {name} | {row['concurrency']} | {row['prompt_tokens']} | {row['ttft_s']} | "
                  f"{row['decode_tokens_per_s_per_stream']} | {row['decode_tokens_per_s_total']} | "
                  f"{row['studies_per_hour']} | {at_answer.get(str(row['concurrency']))} | "
                  f"{_gb(row.get('peak_gpu_memory_bytes'))} |" for row in measured["rows"]]
    return [*lines, ""]


def _targets(report: dict[str, Any]) -> list[str]:
    figures = report.get("figures", {})
    lines = []
    if "decode_bytes_at_no_context" in figures:
        read = figures["decode_bytes_at_no_context"]
        lines.append(f"Roofline: a decoded token reads {_gb(read['weights_read_bytes'])} GB of weights (of the "
                     f"checkpoint's {_gb(read['checkpoint_bytes'])} GB: not the vision tower, not the input embedding "
                     f"table) and {read['kv_bytes_per_context_token'] / 1e3:.0f} KB of KV cache per token of context.")
    for name, derived in figures.get("variants", {}).items():
        roofline = derived["batch1_against_roofline"]
        if roofline:
            verdict = "met" if derived["roofline_target_met"] else "not met"
            lines.append(f"- {name}: batch-1 decode at {roofline['fraction']:.0%} of the roofline "
                         f"({roofline['roofline_tokens_per_s']} tok/s at {roofline['context_tokens']} tokens of "
                         f"context; target {ROOFLINE_TARGET:.0%}: {verdict})")
        if derived["studies_per_hour_against_eager"]:
            ratios = ", ".join(f"{ratio}× at {concurrency}"
                               for concurrency, ratio in derived["studies_per_hour_against_eager"].items())
            met = {True: "met", False: "not met", None: "no row at 32"}[derived["concurrent_target_met"]]
            lines.append(f"- {name}: studies/hour against eager: {ratios} "
                         f"(target {CONCURRENT_TARGET:.0f}× at 32: {met})")
        if derived["reading"]:
            lines.append(f"- {name}, its batch-1 profile: {derived['reading']}")
    return [*lines, ""] if lines else []


def _tower_and_infer(report: dict[str, Any]) -> list[str]:
    lines = []
    tower = _figures(report, "tower")
    if tower:
        onnx = (f"ONNX Runtime {tower['onnx_median_s']} s on {tower['onnx_providers'][0]} (export "
                f"{tower['export_seconds']} s; max difference {tower['max_abs_difference']:.2e})"
                if "onnx_median_s" in tower else f"ONNX Runtime not timed: {tower.get('onnx_skipped')}")
        lines.append(f"Vision tower at {tower['side']}² ({tower['patches']} patches, float32): torch "
                     f"{tower['torch_median_s']} s; {onnx}.")
    infer = _figures(report, "infer")
    if infer:
        lines.append(f"`qoq-node {infer['command']}` with the tiny model on {infer['device']}: exit {infer['exit']}, "
                     f"task {infer.get('task')}, model \"{infer.get('model')}\", {infer['seconds']} s.")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown, for docs/performance.md."""
    return "\n".join([*_header(report), *_table(report), *_targets(report), *_tower_and_infer(report)]) + "\n"
