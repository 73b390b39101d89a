"""Routing: a study's headers → a task (clinical domain, the training question and its options,
how its images are rendered).

Rules live in a YAML file (``conf/routing.yaml``); the first rule whose every condition holds
wins. A study that no rule matches gets no task, and the reason says what it was. Tasks are keyed
by name; a task belongs to one of QoQ-Med's nine domains (its name, unless it says ``domain``), so
a domain can hold several training questions (chest CT angiography, head CT, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.dicom_files import read_attributes
from node.errors import NodeError
from node.model.prompt import question_text
from node.ops.logging import get_logger, uid_hash

log = get_logger("routing")

#: QoQ-Med's nine clinical domains.
DOMAINS = ("chest_xray", "ct", "mri", "ultrasound", "mammography", "dermatology", "fundus", "pathology", "ecg")


class RoutingError(NodeError):
    """The routing rules cannot be used; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Window = Literal["soft_tissue", "lung", "brain", "bone", "ctpa"]


# --- what context a task gathers, and within what window (a task's ``context`` key) ---
class LabPolicy(_Strict):
    """Laboratory results by code (LOINC), the latest of each within ``hours`` before the study."""

    loinc: tuple[str, ...] = Field(min_length=1)
    hours: float = Field(default=48.0, gt=0)


class PriorPolicy(_Strict):
    """The most recent ``count`` earlier studies of these modalities within ``days`` before the study."""

    modality: tuple[str, ...] = Field(min_length=1)
    days: float = Field(default=365.0, gt=0)
    count: int = Field(default=1, ge=1, le=3)


class EcgPolicy(_Strict):
    """A 12-lead ECG within ``hours`` of the study (before or after), for a model that takes the signal."""

    hours: float = Field(default=24.0, gt=0)


class ContextPolicy(_Strict):
    """Which context goes with a task's studies; nothing unless asked for."""

    order: bool = Field(default=False, description="The order's reason for exam and clinical information.")
    labs: LabPolicy | None = None
    priors: PriorPolicy | None = None
    ecg: EcgPolicy | None = None

    @property
    def wants_anything(self) -> bool:
        """Whether the task gathers any context."""
        return self.order or any((self.labs, self.priors, self.ecg))


class DomainSpec(_Strict):
    """What the node asks for studies of one task, worded as the model's training data set asked."""

    domain: str | None = None  # one of DOMAINS; unset: the task's own name
    question: str
    labels: tuple[str, ...] = ()
    options_prefix: str = "\n"  # between the question and the first option
    option_marker: str = ""  # before each option
    default_window: Window | None = None  # for images whose header has none
    trained_windows: tuple[Window, ...] = ()  # each key frame rendered in each, whatever the header says
    volume_frames: int | None = Field(default=None, ge=1, le=32)  # slices per volume; unset: imaging.volume_frames
    source: str = ""  # where the wording comes from (the training data set's file)
    context: ContextPolicy = ContextPolicy()  # the patient's context that goes with the question

    @property
    def prompt_question(self) -> str:
        """The question with its options laid out as the training data set wrote them."""
        return question_text(self.question, self.labels, self.options_prefix, self.option_marker)


class Match(_Strict):
    """Conditions on a study; all given ones must hold."""

    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    series_description: str | None = None
    calling_ae: tuple[str, ...] = ()

    @field_validator("series_description")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern


class Rule(_Strict):
    """A match and the domain it routes to."""

    match: Match
    domain: str


class RoutingRules(_Strict):
    """The whole rules file."""

    domains: dict[str, DomainSpec]
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_domains(self) -> RoutingRules:
        unknown = {spec.domain or name for name, spec in self.domains.items()} - set(DOMAINS)
        if unknown:
            raise ValueError(f"unknown domains {sorted(unknown)}; QoQ-Med's are {', '.join(DOMAINS)} "
                             "(a task of another name says which with 'domain:')")
        for index, rule in enumerate(self.rules):
            if rule.domain not in self.domains:
                raise ValueError(f"rules[{index}] routes to task '{rule.domain}', which is not defined")
        return self


