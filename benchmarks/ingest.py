"""Ingest benchmark: the node (fsync per instance) against Orthanc, with dcmtk storescu.

Every round sends a fresh synthetic CT study (generated up front, so nothing is a duplicate)
with one ``storescu`` association to the node and to Orthanc, the order alternating between
rounds, and times each whole transfer. Then the same rounds with 4 parallel associations.
dcmtk runs with TCP_NODELAY=1.

    python -m benchmarks.ingest --instances 300 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.figures import against_orthanc, throughput
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(files: list[Path], aet: str, port: int, associations: int) -> float:
    """Send ``files`` with ``associations`` parallel storescu processes; wall seconds."""
    groups = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(["storescu", "-aec", aet, LOOPBACK, str(port), *map(str, group)], env=DCMTK_ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for group in groups
    ]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--settle-seconds", type=float, default=3.0, help="pause between transfers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        workdir = Path(tmp)
        modes = (("one", 1), ("parallel", args.parallel))
        studies = {
            (number, mode): list(write_ct_study(workdir / f"study-{number}-{mode}", args.instances).files)
            for number in range(args.rounds)
            for mode, _ in modes
        }
        os.sync()  # no writeback of the generated files during the timed sends
        with Orthanc(workdir / "orthanc") as orthanc, NodeProcess(workdir / "node", replay={"*": ""}) as node:
            targets = {"node": ("QOQNODE", node.dicom_port), "orthanc": (orthanc.aet, orthanc.dicom_port)}
            results: dict[str, dict[str, list[float]]] = {name: {"one": [], "parallel": []} for name in targets}
            for mode, associations in modes:
                for round_number in range(args.rounds):
                    order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
                    for name in order:
                        aet, port = targets[name]
                        results[name][mode].append(send(studies[round_number, mode], aet, port, associations))
                        os.sync()  # each target starts with no dirty pages of the other's
                        time.sleep(args.settle_seconds)  # and after the other's background work
            size_mb = args.instances * (512 * 512 * 2) / 1e6
            summary = {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "orthanc": subprocess.run(["Orthanc", "--version"], capture_output=True,
                                          text=True).stdout.splitlines()[0],
                "instances": args.instances,
                "rounds": args.rounds,
            }
            for name, modes in results.items():
                for mode, seconds in modes.items():
                    summary.update(throughput(f"{name}_{mode}", seconds, args.instances, size_mb))
            for mode in ("one", "parallel"):
                summary.update(against_orthanc(f"_{mode}", results["node"][mode], results["orthanc"][mode]))
            print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
