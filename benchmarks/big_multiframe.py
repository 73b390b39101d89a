"""Memory benchmark: the peak and settled resident memory of the imaging and results stages on one big
multi-frame.

A synthetic ultrasound cine (1024 × 768 RGB frames, ``--megabytes`` of pixel data) is written, then a fresh
process runs the imaging stage on it (route → gather → image, default configuration, on a worker thread as
``serve``'s imaging pool does), reads it with a replay engine and writes its results (SR, SEG, presentation
state, SCs, ORU), and reports its resident set before, its peak (VmHWM) and what it settles at (VmRSS) after
each stage (``--measure FILE``: that process; it prints one JSON line).

    python -m benchmarks.big_multiframe --megabytes 655
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from node.testing.multiframe import write_cine

REPO = Path(__file__).resolve().parents[1]


def resident_mb() -> dict[str, float]:
    """This process's resident set now (VmRSS) and at its peak (VmHWM), MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[name].split()[0]) * 1024 / 1e6 for key, name in (("now", "VmRSS"), ("peak", "VmHWM"))}


def measure(path: Path) -> dict[str, float]:
    """The imaging stage (through :func:`node.chain.prepare_study`, default configuration and rules) on the
    one-file study at ``path``, on a worker thread as ``serve``'s imaging pool runs it, then the read (a replay
    engine) and the results stage: the resident set before, the peak and the resident set after the imaging
    stage, and the peak and resident set after the results (MB)."""
    from node.chain import prepare_study
    from node.config import load_config
    from node.dicom_files import read_attributes
    from node.engine import GenerationSettings
    from node.engine.replay import ReplayEngine
    from node.imaging.prepared import Prepared
    from node.model.profiles import PROFILES
    from node.reading import read_batch
    from node.results.hl7 import Hl7Party
    from node.results.writer import write_results
    from node.routing import Router

    config = load_config(None, environ={})
    router = Router.from_file(config.routing.rules)
    study_uid = str(read_attributes(path, ["StudyInstanceUID"]).StudyInstanceUID)
    before = resident_mb()["now"]
    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(prepare_study, study_uid, [path], router, config.imaging,
                               PROFILES["qwen2.5-vl"]).result()
    if not isinstance(prepared, Prepared) or not prepared.inputs:
        raise RuntimeError(f"the cine was not prepared: {prepared}")
    after = resident_mb()
    [read] = read_batch([prepared], ReplayEngine({"*": "<think>a</think>\\boxed{Benign}"}), GenerationSettings())
    with tempfile.TemporaryDirectory(prefix="qoq-results-") as results, ThreadPoolExecutor(1) as pool:
        pool.submit(write_results, read, Path(results), {"oru": Hl7Party()}, config.results.secondary_capture).result()
    done = resident_mb()
    return {"before_mb": before, "peak_mb": after["peak"], "settled_mb": after["now"],
            "results_peak_mb": done["peak"], "results_settled_mb": done["now"]}


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=655, help="the cine's pixel data, MB")
    parser.add_argument("--measure", type=Path, help="measure the stages on this file, in this process")
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        cine = write_cine(Path(tmp) / "cine.dcm", args.megabytes).files[0]
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-m", "benchmarks.big_multiframe", "--measure", str(cine)], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=600)
        seconds = time.monotonic() - started
        memory = json.loads(child.stdout.splitlines()[-1])
        file_mb = cine.stat().st_size / 1e6
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores", "file_mb": round(file_mb, 1),
                      **{key: round(value, 1) for key, value in memory.items()},
                      "peak_over_before_mb": round(memory["peak_mb"] - memory["before_mb"], 1),
                      "settled_over_before_mb": round(memory["settled_mb"] - memory["before_mb"], 1),
                      "results_peak_over_before_mb": round(memory["results_peak_mb"] - memory["before_mb"], 1),
                      "process_seconds": round(seconds, 1)}, indent=2))


if __name__ == "__main__":
    main()
