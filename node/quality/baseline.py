"""What a task's quality is compared with: the site's evaluation (``qoq-node evaluate``'s report.json: its answer
distribution, accuracy and equipment — manufacturer and model — per task) or, without one, the task's first answers
and verdicts. An evaluation report from before it recorded equipment leaves the first answers' as the baseline's."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import ConfigError
from node.config.quality import QualityConfig
from node.quality.answers import NONE, closed_labels
from node.quality.figures import concordance_summary, label_counts
from node.store import Store

EVALUATION, FIRST_STUDIES = "evaluation", "first_studies"


class BaselineError(ConfigError):
    """The evaluation report named as the baseline cannot be read (the message names the file, not its data)."""


@dataclass(frozen=True)
class Baseline:
    """One task's baseline."""

    source: str  # EVALUATION or FIRST_STUDIES
    studies: int  # the studies its label distribution comes from
    labels: Counter[str]  # answer labels as the closed set spells them, NONE for no answer
    concordance: float | None  # the evaluation's accuracy, or the first verdicts' concordance
    equipment: frozenset[tuple[str, str]]  # (manufacturer, model) the baseline's studies came from


def load_evaluation(path: Path | None) -> dict[str, Any]:
    """The tasks of an evaluation report (empty with no path); :class:`BaselineError` when it cannot be read."""
    if path is None:
        return {}
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"quality.baseline {path} is not an evaluation report.json ({type(exc).__name__})") \
            from exc
    if not isinstance(tasks, dict):
        raise BaselineError(f"quality.baseline {path} is not an evaluation report.json (tasks is not a mapping)")
    return tasks


def _evaluated(task: dict[str, Any]) -> tuple[int, Counter[str], float | None, frozenset[tuple[str, str]]]:
    """An evaluated task's studies, answer distribution (closed-set spelling), accuracy and equipment."""
    recorded = task.get("baseline") or {}
    labels: Counter[str] = Counter()
    for label, count in (recorded.get("answer") or {}).items():
        labels[closed_labels([label], task.get("labels") or ())[0]] += int(count)
    if recorded.get("no_answer"):
        labels[NONE] += int(recorded["no_answer"])
    accuracy = (task.get("accuracy") or {}).get("value")
    equipment = frozenset((str(maker), str(model)) for maker, model in recorded.get("equipment") or ())
    return int(recorded.get("studies") or 0), labels, float(accuracy) if accuracy is not None else None, equipment


def baseline_for(task: str, store: Store, config: QualityConfig, evaluation: dict[str, Any]) -> Baseline:
    """``task``'s baseline: its evaluation when the report has it, else its first ``baseline_studies`` answers
    and first ``window`` verdicts."""
    first = store.answers.first(config.baseline_studies, task)
    equipment = frozenset((answer.manufacturer, answer.model) for answer in first)
    if task in evaluation:
        studies, labels, accuracy, evaluated = _evaluated(evaluation[task])
        return Baseline(EVALUATION, studies, labels, accuracy, evaluated or equipment)
    agreement = concordance_summary(store.verdicts.first(config.window, task))["value"]
    return Baseline(FIRST_STUDIES, len(first), label_counts(first), agreement if isinstance(agreement, float)
                    else None, equipment)
