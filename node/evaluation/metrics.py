"""The figures of a local validation, as pure functions of answers and reference labels: training's set-F1
and exact-set accuracy, per-label sensitivity, specificity, PPV and NPV with 95 % Wilson intervals, the
confusion matrix, and box IoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.intervals import wilson


@dataclass(frozen=True)
class Box:
    """A box in source pixel edges of one instance's frame (1-based): columns x1..x2, rows y1..y2."""

    sop_instance_uid: str
    x1: float
    y1: float
    x2: float
    y2: float
    frame: int = 1

    @property
    def area(self) -> float:
        """Its area in pixels (0 for an empty or inverted box)."""
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


def folded(labels: Sequence[str]) -> frozenset[str]:
    """A label set compared as training compared it (the answer's parts, stripped), without case."""
    return frozenset(label.strip().casefold() for label in labels if label.strip())


def set_f1(answer: Sequence[str], reference: Sequence[str]) -> float:
    """Training's standard score: the F1 of the answer's label set against the reference's (0 with no answer)."""
    said, truth = folded(answer), folded(reference)
    hits = len(said & truth)
    if not hits:
        return 0.0
    precision, recall = hits / len(said), hits / len(truth)
    return 2 * precision * recall / (precision + recall)


def exact(answer: Sequence[str], reference: Sequence[str]) -> bool:
    """Whether the answer names exactly the reference's labels (accuracy's hit)."""
    return folded(answer) == folded(reference)


def proportion(successes: int, trials: int) -> dict[str, object]:
    """A proportion for the report: its value (None with no trial), counts and Wilson interval."""
    return {"value": successes / trials if trials else None, "successes": successes, "trials": trials,
            "ci95": list(interval) if (interval := wilson(successes, trials)) else None}


def per_label(label: str, answers: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, object]:
    """One label's 2×2 table over the studies (present in the reference × present in the answer) and its
    sensitivity, specificity, PPV and NPV."""
    key = label.casefold()
    pairs = [(key in folded(truth), key in folded(said)) for said, truth in zip(answers, references, strict=True)]
    tp = sum(truth and said for truth, said in pairs)
    fp = sum(said and not truth for truth, said in pairs)
    fn = sum(truth and not said for truth, said in pairs)
    tn = len(pairs) - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "sensitivity": proportion(tp, tp + fn),
            "specificity": proportion(tn, tn + fp), "ppv": proportion(tp, tp + fp), "npv": proportion(tn, tn + fn)}


NO_ANSWER = "(no answer)"
OTHER = "(other)"


def confusion(labels: Sequence[str], answers: Sequence[Sequence[str]],
              references: Sequence[Sequence[str]]) -> list[list[int]]:
    """Rows: the task's labels as reference; columns: its labels, then answers outside them, then no answer.
    A study adds one to each (reference label, answered label) pair it holds — for a one-label task, the usual
    confusion matrix."""
    keys = [label.casefold() for label in labels]
    matrix = [[0] * (len(labels) + 2) for _ in labels]
    for said, truth in zip(answers, references, strict=True):
        columns = {keys.index(s) if s in keys else len(labels) for s in folded(said)} or {len(labels) + 1}
        for row in (keys.index(t) for t in folded(truth) if t in keys):
            for column in columns:
                matrix[row][column] += 1
    return matrix


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 on different instances or frames)."""
    if (a.sop_instance_uid, a.frame) != (b.sop_instance_uid, b.frame):
        return 0.0
    inter = Box(a.sop_instance_uid, max(a.x1, b.x1), max(a.y1, b.y1), min(a.x2, b.x2), min(a.y2, b.y2)).area
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


#: A reference box is hit when a model box overlaps it at least this much (PASCAL VOC's criterion).
HIT_IOU = 0.5


def box_scores(pairs: Sequence[tuple[Sequence[Box], Sequence[Box]]]) -> dict[str, object] | None:
    """Over (reference boxes, model boxes) per study: each reference box's best IoU with a model box, their
    mean, and the hit rate (best IoU ≥ :data:`HIT_IOU`); None when no study has reference boxes."""
    best = [max((iou(truth, said) for said in model), default=0.0) for reference, model in pairs for truth in reference]
    if not best:
        return None
    hits = sum(value >= HIT_IOU for value in best)
    return {"reference_boxes": len(best), "mean_iou": sum(best) / len(best), "hit_iou": HIT_IOU,
            "hit_rate": proportion(hits, len(best))}