@dataclass(frozen=True)
class StudyHeader:
    """The attributes routing looks at, from one instance of the study."""

    modality: str
    body_part: str
    sop_class_uid: str
    series_description: str
    calling_ae: str = ""

    @classmethod
    def read(cls, path: Path, calling_ae: str = "") -> StudyHeader:
        """Read the routing attributes of the instance at ``path``."""
        ds = read_attributes(path)
        return cls(str(ds.get("Modality", "")), str(ds.get("BodyPartExamined", "")), str(ds.get("SOPClassUID", "")),
                   str(ds.get("SeriesDescription", "")), calling_ae)


@dataclass(frozen=True)
class Task:
    """What to do with a study: the task's name, its clinical domain and what to ask."""

    name: str
    domain: str
    spec: DomainSpec


def _any(values: tuple[str, ...], actual: str) -> bool:
    return not values or actual.strip().upper() in {value.upper() for value in values}


def _matches(match: Match, header: StudyHeader) -> bool:
    return (
        _any(match.modality, header.modality)
        and _any(match.body_part, header.body_part)
        and _any(match.sop_class, header.sop_class_uid)
        and _any(match.calling_ae, header.calling_ae)
        and (match.series_description is None
             or re.search(match.series_description, header.series_description, re.IGNORECASE) is not None)
    )


class Router:
    """Applies routing rules to studies."""

    def __init__(self, rules: RoutingRules) -> None:
        self.rules = rules

    @classmethod
    def from_file(cls, path: Path) -> Router:
        """Load and validate the rules file."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            return cls(RoutingRules.model_validate(data))
        except OSError as exc:
            raise RoutingError(f"cannot read routing rules {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise RoutingError(f"routing rules {path} are not valid YAML: {exc}") from exc
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RoutingError(f"routing rules {path}: {details}") from exc

    def route(self, header: StudyHeader) -> Task | str:
        """The task for a study, or the reason it has none."""
        for rule in self.rules.rules:
            if _matches(rule.match, header):
                spec = self.rules.domains[rule.domain]
                return Task(rule.domain, spec.domain or rule.domain, spec)
        # Series descriptions are free text and may carry identity: the reason names only codes.
        return f"no routing rule matches modality '{header.modality}', body part '{header.body_part}'"



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


#: Modalities of instances that are not images or waveforms (reports, presentation states, key objects,
#: segmentations, registrations, documents): a study is not routed by them.
NOT_READ_MODALITIES = frozenset({"SR", "PR", "KO", "SEG", "REG", "DOC", "RWV", "PLAN", "FID"})


def routing_header(files: Sequence[Path]) -> StudyHeader:
    """The routing attributes of the study's first image or waveform instance, in arrival order (a dose
    report or another system's SR that arrived first does not decide the study's task); the first
    instance's when the study has none."""
    first = None
    for header in (StudyHeader.read(path) for path in files):
        if header.modality.strip().upper() not in NOT_READ_MODALITIES:
            return header
        first = first or header
    if first is None:
        raise ValueError("a study has at least one file")
    return first


def skip(study_uid: str, files: Sequence[Path], why: str, stage: str) -> Skipped:
    """A study ``stage`` does not read, logged (the reason may name files, which may name patients: it goes
    to the operator's output and the studies' detail, not to the log)."""
    log.warning("study.skipped", study=uid_hash(study_uid), stage=stage)
    return Skipped(study_uid, tuple(files), why, stage)


def route(study_uid: str, files: Sequence[Path], router: Router) -> Routed | Skipped:
    """The routing stage: a study's files → its task, or why it has none."""
    header = routing_header(files)
    task = router.route(header)
    if isinstance(task, str):
        return skip(study_uid, files, task, "routing")
    return Routed(study_uid, tuple(files), task, header.modality)
