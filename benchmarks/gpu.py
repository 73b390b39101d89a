"""The GPU figures in one short run, within a time budget, that keeps every figure it gets.

    python -m benchmarks.gpu --out /tmp/gpu-figures                  # on a GPU host (see benchmarks/gpu.sh)
    python -m benchmarks.gpu --dry-run --out /tmp/gpu-dry-run         # anywhere: the tiny shape on the CPU

It prints its plan first (each step and its estimated seconds), then runs the steps in this order, each
in its own process (benchmarks/gpu_steps.py) cut at its own deadline, each only if the budget
(``--budget-s``, 450 s; benchmarks/gpu.sh gives what its install left of 480 s) still holds its
estimate — a skipped, failed or cut step is written down with its reason and the run goes on; the
command exits non-zero when prepare failed or no engine row measured anything:

1. prepare: the GPU, the versions, ONNX Runtime's providers; the tiny checkpoint;
2. infer: the tiny model through ``qoq-node infer`` on the GPU (the transformers backend's device path);
3. build: the QoQ-Med-VL-7B-shaped model with random bf16 weights (no download);
4. the node's chest radiograph workload (benchmarks/engine.py) with eager attention, then SDPA, at each
   ``--concurrency`` (1 and 32): time to first token, decode tokens/s, studies/hour (measured at
   ``--new-tokens``, and derived for 1,024 new tokens), peak GPU memory, and a profile of one batch-1
   study (how busy the GPU was, kernels per token, the longest kernels);
5. the vision tower at ``--side``² (1008) in torch, and on ONNX Runtime only where it has a CUDA or
   TensorRT provider;
6. last, SDPA + static KV cache + compile, with whatever time is left: compiling takes minutes.

Batch-1 decode is set against the HBM roofline: bandwidth ÷ the bytes one decoded token reads
(benchmarks/roofline.py). ``gpu-benchmark.json`` and ``gpu-benchmark.md`` (the table for
docs/performance.md) are rewritten in ``--out`` after every step; each step's output is in
``--out``/steps/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.gpu_report import derive, last_line, markdown, measured_rows
from node.config import TransformersOptions

REPO = Path(__file__).resolve().parents[1]
COMPILED = "sdpa + static cache + compile"
#: The transformers variants, in the order they run (the compiled one last: it takes what time is left).
VARIANTS: dict[str, TransformersOptions] = {
    "eager": TransformersOptions(attention="eager"),
    "sdpa": TransformersOptions(attention="sdpa"),
    COMPILED: TransformersOptions(attention="sdpa", static_cache=True, compile=True),
}
#: Seconds a step is given beyond its estimate before it is cut (the compiled row: all that is left).
GRACE_S = 60.0
#: Seconds a step has to end after TERM before the rest of its process group is killed; the compiled row's
#: deadline keeps them back from the budget.
KILL_GRACE_S = 10.0
#: Characters of a failed step's output kept in the report.
ERROR_TAIL_CHARS = 1500


@dataclass(frozen=True)
class Step:
    """One step of the plan: what it runs and what it is expected to take on a GPU and in a dry run."""

    name: str
    what: str
    step: str
    gpu_estimate_s: float
    dry_estimate_s: float
    needs: str | None = None
    takes_the_rest: bool = False

    def estimate(self, dry_run: bool) -> float:
        """Seconds this step is expected to take (the least it needs, for the step that takes the rest)."""
        return self.dry_estimate_s if dry_run else self.gpu_estimate_s


def plan(dry_run: bool, concurrency: list[int]) -> list[Step]:
    """The steps in the order they run."""
    model = "prepare" if dry_run else "build"
    at_once = " and ".join(str(c) for c in concurrency)
    steps = [Step("prepare", "GPU, versions, ONNX Runtime providers; the tiny checkpoint", "prepare", 15, 15),
             Step("infer", "the tiny model through qoq-node infer on the device", "infer", 30, 20, needs="prepare")]
    if not dry_run:
        steps.append(Step("build", "the 7B-shaped checkpoint, random bf16 weights", "build", 60, 0, needs="prepare"))
    steps += [Step(name, f"{name}: {at_once} studies at once, then a profile", "row", 45, 30, needs=model)
              for name in VARIANTS if name != COMPILED]
    steps.append(Step("tower", "the vision tower (torch; ONNX Runtime where it has a GPU provider)", "tower", 25, 25,
                      needs="prepare"))
    steps.append(Step(COMPILED, f"{COMPILED}: compiles for minutes, so last, with what is left", "row", 150, 20,
                      needs=model, takes_the_rest=True))
    return steps


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


def print_plan(steps: list[Step], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Say what the run will do and in what time; the plan as the report keeps it."""
    where = "the tiny shape on the CPU (dry run)" if args.dry_run else "the GPU"
    print(f"GPU benchmark plan: {len(steps)} steps on {where} within {args.budget_s:.0f} s; each step in its own "
          f"process, cut at its deadline; the report is rewritten in {args.out} after each step.", flush=True)
    planned, by = [], 0.0
    for number, step in enumerate(steps, 1):
        estimate = step.estimate(args.dry_run)
        by += estimate
        when = (f"what is left, at least {estimate:.0f} s (expect 200-400 s on a GPU)" if step.takes_the_rest
                else f"~{estimate:.0f} s, done by ~{by:.0f} s")
        print(f"  {number}. {step.what}: {when}", flush=True)
        planned.append({"step": step.name, "what": step.what, "estimate_s": estimate})
    return planned


