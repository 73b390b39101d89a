"""Quality figures from the store: concordance and its interval, how each verdict counts, rejection rate, label
drift (PSI) against an evaluation's baseline or the first answers, input drift; the scrape-time metrics; and
``qoq-node quality``."""

import json
import math
import time
from pathlib import Path

import pytest

from node.cli import main
from node.config.quality import QualityConfig
from node.intervals import wilson
from node.ops.metrics import Metrics
from node.quality.baseline import EVALUATION, FIRST_STUDIES, BaselineError, baseline_for, load_evaluation
from node.quality.collector import watch_quality
from node.quality.figures import decided, psi
from node.store import Answer, Store, Verdict
from node.store.answers import insert_answer
from tests.helpers import metric_value

TASK = "chest_xray"


def _answer(n: int, labels: tuple[str, ...], equipment: tuple[str, str] = ("ACME", "X1"), at: float = 0) -> Answer:
    return Answer(f"1.2.{n}", 1, TASK, labels, *equipment, at or float(n))


def _report(n: int, kind: str) -> Verdict:
    return Verdict(f"1.2.{n}", 1, TASK, "report", f"ACC{n}", kind, received_at=1000.0 + n, ai_labels=("Pneumonia",))


def _fill(store: Store, answers: list[Answer], verdicts: list[Verdict]) -> None:
    with store.database.transaction() as db:
        for answer in answers:
            insert_answer(db, answer)
    for verdict in verdicts:
        store.verdicts.record(verdict)


def test_each_judgement_counts_as_the_docs_say() -> None:
    """Reports count as worked out (unknown left out); the API's accept/reject/correct map to agree, disagree and
    agree/partial/disagree by the corrected labels; an IOCM rejection is no concordance verdict."""
    api = Verdict("1", 1, TASK, "api", "k", "correct", 1, ai_labels=("Pneumonia", "Edema"), found=("pneumonia",))
    assert decided(api) == "partial"
    assert decided(Verdict("1", 1, TASK, "api", "k", "correct", 1, ai_labels=("Edema",), found=("Edema",))) == "agree"
    assert decided(Verdict("1", 1, TASK, "api", "k", "correct", 1, ai_labels=("Edema",), found=("Mass",))) == "disagree"
    assert decided(Verdict("1", 1, TASK, "api", "k", "accept", 1)) == "agree"
    assert decided(Verdict("1", 1, TASK, "api", "k", "reject", 1)) == "disagree"
    assert decided(Verdict("1", 1, TASK, "iocm", "k", "reject", 1, reason_code="113001")) is None
    assert decided(_report(1, "unknown")) is None and decided(_report(1, "partial")) == "partial"


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    assert psi({"A": 50, "B": 50}, {"A": 5, "B": 5}) == pytest.approx(0.0)
    shifted = psi({"A": 90, "B": 10}, {"A": 50, "B": 50})
    assert shifted == pytest.approx(0.4 * math.log(0.9 / 0.5) - 0.4 * math.log(0.1 / 0.5))
    assert psi({"A": 1}, {}) is None
    assert psi({"C": 10}, {"A": 10}) > 0.2  # a label the baseline never saw: floored, not infinite


