"""``qoq-node evaluate``: local validation on the replay backend, every figure of report.json worked out by
hand from the set's answers and labels (tests/evaluation_set.py), a second run answered from the kept answers,
and a CSV naming unknown studies or labels refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.evaluation.metrics import Box
from node.evaluation.references import LabelsError, read_references
from node.testing.node_process import replay_settings
from tests.evaluation_set import EvaluationSet, run_evaluate, write_csv, write_evaluation_set

# The answers: every CR "Cardiomegaly, Pleural Effusion" with a box at (100, 100)-(200, 200); every CTPA
# "Acute PE". The references: CR1 {Cardiomegaly, Pleural Effusion} (box on the same spot), CR2 {Cardiomegaly}
# (box at (150, 150)-(250, 250)), CR3 {No Finding}, CR4 {Pleural Effusion, Edema}; CTPA1 and CTPA2 Acute PE,
# CTPA3 No PE, CTPA4 Chronic PE; the fifth CTPA cannot be decoded (it fails); the non-contrast chest CT is
# routed nowhere.
#
# 95 % Wilson intervals, z = 1.959964: centre (p + z²/2n)/(1 + z²/n), half-width
# z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n).
WILSON = {(0, 1): (0.0, 0.793451), (0, 2): (0.0, 0.657620), (1, 2): (0.094531, 0.905469),
          (2, 2): (0.342380, 1.0), (1, 4): (0.045587, 0.699358), (2, 4): (0.150039, 0.849961),
          (3, 3): (0.438503, 1.0), (3, 4): (0.300642, 0.954413), (4, 4): (0.510109, 1.0)}


def _p(successes: int, trials: int) -> dict:
    """A proportion as the report writes it, its interval from the table above."""
    if not trials:
        return {"value": None, "successes": 0, "trials": 0, "ci95": None}
    return {"value": pytest.approx(successes / trials), "successes": successes, "trials": trials,
            "ci95": pytest.approx(list(WILSON[successes, trials]), abs=1e-6)}


def _label(tp: int, fp: int, fn: int, tn: int) -> dict:
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "sensitivity": _p(tp, tp + fn), "specificity": _p(tn, tn + fp),
            "ppv": _p(tp, tp + fp), "npv": _p(tn, tn + fn)}


CHEST_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                "Pneumothorax", "Support Devices"]
# Cardiomegaly and Pleural Effusion: answered for all 4, in 2 references each. No Finding and Edema: in one
# reference each, never answered. The other ten: in no reference, never answered.
CHEST_PER_LABEL = {label: _label(0, 0, 0, 4) for label in CHEST_LABELS} | {
    "Cardiomegaly": _label(2, 2, 0, 0), "Pleural Effusion": _label(2, 2, 0, 0),
    "No Finding": _label(0, 0, 1, 3), "Edema": _label(0, 0, 1, 3)}
# Each study adds one per (reference label, answered label) pair: rows Cardiomegaly (CR1, CR2), Pleural Effusion
# (CR1, CR4), No Finding (CR3), Edema (CR4); columns Cardiomegaly and Pleural Effusion.
CHEST_CONFUSION = [[0] * 16 for _ in CHEST_LABELS]
for row, count in (("Cardiomegaly", 2), ("Pleural Effusion", 2), ("No Finding", 1), ("Edema", 1)):
    for column in ("Cardiomegaly", "Pleural Effusion"):
        CHEST_CONFUSION[CHEST_LABELS.index(row)][CHEST_LABELS.index(column)] = count


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationSet, Path, dict]:
    """The set evaluated once; its report."""
    root = tmp_path_factory.mktemp("evaluate")
    dataset = write_evaluation_set(root)
    run = run_evaluate(dataset, root / "report")
    assert "10/10 studies 100%" in run.stderr and "ETA" in run.stderr  # the progress bar, on stderr
    return dataset, root / "report", json.loads((root / "report" / "report.json").read_text())


def test_every_figure_is_the_one_worked_out_by_hand(evaluated: tuple[EvaluationSet, Path, dict]) -> None:
    dataset, _, report = evaluated
    assert report["model"] == "replay (recorded responses; TEST RESULT, not a model output)"
    assert report["test_result"] is True and report["research_use"].startswith("AI RESULT - RESEARCH USE ONLY")
    assert report["node_version"] and report["studies"] == 10 and report["engine_calls"] == 8
    assert list(report["tasks"]) == ["chest_xray", "ct_chest"]
    chest, ct = report["tasks"]["chest_xray"], report["tasks"]["ct_chest"]

    assert chest["n"] == 4 and chest["skipped"] == [] and chest["failed"] == []
    assert chest["accuracy"] == _p(1, 4)  # CR1 alone is answered exactly
    # set-F1 per study: CR1 1; CR2 P 1/2, R 1 → 2/3; CR3 0; CR4 P 1/2, R 1/2 → 1/2. Mean 13/24.
    assert chest["set_f1"] == pytest.approx((1 + 2 / 3 + 0 + 1 / 2) / 4)
    assert chest["per_label"] == CHEST_PER_LABEL
    assert chest["confusion"] == {"reference": CHEST_LABELS, "answer": [*CHEST_LABELS, "(other)", "(no answer)"],
                                  "counts": CHEST_CONFUSION}
    # CR1's box is the answer's (IoU 1, a hit); CR2's overlaps it by 50×50: 2500 / (10000 + 10000 - 2500) = 1/7.
    assert chest["boxes"] == {"reference_boxes": 2, "mean_iou": pytest.approx((1 + 1 / 7) / 2), "hit_iou": 0.5,
                              "hit_rate": _p(1, 2)}
    assert chest["baseline"] == {"studies": 4, "reference": {"Cardiomegaly": 2, "Pleural Effusion": 2,
                                                             "No Finding": 1, "Edema": 1},
                                 "answer": {"Cardiomegaly": 4, "Pleural Effusion": 4}, "no_answer": 0,
                                 "equipment": [["qoq-node synthetic", ""]]}
    assert chest["paper"]["accuracy"] is None and chest["paper"]["note"].startswith("not reported")
    assert "2506.00711" in chest["paper"]["source"]

    assert ct["domain"] == "ct" and ct["n"] == 4 and ct["skipped"] == []
    [failed] = ct["failed"]
    assert failed["study"] == dataset.names[8] and "cannot decode any of the 1 key image(s)" in failed["reason"]
    assert ct["accuracy"] == _p(2, 4) and ct["set_f1"] == pytest.approx(2 / 4)
    assert ct["per_label"] == {"No PE": _label(0, 0, 1, 3), "Chronic PE": _label(0, 0, 1, 3),
                               "Acute PE": _label(2, 2, 0, 0)}
    assert ct["confusion"]["counts"] == [[0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 2, 0, 0]]
    assert ct["boxes"] is None
    assert ct["baseline"] == {"studies": 4, "reference": {"Acute PE": 2, "No PE": 1, "Chronic PE": 1},
                              "answer": {"Acute PE": 4}, "no_answer": 0, "equipment": [["qoq-node synthetic", ""]]}

    [plain] = report["not_routed"]
    assert plain["study"] == dataset.names[-1] and "nearest: task 'ct_chest'" in plain["reason"]
    by_name = {study["study"]: study for study in report["per_study"]}
    assert by_name["ACC-CR-2"] == {"study": "ACC-CR-2", "task": "chest_xray", "reference": ["Cardiomegaly"],
                                   "answer": ["Cardiomegaly", "Pleural Effusion"], "exact": False,
                                   "set_f1": pytest.approx(2 / 3), "skipped": None, "failed": None}
    assert by_name[dataset.names[5]]["reference"] == ["Acute PE"]  # "acute pe" spelled as the closed set does


def test_a_second_run_asks_the_engine_nothing(evaluated: tuple[EvaluationSet, Path, dict]) -> None:
    """Other recorded answers now: had the engine been asked, the figures would change."""
    dataset, out, first = evaluated
    changed = replay_settings(out.parent / "other.json", {"*": "\\boxed{No Finding}"})
    run = run_evaluate(EvaluationSet(dataset.folder, dataset.labels, {**dataset.env, **changed}, dataset.names,
                                     dataset.cr_sops), out)
    assert "(0 studies asked of the engine" in run.stderr
    second = json.loads((out / "report.json").read_text())
    assert second["engine_calls"] == 0
    assert {**second, "created": None, "engine_calls": None} == {**first, "created": None, "engine_calls": None}


def test_unknown_studies_and_labels_are_listed_and_nothing_runs(evaluated: tuple[EvaluationSet, Path, dict],
                                                                tmp_path: Path) -> None:
    dataset, _, _ = evaluated
    labels = tmp_path / "labels.csv"
    write_csv(labels, [(dataset.names[0], "Cardiomegaly;Pneumonitis", ""), ("1.2.3.4.5", "No PE", ""),
                       ("ACC-NOWHERE", "No PE", ""), (dataset.names[4], "Massive PE", "")])
    (tmp_path / "broken.json").write_text("not JSON: an engine made from it fails to load")
    broken = {"QOQ_NODE__ENGINE__BACKEND": "replay",
              "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(tmp_path / "broken.json")}
    run = run_evaluate(EvaluationSet(dataset.folder, labels, {**dataset.env, **broken}, (), ()),
                       tmp_path / "report", check=False)
    assert run.returncode == 2, run.stderr
    assert "unknown studies" in run.stderr and "1.2.3.4.5, ACC-NOWHERE" in run.stderr
    assert "'Pneumonitis'" in run.stderr and "'Massive PE' (takes No PE, Chronic PE, Acute PE)" in run.stderr
    assert "nothing was run" in run.stderr and "configuration error" not in run.stderr  # no engine was made
    assert not (tmp_path / "report").exists()


def test_reference_boxes_name_their_instance_and_frame(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    write_csv(labels, [("1.2.3", "Glioma Tumor", "1.2.3.4:10,20,30,40; 1.2.3.5/3:0,0,5.5,6")])
    [reference] = read_references(labels)
    assert reference.boxes == (Box("1.2.3.4", 10, 20, 30, 40), Box("1.2.3.5", 0, 0, 5.5, 6, frame=3))
    write_csv(labels, [("1.2.3", "Glioma Tumor", "1.2.3.4:10,20,30")])
    with pytest.raises(LabelsError, match=r"line 2: a box is 'SOPInstanceUID\[/FRAME\]:x1,y1,x2,y2'"):
        read_references(labels)
    write_csv(labels, [("1.2.3", "", "")])
    with pytest.raises(LabelsError, match="line 2: a study and at least one label are needed"):
        read_references(labels)
