"""Memory benchmark: the peak and settled resident memory of the imaging and results stages on one big
multi-frame.

A synthetic ultrasound cine (1024 × 768 RGB frames, ``--megabytes`` of pixel data) is written, then a fresh
process runs the imaging stage on it (route → gather → image, default configuration, on a worker thread as
``serve``'s imaging pool does), reads it with a replay engine and writes its results (SR, SEG, presentation
state, SCs, ORU), and reports its resident set before, its peak (VmHWM) and what it settles at (VmRSS) after
each stage (``node.testing.multiframe``).

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
from pathlib import Path

from node.testing.multiframe import write_cine

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=655, help="the cine's pixel data, MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        cine = write_cine(Path(tmp) / "cine.dcm", args.megabytes).files[0]
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-m", "node.testing.multiframe", str(cine)], cwd=REPO,
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
