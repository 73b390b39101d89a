"""The route stage: a study's files → ``Routed`` (its task) or ``Skipped`` (why not)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.dicom_files import read_attributes
from node.ops.logging import get_logger, uid_hash
from node.routing.header import StudyHeader
from node.routing.router import Router, Task

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


def routing_header(files: Sequence[Path], router: Router | None = None) -> StudyHeader:
    """The routing attributes of the study's first image or waveform instance, in arrival order (a dose
    report or another system's SR that arrived first does not decide the study's task); the first
    instance's when the study has none. With a ``router`` that finds orders, the study's HL7 order's
    procedure is part of it."""
    chosen = None
    for path in files:
        ds = read_attributes(path)
        if str(ds.get("Modality", "")).strip().upper() not in NOT_READ_MODALITIES:
            chosen = ds
            break
        chosen = chosen or ds
    if chosen is None:
        raise ValueError("a study has at least one file")
    order = router.orders.order_of(chosen) if router is not None and router.orders is not None else None
    return StudyHeader.from_dataset(chosen, order=order)


def skip(study_uid: str, files: Sequence[Path], why: str, stage: str) -> Skipped:
    """A study ``stage`` does not read, logged (the reason may name files, which may name patients: it goes
    to the operator's output and the studies' detail, not to the log)."""
    log.warning("study.skipped", study=uid_hash(study_uid), stage=stage)
    return Skipped(study_uid, tuple(files), why, stage)


def route(study_uid: str, files: Sequence[Path], router: Router) -> Routed | Skipped:
    """The routing stage: a study's files → its task, or why it has none."""
    header = routing_header(files, router)
    task = router.route(header)
    if isinstance(task, str):
        return skip(study_uid, files, task, "routing")
    return Routed(study_uid, tuple(files), task, header.modality)
