"""Routing: a study's headers → a task (clinical domain, question, candidate labels, boxes or not).

Rules live in a YAML file (``conf/routing.yaml``); the first rule whose every condition holds
wins. A study that no rule matches gets no task, and the reason says what it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydicom
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: QoQ-Med's nine clinical domains.
DOMAINS = ("chest_xray", "ct", "mri", "ultrasound", "mammography", "dermatology", "fundus", "pathology", "ecg")


class RoutingError(ValueError):
    """The routing rules cannot be used; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainSpec(_Strict):
    """What the node asks for studies of one domain."""

    question: str
    labels: tuple[str, ...] = ()
    ask_boxes: bool = True
    default_window: Literal["soft_tissue", "lung", "brain", "bone"] | None = None


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
        unknown = set(self.domains) - set(DOMAINS)
        if unknown:
            raise ValueError(f"unknown domains {sorted(unknown)}; QoQ-Med's are {', '.join(DOMAINS)}")
        for index, rule in enumerate(self.rules):
            if rule.domain not in self.domains:
                raise ValueError(f"rules[{index}] routes to domain '{rule.domain}', which is not defined")
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
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return cls(str(ds.get("Modality", "")), str(ds.get("BodyPartExamined", "")), str(ds.get("SOPClassUID", "")),
                   str(ds.get("SeriesDescription", "")), calling_ae)


@dataclass(frozen=True)
class Task:
    """What to do with a study."""

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
                return Task(rule.domain, self.rules.domains[rule.domain])
        # Series descriptions are free text and may carry identity: the reason names only codes.
        return f"no routing rule matches modality '{header.modality}', body part '{header.body_part}'"

