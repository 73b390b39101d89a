"""The route stage: a study's files → ``Routed`` (its task) or ``Skipped`` (why not)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.dicom_files import read_attributes
from node.ops.logging import get_logger, uid_hash
from node.routing.header import StudyHeader
from node.routing.router import Explanation, Router, Task

log = get_logger("routing")

#: Modalities of instances that are not images or waveforms (reports, presentation states, key objects,
#: segmentations, registrations, documents): a study is not routed by them.
NOT_READ_MODALITIES = frozenset({"SR", "PR", "KO", "SEG", "REG", "DOC", "RWV", "PLAN", "FID"})


@dataclass(frozen=True)
class Routed:
    """A study with its task: what the next stages read and ask."""

    study_uid: str
    files: tuple[Path, ...]
    task: Task
    modality: str  # of the instance the study was routed by


@dataclass(frozen=True)
class Skipped:
    """A study the node does not read, and why (names codes and limits, never the patient). Settled at
    once: reading it again gives the same answer."""

    study_uid: str
    files: tuple[Path, ...]
    reason: str
    stage: str  # the stage that skipped it: routing or imaging


def _headers(files: Sequence[Path], router: Router) -> Iterator[StudyHeader]:
    """The routing attributes of each image or waveform instance, in arrival order (a dose report or another
    system's SR that arrived first does not decide the study's task); the first instance's when the study
    has none. With a router that finds orders, the study's HL7 order's procedure is part of each."""
    first, order, found = None, None, False
    for path in files:
        ds = read_attributes(path)
        if first is None:
            first = ds
            order = router.orders.order_of(ds) if router.orders is not None else None
        if str(ds.get("Modality", "")).strip().upper() not in NOT_READ_MODALITIES:
            found = True
            yield StudyHeader.from_dataset(ds, order=order)
    if first is None:
        raise ValueError("a study has at least one file")
    if not found:
        yield StudyHeader.from_dataset(first, order=order)


def first_routed(headers: Iterable[StudyHeader], router: Router) -> tuple[StudyHeader, Explanation]:
    """The first of a study's headers that a rule or procedure code routes, and why; else the first header,
    with each task's nearest miss. ``headers`` holds at least one."""
    tried: set[StudyHeader] = set()
    first: tuple[StudyHeader, Explanation] | None = None
    for header in headers:
        if header in tried:  # instances of one series mostly carry the same routing attributes
            continue
        tried.add(header)
        explanation = router.explain(header)
        if explanation.task is not None:
            return header, explanation
        first = first or (header, explanation)
    if first is None:
        raise ValueError("a study has at least one header")
    return first


def study_routing(files: Sequence[Path], router: Router) -> tuple[StudyHeader, Explanation]:
    """The instance a study is routed by, and why: the first image instance (in arrival order) that a rule
    or procedure code routes — a PA view after a lateral one — else the first image instance, with each
    task's nearest miss."""
    return first_routed(_headers(files, router), router)


def skip(study_uid: str, files: Sequence[Path], why: str, stage: str) -> Skipped:
    """A study ``stage`` does not read, logged (the reason may name files, which may name patients: it goes
    to the operator's output and the studies' detail, not to the log)."""
    log.warning("study.skipped", study=uid_hash(study_uid), stage=stage)
    return Skipped(study_uid, tuple(files), why, stage)


def route(study_uid: str, files: Sequence[Path], router: Router) -> Routed | Skipped:
    """The routing stage: a study's files → its task, or why it has none."""
    header, explanation = study_routing(files, router)
    if explanation.task is None:
        return skip(study_uid, files, explanation.reason(header), "routing")
    return Routed(study_uid, tuple(files), explanation.task, header.modality)
