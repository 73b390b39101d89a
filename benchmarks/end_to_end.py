"""End-to-end benchmark: last instance received → every object stored by the PACS and the ORU ACKed.

A node (``qoq-node serve``, replay engine boxing the synthetic lesion, so it measures the node and
not a model) delivers to a real Orthanc (the PACS) and an MLLP listener (the EHR). Each run sends a
fresh study with dcmtk storescu (one association) and reads the node's own timestamps from its state
database: the last instance's receipt and the moment the last delivery was acknowledged (the study
became ``complete``). ``stable_seconds`` (the wait that defines "the study is complete") is
subtracted: what remains is the node's overhead — the assembler's polling, imaging, the engine call,
building SR/SEG/GSPS/ORU, fsyncs, and the C-STORE and MLLP round trips.

    python benchmarks/end_to_end.py --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pydicom

from node.store import COMPLETE, Store
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import SyntheticStudy, boxed_response, write_cr_study, write_ct_study

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
STABLE_SECONDS = 1.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _run_once(node: NodeProcess, study: SyntheticStudy) -> float:
    """Send one study; the node's overhead in seconds (stable_seconds subtracted)."""
    subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), *map(str, study.files)],
                   check=True, capture_output=True, env=DCMTK_ENV)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        store = Store(node.root / "var" / "state.db")
        try:
            summary = next((s for s in store.studies.summaries() if s.study_uid == study.study_uid), None)
        finally:
            store.close()
        if summary is not None and summary.state == COMPLETE:
            return summary.state_changed_at - summary.last_received - STABLE_SECONDS
        time.sleep(0.05)
    raise RuntimeError(f"study did not complete: {summary}")


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ct-slices", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qoq-e2e-") as tmp:
        workdir = Path(tmp)
        studies = {
            "CR 1024x1024": [write_cr_study(workdir / f"cr-{n}", size=1024) for n in range(args.runs)],
            f"CT {args.ct_slices} x 512x512": [write_ct_study(workdir / f"ct-{n}", args.ct_slices)
                                                for n in range(args.runs)],
        }
        # Each study gets the same kind of answer: a box on its lesion (the phantoms are alike).
        responses = {"chest_xray": boxed_response(pydicom.dcmread(studies["CR 1024x1024"][0].files[0]), "Mass"),
                     "ct": boxed_response(pydicom.dcmread(studies[f"CT {args.ct_slices} x 512x512"][0].files[0]),
                                          "Nodule")}
        results = {}
        with Orthanc(workdir / "pacs") as pacs, MllpListener() as ehr:
            destinations = {"dicom": [{"name": "pacs", "ae_title": pacs.aet, "host": LOOPBACK,
                                       "port": pacs.dicom_port}],
                            "hl7": [{"name": "ehr", "host": LOOPBACK, "port": ehr.port}]}
            settings = {"QOQ_NODE__STUDY__STABLE_SECONDS": str(STABLE_SECONDS),
                        "QOQ_NODE__DESTINATIONS": json.dumps(destinations), "QOQ_NODE__LOG__LEVEL": "WARNING"}
            with NodeProcess(workdir / "node", settings, replay=responses) as node:
                time.sleep(2)  # let the engine load
                for kind, runs in studies.items():
                    overheads = [_run_once(node, study) for study in runs]
                    results[kind] = {
                        "median_s": round(statistics.median(overheads), 3),
                        "p95_s": round(_percentile(overheads, 0.95), 3),
                        "runs_s": [round(value, 3) for value in overheads],
                    }
            assert len(ehr.received) == 2 * args.runs
    print(json.dumps({
        "benchmark": "end-to-end node overhead (last instance received -> PACS stored + ORU ACKed, "
                     f"minus stable_seconds={STABLE_SECONDS})",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
