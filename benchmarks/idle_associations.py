"""Idle-association CPU: what a node burns while PACS associations stay open and send nothing.

A node (``qoq-node serve``, replay engine) accepts N associations from pynetdicom SCUs that then sit
idle; the node process's CPU time (user + system, /proc/<pid>/stat) over ``--seconds`` is reported as a
share of one core, for each N. Before the adaptive DUL poll (issue 17) one idle association cost about
20 % of a core and 128 about 91 %.

    python -m benchmarks.idle_associations --counts 0 8 128 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def measure(node: NodeProcess, count: int, seconds: float) -> float:
    """The node's CPU share of one core while ``count`` idle associations are open."""
    ae = AE(ae_title="IDLESCU")
    ae.add_requested_context(Verification)
    ae.network_timeout = ae.acse_timeout = 600
    associations = [ae.associate(LOOPBACK, node.dicom_port, ae_title="QOQNODE") for _ in range(count)]
    assert all(a.is_established for a in associations), "an association was refused"
    try:
        time.sleep(2)  # let the associations go quiet
        assert node.process is not None
        before, started = _cpu_seconds(node.process.pid), time.monotonic()
        time.sleep(seconds)
        return (_cpu_seconds(node.process.pid) - before) / (time.monotonic() - started)
    finally:
        for association in associations:
            association.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 8, 128])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, NodeProcess(Path(workdir), {
            "QOQ_NODE__DICOM__MAX_ASSOCIATIONS": str(max(args.counts) + 4)},
            replay={"*": "<think>idle</think>\\boxed{No Finding}"}) as node:
        figures = {count: round(100 * measure(node, count, args.seconds), 1) for count in args.counts}
    print(json.dumps({"idle_associations": "node CPU, % of one core", **{str(k): v for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
