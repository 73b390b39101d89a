"""One task's quality beside its baseline: studies read, verdicts by kind, concordance with its 95 % interval,
rejection rate, label drift (PSI) and input drift — over the last ``quality.window`` answers and verdicts (the
metrics) or since a moment (``qoq-node quality --since``). Labels, counts and figures only: no patient data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.config.quality import QualityConfig
from node.quality.baseline import Baseline, baseline_for
from node.quality.figures import concordance_summary, input_drift, label_counts, psi, rejection_rate
from node.store import Answer, Store, Verdict


@dataclass(frozen=True)
class TaskQuality:
    """One task's figures over a window, and its baseline."""

    task: str
    studies: int  # answers in the window
    labels: Counter[str]
    verdicts: Counter[str]  # by kind (a Concordance or a Judgement: 'agree', 'accept', 'reject', …)
    concordance: dict[str, Any]
    rejection_rate: float | None
    psi: float | None
    input_drift: float | None
    baseline: Baseline

    def flags(self, config: QualityConfig) -> list[str]:
        """What is beyond the configured margins, in words without data."""
        flags = []
        value, base = self.concordance["value"], self.baseline.concordance
        if value is not None and base is not None and self.concordance["decided"] >= config.min_verdicts \
                and value < base - config.concordance_margin:
            flags.append(f"concordance {value:.3f} is more than {config.concordance_margin:g} below the baseline's "
                         f"{base:.3f}")
        if self.psi is not None and self.psi > config.psi_limit:
            flags.append(f"label drift PSI {self.psi:.3f} is above {config.psi_limit:g}")
        if self.rejection_rate is not None and self.rejection_rate > config.rejection_rate_limit:
            flags.append(f"rejection rate {self.rejection_rate:.3f} is above {config.rejection_rate_limit:g}")
        return flags

    def as_json(self, config: QualityConfig) -> dict[str, Any]:
        """The figures as ``qoq-node quality --json`` gives them."""
        base = self.baseline
        return {"task": self.task, "studies": self.studies, "labels": dict(self.labels),
                "verdicts": dict(self.verdicts), "concordance": self.concordance,
                "rejection_rate": self.rejection_rate, "label_psi": self.psi, "input_drift": self.input_drift,
                "baseline": {"source": base.source, "studies": base.studies, "labels": dict(base.labels),
                             "concordance": base.concordance, "equipment": len(base.equipment)},
                "flags": self.flags(config)}


def task_quality(task: str, answers: Sequence[Answer], judged: Sequence[Verdict], verdicts: Sequence[Verdict],
                 baseline: Baseline) -> TaskQuality:
    """The figures of ``answers``, with concordance and the verdict kinds from ``judged``, and the rejection
    rate from ``verdicts`` (those that may judge the answers)."""
    labels = label_counts(answers)
    return TaskQuality(task, len(answers), labels, Counter(v.verdict for v in judged), concordance_summary(judged),
                       rejection_rate(answers, verdicts), psi(labels, baseline.labels),
                       input_drift(answers, baseline.equipment), baseline)


def tasks(store: Store) -> list[str]:
    """The tasks there is anything about: answered, or judged."""
    return sorted(set(store.answers.tasks()) | set(store.verdicts.tasks()))


def window_quality(store: Store, task: str, config: QualityConfig, evaluation: dict[str, Any]) -> TaskQuality:
    """``task`` over its last ``window`` answers and verdicts (what the metrics export)."""
    answers = store.answers.latest(config.window, task)
    oldest = min((answer.answered_at for answer in answers), default=0.0)
    return task_quality(task, answers, store.verdicts.latest(config.window, task), store.verdicts.since(oldest, task),
                        baseline_for(task, store, config, evaluation))


def since_quality(store: Store, task: str, since: float, config: QualityConfig,
                  evaluation: dict[str, Any]) -> TaskQuality:
    """``task`` over the answers given and verdicts received since ``since``."""
    verdicts = store.verdicts.since(since, task)
    return task_quality(task, store.answers.since(since, task), verdicts, verdicts,
                        baseline_for(task, store, config, evaluation))
