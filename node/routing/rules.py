"""The routing rules file as frozen pydantic models: the tasks (what each asks, of which training
population), the rules that route studies to them, and the ``procedures`` table of a hospital's own codes.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.errors import NodeError
from node.model.prompt import question_text

#: QoQ-Med's nine clinical domains.
DOMAINS = ("chest_xray", "ct", "mri", "ultrasound", "mammography", "dermatology", "fundus", "pathology", "ecg")


class RoutingError(NodeError):
    """The routing rules cannot be used; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
    population: str = ""  # the studies the training data set held: the only ones the task's rules should ask
    context: ContextPolicy = ContextPolicy()  # the patient's context that goes with the question
    # what a radiologist's report calls each label besides its own name (node/verdicts/labels.py)
    synonyms: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _synonyms_of_labels(self) -> DomainSpec:
        unknown = sorted(set(self.synonyms) - set(self.labels))
        if unknown:
            raise ValueError(f"synonyms for {unknown}, which are not among the task's labels {list(self.labels)}")
        return self

    @property
    def prompt_question(self) -> str:
        """The question with its options laid out as the training data set wrote them."""
        return question_text(self.question, self.labels, self.options_prefix, self.option_marker)


class AgeRange(_Strict):
    """The patient's age in years at the study: at least ``min``, below ``max``."""

    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, gt=0)


def _pattern(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
    return value


class Match(_Strict):
    """Conditions on a study; all given ones must hold (case-insensitive). Lists accept any of their values;
    descriptions are regular expressions searched in the text; codes are ``SCHEME:VALUE`` (or a bare value:
    any scheme); ``not`` excludes the studies its own conditions all match."""

    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()
    calling_ae: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()  # BodyPartExamined
    anatomic_region: tuple[str, ...] = ()  # Anatomic Region Sequence codes
    view_position: tuple[str, ...] = ()  # ViewPosition
    procedure_code: tuple[str, ...] = ()  # the header's procedure codes, or the HL7 order's OBR-4
    study_description: str | None = None
    procedure_description: str | None = None  # RequestedProcedureDescription, or the HL7 order's OBR-4 text
    series_description: str | None = None
    description: str | None = None  # any of the three descriptions
    contrast: bool | None = None  # ContrastBolusAgent, or a procedure that says it
    age: AgeRange | None = None
    not_: Match | None = Field(default=None, alias="not")

    _patterns = field_validator("study_description", "procedure_description", "series_description",
                                "description")(_pattern)


class Rule(_Strict):
    """A match and the task it routes to."""

    match: Match
    domain: str


class RoutingRules(_Strict):
    """The whole rules file."""

    domains: dict[str, DomainSpec]
    rules: tuple[Rule, ...] = Field(min_length=1)
    procedures: dict[str, str] = {}  # a hospital's procedure code (SCHEME:VALUE) → the task it routes to

    @model_validator(mode="after")
    def _known_domains(self) -> RoutingRules:
        unknown = {spec.domain or name for name, spec in self.domains.items()} - set(DOMAINS)
        if unknown:
            raise ValueError(f"unknown domains {sorted(unknown)}; QoQ-Med's are {', '.join(DOMAINS)} "
                             "(a task of another name says which with 'domain:')")
        for index, rule in enumerate(self.rules):
            if rule.domain not in self.domains:
                raise ValueError(f"rules[{index}] routes to task '{rule.domain}', which is not defined")
        for code, task in self.procedures.items():
            if task not in self.domains:
                raise ValueError(f"procedures['{code}'] routes to task '{task}', which is not defined")
        return self
