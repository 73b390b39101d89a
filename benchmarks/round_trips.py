"""DICOM round trips per message, where Nagle's algorithm meeting delayed ACKs would show (~40 ms each):
storescu → the node's SCP (small instances, one association: is the C-STORE-RSP late?), the node's C-FIND
(queries on one association, as the routing survey asks) and C-GET (a prior study) to Orthanc. The node's
C-STORE delivery is ``benchmarks/delivery.py``. Run it with PYTHONPATH on the code to compare.

    python -m benchmarks.round_trips --instances 200 --queries 200 --retrievals 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset

from node.config import DicomDestination
from node.context.pacs import PacsPriors, find_matches
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study


def _storescu(files: list[Path], port: int, nodelay: bool) -> float:
    """ms per instance for one storescu association (dcmtk's own TCP_NODELAY as asked)."""
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    started = time.perf_counter()
    subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(port), *map(str, files)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (time.perf_counter() - started) / len(files) * 1000


def _queries(pacs: PacsPriors, study_uids: list[str], count: int) -> float:
    """ms per series-level C-FIND, ``count`` of them on one association."""
    with pacs.query_association() as assoc:
        started = time.perf_counter()
        for index in range(count):
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID = study_uids[index % len(study_uids)]
            query.SeriesInstanceUID = query.Modality = ""
            assert list(find_matches(assoc, query)), "a study without series"
        return (time.perf_counter() - started) / count * 1000


def main() -> None:
    """Run each measurement and print ms per message as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--retrievals", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qoq-rtt-") as tmp:
        work = Path(tmp)
        small = [write_ct_study(work / f"small{r}", args.instances, size=16).files for r in range(2 * args.rounds)]
        priors = [write_ct_study(work / f"prior{n}", 20, size=64) for n in range(4)]
        with Orthanc(work / "orthanc") as orthanc, NodeProcess(work / "node", replay={"*": ""}) as node:
            for study in priors:
                for path in study.files:
                    orthanc.upload(path)
            orthanc.add_modality("qoqnode", "QOQNODE", node.dicom_port)
            pacs = PacsPriors(DicomDestination(name="pacs", ae_title=orthanc.aet, host=LOOPBACK,
                                               port=orthanc.dicom_port), "QOQNODE")
            times: dict[str, list[float]] = {"storescu_nodelay_to_node": [], "storescu_nagle_to_node": [],
                                             "c_find_series": [], "c_get_20_instances": []}
            for round_ in range(args.rounds):
                times["storescu_nodelay_to_node"].append(_storescu(list(small[2 * round_]), node.dicom_port, True))
                times["storescu_nagle_to_node"].append(_storescu(list(small[2 * round_ + 1]), node.dicom_port, False))
                times["c_find_series"].append(_queries(pacs, [s.study_uid for s in priors], args.queries))
                started = time.perf_counter()
                for index in range(args.retrievals):
                    study = priors[index % len(priors)]
                    assert len(pacs.retrieve(study.study_uid, work / f"got{round_}-{index}")) == len(study.files)
                times["c_get_20_instances"].append((time.perf_counter() - started) / args.retrievals * 1000)
    print(json.dumps({name: {"ms_median": round(statistics.median(v), 2), "rounds": [round(x, 2) for x in v]}
                      for name, v in times.items()}, indent=2))


if __name__ == "__main__":
    main()
