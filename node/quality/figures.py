"""The quality figures, from answers and verdicts: concordance (with its 95 % Wilson interval), rejection rate,
label drift (PSI) and input drift. Pure functions over the store's rows.

Each verdict row is one judgement and counts once: a study judged by its report and by a reader through the API
counts twice. A judgement is *decided* when it says whether the answer was right:

- a report's concordance as it was worked out: agree, partial, disagree; unknown (nothing decidable, or only
  uncertain mentions) is left out;
- the API's accept is agree, reject is disagree; correct is agree when the corrected labels are the answer's,
  partial when they share a label, disagree otherwise;
- an IOCM rejection withdraws the result: it counts in the rejection rate, not in concordance.

Concordance = agree / (agree + partial + disagree): a partial agreement counts against it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from node.intervals import wilson
from node.quality.answers import NONE
from node.store import Answer, Verdict
from node.store.verdicts import Concordance, Judgement, Source

AGREE, PARTIAL, DISAGREE = Concordance.AGREE, Concordance.PARTIAL, Concordance.DISAGREE
#: A proportion below this is taken as this in the PSI (an empty bin would make it infinite).
PSI_FLOOR = 1e-4


def decided(verdict: Verdict) -> Concordance | None:
    """What a judgement says of the answer: agree, partial or disagree; None when it does not say."""
    if verdict.source == Source.REPORT:
        return Concordance(verdict.verdict) if verdict.verdict in (AGREE, PARTIAL, DISAGREE) else None
    if verdict.source != Source.API:
        return None
    if verdict.verdict != Judgement.CORRECT:
        return AGREE if verdict.verdict == Judgement.ACCEPT else DISAGREE
    corrected = {label.casefold() for label in verdict.found or ()}
    answered = {label.casefold() for label in verdict.ai_labels}
    if corrected == answered:
        return AGREE
    return PARTIAL if corrected & answered else DISAGREE


def rejects(verdict: Verdict) -> bool:
    """Whether a judgement rejects the result: an IOCM rejection, or the API's reject."""
    return verdict.verdict == Judgement.REJECT


def concordance_summary(verdicts: Iterable[Verdict]) -> dict[str, object]:
    """Agree, partial, disagree and undecided counts, and concordance with its 95 % Wilson interval (None
    with no decided verdict)."""
    kinds = Counter(decided(verdict) for verdict in verdicts)
    trials = kinds[AGREE] + kinds[PARTIAL] + kinds[DISAGREE]
    interval = wilson(kinds[AGREE], trials)
    return {AGREE: kinds[AGREE], PARTIAL: kinds[PARTIAL], DISAGREE: kinds[DISAGREE], "undecided": kinds[None],
            "decided": trials, "value": kinds[AGREE] / trials if trials else None,
            "ci95": list(interval) if interval else None}


def rejection_rate(answers: Sequence[Answer], verdicts: Iterable[Verdict]) -> float | None:
    """The share of ``answers`` whose study a judgement in ``verdicts`` rejected (None with no answer)."""
    if not answers:
        return None
    rejected = {verdict.study_instance_uid for verdict in verdicts if rejects(verdict)}
    return sum(answer.study_instance_uid in rejected for answer in answers) / len(answers)


def label_counts(answers: Iterable[Answer]) -> Counter[str]:
    """How often each label was answered (:data:`NONE` for an answer with none)."""
    return Counter(label for answer in answers for label in answer.labels or (NONE,))


def psi(current: Mapping[str, int], baseline: Mapping[str, int]) -> float | None:
    """The population stability index of the label distribution ``current`` against ``baseline`` (counts per
    label): Σ (c − b) · ln(c / b) over the labels of either, proportions floored at :data:`PSI_FLOOR`. None when
    either is empty. Above 0.2 is the usual mark of a shift worth a look."""
    current_total, baseline_total = sum(current.values()), sum(baseline.values())
    if not current_total or not baseline_total:
        return None
    total = 0.0
    for label in set(current) | set(baseline):
        c = max(current.get(label, 0) / current_total, PSI_FLOOR)
        b = max(baseline.get(label, 0) / baseline_total, PSI_FLOOR)
        total += (c - b) * math.log(c / b)
    return total


def input_drift(answers: Sequence[Answer], equipment: frozenset[tuple[str, str]]) -> float | None:
    """The share of ``answers`` whose images came from a manufacturer and model not in ``equipment`` (None with
    no answer or no equipment to compare with)."""
    if not answers or not equipment:
        return None
    return sum((answer.manufacturer, answer.model) not in equipment for answer in answers) / len(answers)
