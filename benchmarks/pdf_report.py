"""Benchmark: the CPU time the AI report adds to the results stage, by reasoning length.

A synthetic chest CR (512 × 512) is read through the node's routing and imaging with a recorded answer
boxing its lesion; its results are written (SR, SEG, presentation state, KOS, SC) with and without the PDF
report, the model's reasoning ``--chars`` long (plain clinical prose). Prints the median CPU time of each
(``time.process_time``: the process's own, less disturbed by other load than wall time) and the report's size.

    python -m benchmarks.pdf_report --chars 500 2000 8000 32000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pydicom

from node.chain import prepare_study
from node.config import load_config
from node.imaging.prepared import Prepared
from node.model.profiles import PROFILES
from node.reading import read_from_text
from node.results.writer import write_results
from node.routing import DEFAULT_RULES, Router
from node.testing.synthetic import boxed_response, write_cr_study

SENTENCE = "The right upper lobe shows a dense round opacity with air bronchograms, no effusion. "


def measure(chars: int, runs: int, folder: Path) -> dict[str, float]:
    """Median CPU seconds of the results stage without and with the report, and the report's KiB."""
    cr = write_cr_study(folder / "cr", size=512)
    prepared = prepare_study(cr.study_uid, list(cr.files), Router.from_file(DEFAULT_RULES),
                             load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(prepared, Prepared), prepared
    reasoning = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]
    text = boxed_response(pydicom.dcmread(cr.files[0]), "Pneumonia").replace("<think>", f"<think>{reasoning} ", 1)
    read = read_from_text(prepared, text, "replay (benchmark)", True)
    figures: dict[str, float] = {}
    for report in (False, True):
        times = []
        for run in range(runs):
            start = time.process_time()
            written = write_results(read, folder / f"{report}-{run}", {}, secondary_capture=True,
                                    created=datetime(2026, 1, 1), pdf_report=report)
            times.append(time.process_time() - start)
        figures["with" if report else "without"] = statistics.median(times)
    [pdf] = [item.path for item in written.dicom if item.path.name == "report.dcm"]
    figures["kib"] = pdf.stat().st_size / 1024
    return figures


def main() -> None:
    """Print one line per reasoning length."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, nargs="+", default=[500, 2000, 8000, 32000])
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    for chars in arguments.chars:
        with tempfile.TemporaryDirectory() as folder:
            f = measure(chars, arguments.runs, Path(folder))
        print(f"reasoning {chars:>6} chars: results {f['without'] * 1000:.0f} ms CPU without the report, "
              f"{f['with'] * 1000:.0f} ms with it (+{(f['with'] - f['without']) * 1000:.0f} ms), "
              f"report {f['kib']:.0f} KiB")


if __name__ == "__main__":
    main()