def test_window_figures_and_metrics_read_from_the_store(tmp_path: Path) -> None:
    """Against the first answers as baseline: a later shift in labels and equipment shows as PSI and input drift;
    concordance over the last window verdicts, with the Wilson interval; rejections of window answers."""
    store = Store(tmp_path / "state.db")
    early = [_answer(n, ("Pneumonia",)) for n in range(10)]
    late = [_answer(n, ("Pneumothorax",), ("OTHER", "Y2")) for n in range(10, 20)]
    verdicts = [_report(n, kind) for n, kind in enumerate(["agree"] * 6 + ["partial", "disagree", "unknown"])]
    verdicts.append(Verdict("1.2.15", 1, TASK, "iocm", "2.25.9", "reject", 2000.0, reason_code="113001"))
    _fill(store, early + late, verdicts)
    config = QualityConfig(window=10, baseline_studies=10)
    metrics = Metrics()
    watch_quality(metrics, store, config, {})
    text = metrics.render().decode()
    task = f'task="{TASK}"'
    assert metric_value(text, "qoqnode_verdicts", f'source="report",{task},verdict="agree"') == 6
    assert metric_value(text, "qoqnode_verdicts", f'source="iocm",{task},verdict="reject"') == 1
    # the last 10 verdicts: 6 agree, 1 partial, 1 disagree (partial counts against), 1 unknown and 1 iocm (left out)
    assert metric_value(text, "qoqnode_quality_concordance", task) == pytest.approx(6 / 8)
    assert metric_value(text, "qoqnode_quality_concordance_decided", task) == 8
    assert metric_value(text, "qoqnode_quality_input_drift", task) == 1.0  # the last 10 answers: all OTHER Y2
    assert metric_value(text, "qoqnode_quality_rejection_rate", task) == pytest.approx(0.1)
    assert metric_value(text, "qoqnode_quality_label_psi", task) > 0.2
    baseline = baseline_for(TASK, store, config, {})
    assert (baseline.source, baseline.studies, dict(baseline.labels)) == (FIRST_STUDIES, 10, {"Pneumonia": 10})
    assert baseline.concordance == pytest.approx(6 / 8)
    lower, upper = wilson(6, 8)
    assert lower < 6 / 8 < upper
    store.close()


def _evaluation(tmp_path: Path, equipment: list[list[str]] | None = None) -> Path:
    recorded = {"studies": 20, "answer": {"pneumonia": 18, "Alien": 1}, "no_answer": 1}
    report = {"tasks": {TASK: {"labels": ["Pneumonia", "Pneumothorax"], "accuracy": {"value": 0.9},
                               "baseline": recorded if equipment is None else {**recorded, "equipment": equipment}}}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


def test_an_evaluation_report_is_the_baseline_when_configured(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _fill(store, [_answer(1, ("Pneumonia",))], [])
    evaluation = load_evaluation(_evaluation(tmp_path))
    baseline = baseline_for(TASK, store, QualityConfig(), evaluation)
    assert (baseline.source, baseline.studies, baseline.concordance) == (EVALUATION, 20, 0.9)
    assert dict(baseline.labels) == {"Pneumonia": 18, "other": 1, "none": 1}
    assert baseline.equipment == {("ACME", "X1")}  # an older report without equipment: the first answers'
    evaluated = baseline_for(TASK, store, QualityConfig(), load_evaluation(_evaluation(tmp_path, [["Vendor", "Z"]])))
    assert evaluated.equipment == {("Vendor", "Z")}
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(BaselineError, match=r"is not an evaluation report\.json"):
        load_evaluation(bad)
    store.close()


def test_the_quality_command_reports_each_task_beside_its_baseline(tmp_path: Path, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--json and text: studies, verdicts, concordance with its interval, flags past the margins; no UID printed."""
    monkeypatch.setenv("QOQ_NODE__STORAGE__ROOT", str(tmp_path))
    monkeypatch.setenv("QOQ_NODE__QUALITY__BASELINE", str(_evaluation(tmp_path)))
    monkeypatch.setenv("QOQ_NODE__QUALITY__MIN_VERDICTS", "3")
    store = Store(tmp_path / "state.db")
    now = time.time()
    _fill(store, [_answer(n, ("Pneumothorax",), at=now) for n in range(4)],
          [Verdict(f"1.2.{n}", 1, TASK, "report", f"A{n}", kind, now) for n, kind in
           enumerate(["agree", "disagree", "disagree", "unknown"])])
    store.close()
    assert main(["quality", "--since", "1d", "--json"]) == 0
    [task] = json.loads(capsys.readouterr().out)["tasks"]
    assert (task["task"], task["studies"], task["verdicts"]) == (TASK, 4, {"agree": 1, "disagree": 2, "unknown": 1})
    assert task["concordance"]["value"] == pytest.approx(1 / 3)
    assert task["concordance"]["ci95"] == pytest.approx(list(wilson(1, 3)))
    assert task["baseline"]["source"] == EVALUATION and task["label_psi"] > 0.2
    assert any("concordance" in flag for flag in task["flags"]) and any("PSI" in flag for flag in task["flags"])
    assert main(["quality"]) == 0
    text = capsys.readouterr().out
    assert "concordance      0.333 (95 % CI" in text and "baseline 0.900" in text and "1.2." not in text
    with pytest.raises(SystemExit):
        main(["quality", "--since", "yesterday"])
