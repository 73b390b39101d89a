"""Recovery: seconds from a destination's return to the delivery of what waited for it.

A node (``qoq-node serve``, replay engine, default ``destinations`` retry and probe settings) reads a
chest CR while its EHR is down; once the ORU has failed twice (so it waits in the backoff), an MLLP
listener comes up on the EHR's port and the time until the study is ``complete`` is taken. Before the
probe (issue 17) delivery waited for the end of the backoff: 142 s after a 2-minute PACS outage.

    python -m benchmarks.recovery --runs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from node.store import COMPLETE, OutboxItem, Store
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK, free_port
from node.testing.node_process import NodeProcess
from node.testing.synthetic import write_cr_study


def _read(root: Path, study_uid: str) -> tuple[str, list[OutboxItem]]:
    store = Store(root / "var" / "state.db")
    try:
        return next((s.state for s in store.studies.summaries() if s.study_uid == study_uid), ""), store.outbox.items()
    finally:
        store.close()


def one_run(workdir: Path) -> float:
    """Seconds from the EHR's return to the study's delivery."""
    port = free_port()
    study = write_cr_study(workdir / "cr", size=256)
    destinations = {"hl7": [{"name": "ehr", "host": LOOPBACK, "port": port, "timeout_seconds": 1}]}
    with NodeProcess(workdir / "node", {"QOQ_NODE__DESTINATIONS": json.dumps(destinations),
                                        "QOQ_NODE__STUDY__STABLE_SECONDS": "1"},
                     replay={"*": "<think>x</think>\\boxed{No Finding}"}) as node:
        subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), str(study.files[0])],
                       check=True, capture_output=True)
        while not any(item.attempts >= 2 for item in _read(node.root, study.study_uid)[1]):
            time.sleep(0.2)
        with MllpListener(port=port):
            back = time.monotonic()
            while _read(node.root, study.study_uid)[0] != COMPLETE:
                time.sleep(0.05)
            return time.monotonic() - back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        seconds = [round(one_run(Path(workdir) / f"run{n}"), 2) for n in range(args.runs)]
    print(json.dumps({"seconds_from_destination_back_to_delivered": seconds, "max": max(seconds)}))


if __name__ == "__main__":
    main()
