"""The patient's context in the prompt, in plain clinical language: the reason for the exam and the
clinical information of the order, each laboratory result with its value, unit, flag and how long
before the study it was taken, which image is the prior and of when, and the ECG given as signal.
Training put clinical text inline in the question (QOQMED.md); :func:`node.model.prompt.build_prompt`
clips it to the trained budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from node.context.gather import PatientContext, RelatedStudy
from node.store.clinical import LabResult

#: OBX-8 abnormal flags (HL7 table 0078) in words.
FLAG_WORDS = {"H": "high", "L": "low", "HH": "critically high", "LL": "critically low", "A": "abnormal",
              "AA": "critically abnormal", "N": "normal", "<": "below the measurable range",
              ">": "above the measurable range"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def _clean(text: str) -> str:
    """One line of source text: control characters and runs of white space made single spaces."""
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", text)).strip()


def _date(moment: float | None) -> str:
    return datetime.fromtimestamp(moment).astimezone().strftime("%Y-%m-%d") if moment is not None else "an unknown date"


def _amount(value: int, unit: str) -> str:
    return f"{value} {unit}{'' if value == 1 else 's'}"


def interval(moment: float | None, reference: float | None, of: str = "the study") -> str:
    """How far ``moment`` is from ``reference``: "3 hours before the study", "12 days before the study"."""
    if moment is None or reference is None:
        return f"at an unknown time relative to {of}"
    seconds = abs(reference - moment)
    if seconds < 3600:
        amount = _amount(max(1, round(seconds / 60)), "minute")
    elif seconds < 48 * 3600:
        amount = _amount(round(seconds / 3600), "hour")
    else:
        amount = _amount(round(seconds / 86400), "day")
    return f"{amount} {'before' if reference >= moment else 'after'} {of}"


def lab_line(lab: LabResult, study_time: float | None) -> str:
    """One laboratory result as a sentence fragment."""
    code = f" ({lab.coding_system or 'code'} {_clean(lab.code)})" if lab.code else ""
    parts = [f"{_clean(lab.name)}{code}: {_clean(lab.value)}{' ' + _clean(lab.unit) if lab.unit else ''}"]
    if lab.flag:
        parts.append(FLAG_WORDS.get(lab.flag, f"flag {_clean(lab.flag)}"))
    if lab.reference_range:
        parts.append(f"reference range {_clean(lab.reference_range)}")
    return ", ".join(parts) + f"; {interval(lab.observed_at, study_time)}"


def _study_words(study: RelatedStudy) -> str:
    description = f' "{_clean(study.description)}"' if study.description.strip() else ""
    return f"a prior {study.modality or 'imaging'} study{description} of {_date(study.study_time)}"


def image_lines(context: PatientContext, current_images: int, modality: str) -> list[str]:
    """Which image is which: the current study's first, then each prior's."""
    if not context.priors:
        return []
    lines = [f"Image{'s' if current_images > 1 else ''} 1{f'-{current_images}' if current_images > 1 else ''}: "
             f"the current {modality or 'imaging'} study of {_date(context.study_time)}."]
    number = current_images + 1
    for prior in context.priors:
        span = f"{number}" if prior.image_count == 1 else f"{number}-{number + prior.image_count - 1}"
        lines.append(f"Image{'s' if prior.image_count > 1 else ''} {span}: {_study_words(prior)}, "
                     f"{interval(prior.study_time, context.study_time, 'the current study')}.")
        number += prior.image_count
    return lines


def context_text(context: PatientContext, current_images: int, modality: str, ecg_given: bool) -> str:
    """The context paragraph of the prompt ("" when nothing was gathered)."""
    lines: list[str] = []
    order = context.order
    if order is not None:
        if order.reason.strip():
            lines.append(f"Reason for exam: {_clean(order.reason)}.")
        if order.clinical_info.strip():
            lines.append(f"Clinical information: {_clean(order.clinical_info)}.")
        if order.procedure.strip():
            lines.append(f"Requested procedure: {_clean(order.procedure)}.")
    if context.labs:
        lines.append("Laboratory results:")
        lines += [f"- {lab_line(lab, context.study_time)}." for lab in context.labs]
    lines += image_lines(context, current_images, modality)
    if ecg_given and context.ecg is not None:
        lines.append(f"ECG: the 12-lead ECG recorded {interval(context.ecg.study_time, context.study_time)} is "
                     "given as the time series.")
    return "\n".join(["Clinical context:", *lines]) if lines else ""


@dataclass(frozen=True)
class GivenContext:
    """What the results say the model was given besides the study: the context paragraph, the labs (for
    coded content) and one line per input study."""

    text: str
    labs: tuple[LabResult, ...]
    inputs: tuple[str, ...]

    @property
    def any(self) -> bool:
        """Whether anything besides the study itself was given."""
        return bool(self.text or len(self.inputs) > 1)


def input_lines(context: PatientContext, study_uid: str, modality: str, ecg_given: bool) -> tuple[str, ...]:
    """One line per study whose data the model read: the study itself, each prior, the ECG."""
    lines = [f"current {modality or 'imaging'} study {study_uid} of {_date(context.study_time)}"]
    lines += [f"prior {p.modality or 'imaging'} study {p.study_uid} of {_date(p.study_time)} ({p.image_count} "
              f"image{'s' if p.image_count != 1 else ''})" for p in context.priors]
    if ecg_given and context.ecg is not None:
        lines.append(f"ECG study {context.ecg.study_uid} of {_date(context.ecg.study_time)} (signal)")
    return tuple(lines)
