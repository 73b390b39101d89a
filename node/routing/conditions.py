"""A rule's conditions tried on a study's header, each saying whether it holds and, when it does not, why.

The reasons name codes, values of coded attributes and the rule's own patterns, never a description's
text or the patient's age (either may identify the patient): they go to logs and the studies' detail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from node.routing.header import StudyHeader
from node.routing.rules import AgeRange, Match


@dataclass(frozen=True)
class Outcome:
    """One condition of a rule on one study: its name, whether it holds, and why not."""

    condition: str
    holds: bool
    why_not: str = ""


def _listed(values: tuple[str, ...], actual: str) -> bool:
    return actual.strip().upper() in {value.strip().upper() for value in values}


def code_listed(wanted: tuple[str, ...], codes: tuple[str, ...]) -> bool:
    """Whether a code is one of ``wanted`` (``SCHEME:VALUE``, or a bare value matching any scheme)."""
    values = {code.split(":", 1)[-1] for code in codes}
    return any(w.upper() in codes if ":" in w else w.upper() in values for w in wanted)


def _searched(pattern: str, texts: tuple[str, ...]) -> bool:
    return any(re.search(pattern, text, re.IGNORECASE) for text in texts)


def _in_range(age: AgeRange, years: float | None) -> bool:
    return years is not None and (age.min is None or years >= age.min) and (age.max is None or years < age.max)


def _range_text(age: AgeRange) -> str:
    low, high = f"{age.min:g} years or older" if age.min else "", f"under {age.max:g} years" if age.max else ""
    return " and ".join(p for p in (low, high) if p)


def _values(field: str, values: tuple[str, ...], actual: str) -> Outcome:
    holds = _listed(values, actual)
    return Outcome(field, holds, "" if holds else f"{field} '{actual}' is not one of {', '.join(values)}")


def outcomes(match: Match, header: StudyHeader) -> Iterator[Outcome]:
    """Each condition ``match`` gives, in the rules file's documented order, tried on ``header``."""
    for field, actual in (("modality", header.modality), ("sop_class", header.sop_class_uid),
                          ("calling_ae", header.calling_ae), ("body_part", header.body_part),
                          ("view_position", header.view_position)):
        values: tuple[str, ...] = getattr(match, field)
        if values:
            yield _values(field, values, actual)
    for field, codes in (("anatomic_region", header.anatomic_regions), ("procedure_code", header.procedure_codes)):
        wanted: tuple[str, ...] = getattr(match, field)
        if wanted:
            holds = code_listed(wanted, codes)
            yield Outcome(field, holds, "" if holds else f"no {field.replace('_', ' ')} of {', '.join(wanted)} "
                          f"(the study has {', '.join(codes) or 'none'})")
    texts: dict[str, tuple[str, ...]] = {
        "study_description": header.descriptions[:1], "procedure_description": header.descriptions[1:2],
        "series_description": header.descriptions[2:], "description": header.descriptions}
    for field, searched in texts.items():
        pattern: str | None = getattr(match, field)
        if pattern is not None:
            holds = _searched(pattern, searched)
            yield Outcome(field, holds, "" if holds else f"{field.replace('_', ' ')} does not match '{pattern}'")
    if match.contrast is not None:
        holds = header.contrast == match.contrast
        yield Outcome("contrast", holds, "" if holds else
                      ("no contrast given (the task's population had contrast)" if match.contrast
                       else "contrast given (the task's population had none)"))
    if match.age is not None:
        holds = _in_range(match.age, header.age_years)
        yield Outcome("age", holds, "" if holds else "patient age unknown" if header.age_years is None
                      else f"patient age outside {_range_text(match.age)}")
    if match.not_ is not None:
        excluded = all(o.holds for o in outcomes(match.not_, header))
        yield Outcome("not", not excluded, f"excluded by 'not' ({summary(match.not_)})" if excluded else "")


def summary(match: Match) -> str:
    """The conditions a match sets, in words (for saying what chose or excluded a study)."""
    parts = []
    for name in (name for name in Match.model_fields if name in match.model_fields_set):
        value = getattr(match, name)
        if isinstance(value, tuple):
            parts.append(f"{name} {'/'.join(value)}")
        elif isinstance(value, str):
            parts.append(f"{name} ~ '{value}'")
        elif isinstance(value, bool):
            parts.append("contrast" if value else "no contrast")
        elif isinstance(value, AgeRange):
            parts.append(f"age {_range_text(value)}")
        elif isinstance(value, Match):
            parts.append(f"not ({summary(value)})")
    return ", ".join(parts)


def first_failure(match: Match, header: StudyHeader) -> Outcome | None:
    """The first condition of ``match`` that ``header`` fails; None when all hold."""
    return next((o for o in outcomes(match, header) if not o.holds), None)


def nearness(match: Match, header: StudyHeader) -> tuple[int, int]:
    """How near ``header`` came to ``match``: the conditions that held before the first that failed, then
    all that held (a skipped study's nearest rule is the one with the most)."""
    held = [o.holds for o in outcomes(match, header)]
    return (held.index(False) if False in held else len(held)), sum(held)
