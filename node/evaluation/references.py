"""The reference CSV of a local validation: one row per study (``study``: its Study Instance UID or
accession number; ``labels``: the reference labels from its task's closed set, separated by ``;``;
optional ``boxes``: ``SOPInstanceUID[/FRAME]:x1,y1,x2,y2`` in the source pixel edges of that instance's frame,
the first unless named, separated by ``;``) — read, matched to the studies found, and checked before anything runs."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from node.errors import DataError
from node.evaluation.metrics import Box


class LabelsError(DataError):
    """The reference CSV cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Reference:
    """One study's reference: as the CSV names it, its labels and its reference boxes."""

    study: str
    labels: tuple[str, ...]
    boxes: tuple[Box, ...] = ()


def _boxes(text: str, line: int) -> tuple[Box, ...]:
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        where, _, numbers = part.rpartition(":")
        uid, _, frame = where.partition("/")
        try:
            x1, y1, x2, y2 = (float(n) for n in numbers.split(","))
            number = int(frame or 1)
        except ValueError:
            raise LabelsError(f"line {line}: a box is 'SOPInstanceUID[/FRAME]:x1,y1,x2,y2', not {part!r}") from None
        if not uid.strip() or number < 1 or x2 <= x1 or y2 <= y1:
            raise LabelsError(f"line {line}: box {part!r} names no instance or frame, or has no area")
        boxes.append(Box(uid.strip(), x1, y1, x2, y2, number))
    return tuple(boxes)


def read_references(path: Path) -> list[Reference]:
    """The CSV's rows (header ``study,labels[,boxes]``); a malformed file raises :class:`LabelsError`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"cannot read labels {path}: {exc}") from exc
    if not rows or not {"study", "labels"} <= set(rows[0]):
        raise LabelsError(f"labels {path} needs a header with the columns 'study' and 'labels' and one row per study")
    references = []
    for line, row in enumerate(rows, start=2):
        labels = tuple(filter(None, (label.strip() for label in (row.get("labels") or "").split(";"))))
        study = (row.get("study") or "").strip()
        if not study or not labels:
            raise LabelsError(f"labels {path} line {line}: a study and at least one label are needed")
        references.append(Reference(study, labels, _boxes(row.get("boxes") or "", line)))
    return references


def match_studies(references: Sequence[Reference],
                  accessions: Mapping[str, str]) -> tuple[dict[str, Reference], list[str]]:
    """Each reference keyed by the Study Instance UID it names (directly or by its accession, given per UID);
    and the problems: names that match no study, or more than one, or a study twice, each listed."""
    by_accession: dict[str, list[str]] = {}
    for uid, accession in accessions.items():
        by_accession.setdefault(accession, []).append(uid)
    matched: dict[str, Reference] = {}
    unknown, ambiguous, twice = [], [], []
    for reference in references:
        uids = [reference.study] if reference.study in accessions else by_accession.get(reference.study, [])
        if not uids:
            unknown.append(reference.study)
        elif len(uids) > 1:
            ambiguous.append(reference.study)
        elif uids[0] in matched:
            twice.append(reference.study)
        else:
            matched[uids[0]] = reference
    problems = [f"{what}: {', '.join(names)}" for what, names in (
        ("unknown studies (no study in the folder has this Study Instance UID or accession)", unknown),
        ("accessions shared by several studies (name them by Study Instance UID)", ambiguous),
        ("studies named twice", twice)) if names]
    return matched, problems


def check_labels(references: Mapping[str, Reference],
                 closed_sets: Mapping[str, Sequence[str]]) -> tuple[dict[str, Reference], list[str]]:
    """Each study's labels spelled as its closed set (``closed_sets`` per study UID) spells them; and the problem
    of labels outside it, listing every one with its study and the labels its task takes."""
    checked, unknown = {}, []
    for uid, reference in references.items():
        spelled = {label.casefold(): label for label in closed_sets[uid]}
        bad = [label for label in reference.labels if label.casefold() not in spelled]
        if bad:
            unknown.append(f"{reference.study}: {', '.join(map(repr, bad))} (takes {', '.join(closed_sets[uid])})")
        checked[uid] = replace(reference, labels=tuple(spelled.get(label.casefold(), label)
                                                       for label in reference.labels))
    return checked, [f"unknown labels — {'; '.join(unknown)}"] if unknown else []
