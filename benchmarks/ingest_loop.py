"""Ingest in a quiet loop: the node alone, studies sent back to back from the page cache.

Where ``benchmarks/ingest.py`` compares the node with Orthanc under the same disk load, this
measures the node's own path with as little else going on as possible: fresh synthetic CT
studies are generated (and stay in the page cache), a node starts with ``stable_seconds`` high
enough that its pipeline stays idle, and each study is sent with ``--associations`` parallel
storescu processes (TCP_NODELAY=1), one after the other. Besides wall time it reports the CPU
time the node's process used for each study (from /proc, user + system): near one core's worth
means the node's Python (one interpreter, one GIL) is the limit.

    python -m benchmarks.ingest_loop --studies 10 --associations 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.ingest import send
from node.testing.node_process import NodeProcess
from node.testing.synthetic import write_ct_study


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Run the loop and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--pause-seconds", type=float, default=1.0, help="pause between studies")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qoq-loop-") as tmp:
        workdir = Path(tmp)
        studies = [list(write_ct_study(workdir / f"study-{n}", args.instances).files) for n in range(args.studies)]
        os.sync()  # no writeback of the generated files during the timed sends
        settings = {"QOQ_NODE__STUDY__STABLE_SECONDS": "3600"}  # the pipeline stays idle
        with NodeProcess(workdir / "node", settings=settings, replay={"*": ""}) as node:
            assert node.process is not None
            seconds, cpu = [], []
            for files in studies:
                before = cpu_seconds(node.process.pid)
                seconds.append(send(files, "QOQNODE", node.dicom_port, args.associations))
                cpu.append(cpu_seconds(node.process.pid) - before)
                time.sleep(args.pause_seconds)
        median = statistics.median(seconds)
        print(json.dumps({"instances": args.instances, "associations": args.associations,
                          "median_s": round(median, 3), "instances_per_s": round(args.instances / median, 1),
                          "all_s": [round(s, 3) for s in seconds],
                          "node_cpu_s_median": round(statistics.median(cpu), 3),
                          "node_cpu_s_all": [round(c, 3) for c in cpu]}, indent=2))


if __name__ == "__main__":
    main()
