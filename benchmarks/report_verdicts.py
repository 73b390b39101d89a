"""Benchmark: a radiologist's report → its verdict, for ``--reports`` reports (default 1,000).

A state database under a temporary directory holds ``--reports`` chest radiographs the node has answered
(each a known study with its accession and an answer of one or two CheXpert labels). Each report (one to
four sentences from a pool of phrasings with negations, uncertainty and synonyms) is kept as the HL7
listener keeps it, then the verdicts stage settles: it matches the report to its study (patient and
accession in SQL), finds the closed set's labels with NegEx and records the verdict durably. Then, with
``--kept`` more reports already matched (kept in bulk, as a node with months of reports holds them), the
settling itself: a settling with nothing to do (what each HL7 message and each queued study costs), the first
settling of a restarted stage (it looks at every answer once), and a settling after a newer version of one
study is answered (its report judged again), for 100 studies. Printed as one JSON line: per-report
milliseconds (mean, median, p95, max) of the whole step and of the label extraction alone, the settlings'
milliseconds, and the verdicts by kind. The issue's bound: under 50 ms per report.

    python -m benchmarks.report_verdicts --reports 1000 --kept 100000
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
from collections.abc import Callable, Mapping
from pathlib import Path

from node.ops.logging import configure_logging
from node.routing import DomainSpec, Router
from node.store import Store
from node.store.answers import Answer, insert_answer
from node.store.clinical import InboundMessage, KnownStudy, patient_key
from node.store.reports import Report
from node.store.verdicts import Source
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


def _keep_matched(store: Store, count: int, rng: random.Random) -> list[str]:
    """``count`` reports already matched to studies the node answered (version 1), with their verdicts, kept in
    bulk under one message; their studies' UIDs."""
    uids = [f"1.2.4.{n}" for n in range(count)]
    key, now = patient_key("BENCH-0002", "HOSP"), time.time()
    with store.database.transaction() as db:
        message = db.execute("INSERT INTO hl7_messages (control_id, message_type, sending_application, patient_key,"
                             " path, received_at) VALUES ('KEPT', 'ORU^R01', 'RIS', ?, 'hl7/KEPT.hl7', ?)",
                             (key, now)).lastrowid
        for uid in uids:
            insert_answer(db, Answer(uid, 1, "chest_xray", tuple(rng.sample(LABELS, 1)), "", "", now))
        db.executemany("INSERT INTO reports (message_id, patient_key, placer, filler, accession, status, text,"
                       " received_at, study_uid, version) VALUES (?, ?, '', '', ?, 'F', ?, ?, ?, 1)",
                       [(message, key, f"K{n}", rng.choice(SENTENCES), now, uid) for n, uid in enumerate(uids)])
        db.executemany("INSERT INTO verdicts (study_instance_uid, version, task, source, source_key, verdict,"
                       " received_at, recorded_at) VALUES (?, 1, 'chest_xray', ?, ?, 'unknown', ?, ?)",
                       [(uid, Source.REPORT, store.verdicts.source_key(Source.REPORT, f"K{n}"), now, now)
                        for n, uid in enumerate(uids)])
    return uids


def _timed(settle: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    judged = settle()
    return time.perf_counter() - started, judged


def _settlings(store: Store, tasks: Mapping[str, DomainSpec], uids: list[str], rng: random.Random) -> dict:
    """The settlings' figures over every report kept: idle, the first after a restart, and after a newer
    version of a study is answered (100 studies of ``uids``)."""
    verdicts = ReportVerdicts(store, tasks)
    first, _ = _timed(verdicts.settle)
    idle = [_timed(verdicts.settle)[0] for _ in range(100)]
    newer, judged_again = [], 0
    for uid in rng.sample(uids, min(100, len(uids))):
        with store.database.transaction() as db:
            insert_answer(db, Answer(uid, 2, "chest_xray", ("No Finding",), "", "", time.time()))
        seconds, judged = _timed(verdicts.settle)
        newer.append(seconds)
        judged_again += judged
    return {"idle": _percentiles(idle), "first_after_start_ms": round(first * 1000, 3),
            "newer_version": _percentiles(newer), "judged_again": judged_again}


def run(count: int, root: Path, seed: int = 7, kept: int = 0) -> dict:
    """Answer ``count`` studies, then keep and settle one report for each, with ``kept`` more reports already
    matched; the figures."""
    rng = random.Random(seed)
    store = Store(root / "state.db")
    tasks = Router.from_file().rules.domains
    kept_uids = _keep_matched(store, kept, rng)
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
    kinds = Counter(v.verdict for v in store.verdicts.since(0.0) if v.study_instance_uid.startswith("1.2.3."))
    settlings = _settlings(store, tasks, [*kept_uids, *(f"1.2.3.{n}" for n in range(count))], rng)
    store.close()
    return {"reports": count, "kept": kept, "keep_match_extract_record": _percentiles(whole),
            "extract_only": _percentiles(extraction), "settle": settlings, "verdicts": dict(sorted(kinds.items())),
            "python": platform.python_version(), "machine": platform.machine()}


def main() -> None:
    """Run the benchmark and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--kept", type=int, default=0, help="reports already matched, kept in bulk (default 0)")
    arguments = parser.parse_args()
    configure_logging("WARNING")  # one info event per verdict would be timed too
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(run(arguments.reports, Path(directory), kept=arguments.kept)))


if __name__ == "__main__":
    main()
