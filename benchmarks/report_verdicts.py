"""Benchmark: a radiologist's report → its verdict, for ``--reports`` reports (default 1,000).

A state database under a temporary directory holds ``--reports`` chest radiographs the node has answered
(each a known study with its accession and an answer of one or two CheXpert labels). Each report (one to
four sentences from a pool of phrasings with negations, uncertainty and synonyms) is kept as the HL7
listener keeps it, then the verdicts stage settles: it matches the report to its study (patient and
accession in SQL), finds the closed set's labels with NegEx and records the verdict durably. Printed as one
JSON line: per-report milliseconds (median, p95, max) of the whole step and of the label extraction alone,
and the verdicts by kind. The issue's bound: under 50 ms per report.

    python -m benchmarks.report_verdicts --reports 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from node.ops.logging import configure_logging
from node.routing import Router
from node.store import Store
from node.store.answers import Answer, insert_answer
from node.store.clinical import InboundMessage, KnownStudy, patient_key
from node.store.reports import Report
from node.verdicts.labels import LabelFinder
from node.verdicts.stage import ReportVerdicts

SENTENCES = (
    "Right upper lobe pneumonia.", "No pneumothorax.", "Normal heart size.", "Possible small left effusion.",
    "No evidence of focal consolidation, pneumothorax, or pleural effusion.", "Mild cardiomegaly.",
    "Pulmonary edema cannot be excluded.", "Endotracheal tube 4 cm above the carina.",
    "No acute cardiopulmonary process.", "Stable 3.5 cm nodule in the left lower lobe, but no new opacity.",
    "Bibasilar atelectasis, likely.", "No change in the small right pleural effusion.",
)
LABELS = ("Pneumonia", "Pneumothorax", "Pleural Effusion", "Cardiomegaly", "Edema", "No Finding", "Atelectasis")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean_ms": round(statistics.fmean(ordered) * 1000, 3),
            "median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3)}


def run(count: int, root: Path, seed: int = 7) -> dict:
    """Answer ``count`` studies, then keep and settle one report for each; the figures."""
    rng = random.Random(seed)
    store = Store(root / "state.db")
    tasks = Router.from_file().rules.domains
    key = patient_key("BENCH-0001", "HOSP")
    with store.database.transaction() as db:
        for n in range(count):
            insert_answer(db, Answer(f"1.2.3.{n}", 1, "chest_xray", tuple(rng.sample(LABELS, rng.randint(1, 2))),
                                     "", "", time.time()))
    for n in range(count):
        store.clinical.know_study(KnownStudy(f"1.2.3.{n}", key, f"ACC{n}", "CR", None, "", None), time.time())
    texts = [" ".join(rng.sample(SENTENCES, rng.randint(1, 4))) for _ in range(count)]
    verdicts = ReportVerdicts(store, tasks)
    finder = LabelFinder(tasks["chest_xray"].labels, tasks["chest_xray"].synonyms)
    whole, extraction = [], []
    for n, text in enumerate(texts):
        started = time.perf_counter()
        report = Report(key, f"ACC{n}P", f"ACC{n}F", f"ACC{n}", "F", text)
        store.clinical.record_message(InboundMessage(f"R{n}", "ORU^R01", "RIS", key, reports=(report,)),
                                      f"hl7/R{n}.hl7", time.time())
        assert verdicts.settle() == 1
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        finder.find(text)
        extraction.append(time.perf_counter() - started)
    kinds = Counter(v.verdict for v in store.verdicts.since(0.0))
    store.close()
    return {"reports": count, "keep_match_extract_record": _percentiles(whole),
            "extract_only": _percentiles(extraction), "verdicts": dict(sorted(kinds.items())),
            "python": platform.python_version(), "machine": platform.machine()}


def main() -> None:
    """Run the benchmark and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    arguments = parser.parse_args()
    configure_logging("WARNING")  # one info event per verdict would be timed too
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(run(arguments.reports, Path(directory))))


if __name__ == "__main__":
    main()
