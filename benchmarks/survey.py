"""Routing survey: seconds for ``qoq-node routing survey --since 7d --json`` over 2,000 studies.

A real Orthanc (its own storage, loopback) holds N one- or two-series studies of 4×4 pixels with varied
headers (chest CTA, head CT, abdomen CT, chest radiographs with a lateral first, mammograms behind a report,
brain MR, breast US, a PET: read and skipped alike), spread over the 8 days surveyed. The survey runs as the
operator runs it, a ``qoq-node`` process: a study-level C-FIND per day (or per narrower window with
``--limit``, Orthanc's ``LimitFindResults``) on one association, a series-level C-FIND per study on
``--associations`` others at once. The time is the process's wall clock, start-up included; the tally is
checked against the studies written.

    python -m benchmarks.survey --studies 2000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import yaml

from node.testing.headers import write_header_study
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc

UNTIL = date(2026, 3, 10)
CONTRAST = {"ContrastBolusAgent": "IOHEXOL"}
#: (study attributes, series attributes, the task it goes to or "skipped"): the mix of studies, repeated.
PROFILES: list[tuple[dict, list[dict], str]] = [
    ({"StudyDescription": "CTA CHEST PE PROTOCOL"}, [{"Modality": "CT", **CONTRAST}], "ct_chest"),
    ({"StudyDescription": "CT HEAD WO CONTRAST"}, [{"Modality": "CT", "BodyPartExamined": "HEAD"}], "ct_head"),
    ({"StudyDescription": "CT ABDOMEN PELVIS W CONTRAST"},
     [{"Modality": "CT", "BodyPartExamined": "ABDOMEN", **CONTRAST}], "skipped"),
    ({"StudyDescription": "XR CHEST 2 VIEWS", "PatientAge": "060Y"},
     [{"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "LL"},
      {"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "PA"}], "chest_xray"),
    ({"StudyDescription": "MAMMO DIAGNOSTIC"},
     [{"Modality": "SR"}, {"Modality": "MG", "BodyPartExamined": "BREAST", "ViewPosition": "MLO"}], "mammography"),
    ({"StudyDescription": "MR BRAIN"}, [{"Modality": "MR", "BodyPartExamined": "BRAIN"}], "mri"),
    ({"StudyDescription": "US BREAST"}, [{"Modality": "US", "BodyPartExamined": "BREAST"}], "ultrasound"),
    ({"StudyDescription": "PET CT WHOLE BODY"}, [{"Modality": "PT"}], "skipped"),
]


def write_studies(directory: Path, count: int) -> None:
    """``count`` studies of the profiles in turn, over the 8 days to :data:`UNTIL`, at distinct times."""
    for index in range(count):
        study, series, _ = PROFILES[index % len(PROFILES)]
        day = UNTIL - timedelta(days=index % 8)
        seconds = index * 37 % 86_400
        when = {"StudyDate": f"{day:%Y%m%d}",
                "StudyTime": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"}
        write_header_study(directory, {**study, **when}, series)


def expected(count: int) -> dict[str, int]:
    """Studies per task (and skipped) of ``count`` studies written by :func:`write_studies`."""
    return dict(Counter(PROFILES[index % len(PROFILES)][2] for index in range(count)))


def survey(workdir: Path, port: int, associations: int) -> tuple[float, dict]:
    """One survey as a process: its wall-clock seconds and its JSON."""
    config = workdir / "node.yaml"
    config.write_text(yaml.safe_dump({"destinations": {"dicom": [
        {"name": "pacs", "ae_title": "ORTHANC", "host": LOOPBACK, "port": port}]}}))
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "node", "routing", "survey", "--config", str(config), "--since", "7d",
                          "--until", str(UNTIL), "--associations", str(associations), "--json"],
                         capture_output=True, text=True,
                         env={**os.environ, "QOQ_NODE__STORAGE__ROOT": str(workdir / "root")})
    if run.returncode:
        raise SystemExit(f"the survey exited {run.returncode}: {run.stderr[-2000:]}")
    return time.monotonic() - started, json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="Orthanc's LimitFindResults (0: none)")
    parser.add_argument("--associations", type=int, default=4, help="the survey's --associations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        workdir = Path(name)
        write_studies(workdir / "files", args.studies)
        with Orthanc(workdir / "orthanc", settings={"LimitFindResults": args.limit}) as orthanc:
            loading = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(orthanc.upload, sorted((workdir / "files").iterdir())))
            loaded = time.monotonic() - loading
            orthanc.add_modality("qoqnode", "QOQNODE", 104)
            runs = [survey(workdir, orthanc.dicom_port, args.associations) for _ in range(args.runs)]
    for _, result in runs:
        tally = {name: group["studies"] for name, group in result["tasks"].items()}
        tally["skipped"] = sum(group["studies"] for group in result["skipped"].values())
        assert tally == expected(args.studies), f"surveyed {tally}, written {expected(args.studies)}"
    seconds = sorted(round(s, 2) for s, _ in runs)
    print(json.dumps({"studies": args.studies, "orthanc_limit": args.limit, "associations": args.associations,
                      "upload_seconds": round(loaded, 1),
                      "survey_seconds": seconds, "median": seconds[len(seconds) // 2],
                      "studies_per_second": round(args.studies / seconds[len(seconds) // 2]),
                      "tasks": {k: v["studies"] for k, v in runs[0][1]["tasks"].items()},
                      "skipped": sum(v["studies"] for v in runs[0][1]["skipped"].values())}))


if __name__ == "__main__":
    main()
