"""``report.json`` of a validation run: per task, n, the skipped and failed studies with their reasons,
accuracy and set-F1 as training scored them, per-label sensitivity, specificity, PPV and NPV with 95 %
Wilson intervals, the confusion matrix, box hit rate and IoU where reference boxes exist, the paper's
figure for the domain, and the label distribution and equipment (manufacturer, model) kept as production
monitoring's baseline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from node import __version__
from node.evaluation.metrics import NO_ANSWER, OTHER, Box, box_scores, confusion, exact, per_label, proportion, set_f1
from node.evaluation.run import Outcome, Run
from node.quality.answers import equipment
from node.reading import Read
from node.results.provenance import DISCLAIMER, RESEARCH_LABEL
from node.routing import DomainSpec

#: Where the model's own figures come from, and what it gives per domain.
PAPER = "QoQ-Med, Dai et al., arXiv 2506.00711 (NeurIPS 2025), and its release README (DDVD233/QoQ_Med)"
PAPER_PER_DOMAIN = ("not reported: no accuracy per domain was found in the paper or the release; they give macro-F1 "
                    "comparisons and one average validation accuracy over all domains (68.6 % for the 7B model, "
                    "70.7 % for the 32B)")


def _model_boxes(read: Read) -> list[Box]:
    return [Box(b.source.frame.sop_instance_uid, b.source.column_min, b.source.row_min, b.source.column_max,
                b.source.row_max, b.source.frame.frame) for b in read.findings.boxes]


def _study(outcome: Outcome) -> dict[str, Any]:
    read = outcome.read
    answer = list(read.findings.labels) if read else None
    return {"study": outcome.study, "task": outcome.task, "reference": list(outcome.reference.labels),
            "answer": answer, "exact": exact(answer, outcome.reference.labels) if answer is not None else None,
            "set_f1": set_f1(answer, outcome.reference.labels) if answer is not None else None,
            "skipped": outcome.skipped, "failed": outcome.failed}


def task_report(name: str, spec: DomainSpec, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """One task's figures over its studies' outcomes."""
    reads = [(o, o.read) for o in outcomes if o.read is not None]
    answers = [list(read.findings.labels) for _, read in reads]
    references = [list(o.reference.labels) for o, _ in reads]
    hits = sum(exact(a, r) for a, r in zip(answers, references, strict=True))
    boxed = [(o.reference.boxes, _model_boxes(read)) for o, read in reads if o.reference.boxes]
    answered = Counter(label for answer in answers for label in answer)
    return {
        "domain": spec.domain or name,
        "population": spec.population,
        "labels": list(spec.labels),
        "n": len(reads),
        "skipped": [{"study": o.study, "reason": o.skipped} for o in outcomes if o.skipped is not None],
        "failed": [{"study": o.study, "reason": o.failed} for o in outcomes if o.failed is not None],
        "accuracy": proportion(hits, len(reads)),
        "set_f1": sum(set_f1(a, r) for a, r in zip(answers, references, strict=True)) / len(reads) if reads else None,
        "per_label": {label: per_label(label, answers, references) for label in spec.labels},
        "confusion": {"reference": list(spec.labels), "answer": [*spec.labels, OTHER, NO_ANSWER],
                      "counts": confusion(spec.labels, answers, references)},
        "boxes": box_scores(boxed),
        "paper": {"accuracy": None, "note": PAPER_PER_DOMAIN, "source": PAPER},
        "baseline": {"studies": len(reads),
                     "reference": dict(Counter(label for reference in references for label in reference)),
                     "answer": dict(answered), "no_answer": sum(not answer for answer in answers),
                     "equipment": sorted({equipment(read) for _, read in reads})},
    }


def build_report(run: Run, created: datetime | None = None) -> dict[str, Any]:
    """The whole report: provenance, each task that a labelled study was routed to, and the studies routing
    sent nowhere (each reason names the task whose rule came nearest)."""
    by_task: dict[str, list[Outcome]] = {}
    for outcome in run.outcomes:
        if outcome.task is not None:
            by_task.setdefault(outcome.task, []).append(outcome)
    return {
        "research_use": f"{RESEARCH_LABEL}: {DISCLAIMER}",
        "model": run.model,
        "test_result": any(o.read.is_test_result for o in run.outcomes if o.read is not None),
        "node_version": __version__,
        "created": (created or datetime.now().astimezone()).isoformat(timespec="seconds"),
        "engine_calls": run.engine_calls,
        "studies": len(run.outcomes),
        "tasks": {name: task_report(name, spec, by_task[name]) for name, spec in run.tasks.items() if name in by_task},
        "not_routed": [{"study": o.study, "reason": o.skipped} for o in run.outcomes if o.task is None],
        "per_study": [_study(o) for o in run.outcomes],
    }