def _signal_group(process: subprocess.Popen, sent: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(process.pid, sent)


def _stop(process: subprocess.Popen) -> None:
    """End a step's whole process group: TERM to the step (a moment to let go of the GPU), then KILL to
    whatever of the group is left (inductor's compile workers outlive their parent for a minute)."""
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_S)
    _signal_group(process, signal.SIGKILL)
    process.wait()


def run_step(command: list[str], result: Path, log: Path, timeout_s: float) -> dict[str, Any]:
    """Run one step's process with its output in ``log``; its status (ok, error, cut at the deadline), its
    seconds, and the figures it wrote to ``result`` (a cut step keeps what it wrote before the cut)."""
    result.unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=max(timeout_s, 1.0))
            status = "ok" if code == 0 else "error"
        except subprocess.TimeoutExpired:
            code, status = None, "cut"
        _stop(process)  # also after an exit: what the step started goes with it
    outcome: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - started, 1)}
    if result.is_file():
        outcome["figures"] = json.loads(result.read_text())
    if status == "cut":
        outcome["reason"] = f"cut at its deadline of {timeout_s:.0f} s"
    elif status == "error":
        outcome["reason"] = f"exit {code}: {log.read_text(errors='replace')[-ERROR_TAIL_CHARS:]}"
    return outcome


def step_spec(step: Step, args: argparse.Namespace) -> dict[str, Any]:
    """The settings a step's process is given."""
    spec = {"workdir": str(args.workdir), "device": "cpu" if args.dry_run else "cuda", "dry_run": args.dry_run,
            "hbm_tbps": args.hbm_tbps, "side": args.side, "rounds": args.rounds}
    spec["model_dir"] = str(args.workdir / ("tiny" if args.dry_run else "qoq-med-7b-shape"))
    if step.step == "row":
        spec.update(variant=step.name, concurrency=args.concurrency, new_tokens=args.new_tokens,
                    profile_tokens=args.profile_tokens)
    return spec


def measured_nothing(report: dict[str, Any]) -> bool:
    """Whether the run failed as a whole: prepare failed, or no engine row measured anything."""
    return report["steps"].get("prepare", {}).get("status") != "ok" or not measured_rows(report)


def write_report(report: dict[str, Any], out: Path) -> None:
    """``gpu-benchmark.json`` and ``gpu-benchmark.md`` as the run stands now."""
    derive(report)
    (out / "gpu-benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu-benchmark.md").write_text(markdown(report))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the plan within the budget, the report rewritten after each step."""
    budget = Budget(args.budget_s)
    steps = plan(args.dry_run, args.concurrency)
    report: dict[str, Any] = {"command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "dry_run": args.dry_run, "budget_s": args.budget_s, "new_tokens": args.new_tokens,
                              "plan": print_plan(steps, args), "steps": {}}
    (args.out / "steps").mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        estimate = step.estimate(args.dry_run)
        needed = report["steps"].get(step.needs, {}) if step.needs else {"status": "ok"}
        if needed.get("status") != "ok":
            outcome = {"status": "skipped", "reason": f"needs step {step.needs}, which did not succeed"}
        elif not budget.allows(estimate):
            outcome = {"status": "skipped",
                       "reason": f"estimated {estimate:.0f} s, {max(budget.left, 0):.0f} s of the budget left"}
        else:
            timeout = (budget.left - KILL_GRACE_S if step.takes_the_rest
                       else min(budget.left, max(3 * estimate, estimate + GRACE_S)))
            stem = step.name.replace(" ", "").replace("+", "-")
            command = [sys.executable, "-m", "benchmarks.gpu_steps", step.step, "--spec",
                       json.dumps(step_spec(step, args)), "--result", str(args.out / "steps" / f"{stem}.json")]
            print(f"-> {step.name} (deadline {timeout:.0f} s)", flush=True)
            outcome = run_step(command, args.out / "steps" / f"{stem}.json", args.out / "steps" / f"{stem}.log",
                               timeout)
        report["steps"][step.name] = outcome
        report["total_seconds"] = round(args.budget_s - budget.left, 1)
        write_report(report, args.out)
        said = f" ({last_line(outcome['reason'], 300)})" if "reason" in outcome else ""
        took = f" in {outcome['seconds']} s" if "seconds" in outcome else ""
        print(f"   {step.name}: {outcome['status']}{said}{took}", flush=True)
    return report


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--dry-run`` swaps in the tiny shape on the CPU and small counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-benchmark.json and .md")
    parser.add_argument("--dry-run", action="store_true", help="the tiny shape on the CPU: proves the script")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole run (450; dry run 240)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="studies at once (1 32)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens forced per study (128)")
    parser.add_argument("--profile-tokens", type=int, default=32, help="new tokens of the profiled batch-1 study")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs per figure, after a warm-up run")
    parser.add_argument("--side", type=int, default=None, help="vision tower image side (1008)")
    parser.add_argument("--hbm-tbps", type=float, default=None, help="HBM bandwidth in TB/s, if not in the table")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qoq-gpu-benchmark")
    args = parser.parse_args(argv)
    small = args.dry_run
    args.budget_s = args.budget_s if args.budget_s is not None else (240.0 if small else 450.0)
    args.concurrency = args.concurrency or ([1, 4] if small else [1, 32])
    args.new_tokens = args.new_tokens or (8 if small else 128)
    args.side = args.side or (224 if small else 1008)
    args.out, args.workdir = args.out.resolve(), args.workdir.resolve()
    return args


def main() -> None:
    """Run the benchmark and print its table."""
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    print(markdown(report), flush=True)
    if measured_nothing(report):
        raise SystemExit(f"the benchmark measured nothing: see {args.out / 'steps'}")


if __name__ == "__main__":
    main()
