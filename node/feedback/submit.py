"""A verdict from an integration: its body checked (the study by UID or accession, the verdict, corrected labels
from the task's closed set, the reader's role), the node's answer for the study found, and the verdict kept —
durably, before the caller hears it was. Every refusal is a :class:`FeedbackRefused` with a status and a reason
that quotes nothing sent (no identifier, no label outside the closed set)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from node.config.quality import FeedbackConfig
from node.errors import DataError
from node.quality.answers import OTHER, closed_labels
from node.routing import Router
from node.store import Store, Verdict
from node.store.verdicts import Judgement, Source
from node.uids import MAX_UID_LENGTH, UID_PATTERN


class FeedbackRefused(DataError):
    """A verdict that is not kept: the HTTP status it is answered with, and why (no data quoted)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FeedbackBody(BaseModel):
    """``POST /v1/feedback``'s JSON body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_instance_uid: str | None = Field(default=None, max_length=MAX_UID_LENGTH, pattern=UID_PATTERN,
                                           description="The study's Study Instance UID (or give accession).")
    accession: str | None = Field(default=None, min_length=1, max_length=16,
                                  description="The study's Accession Number (or give study_instance_uid).")
    verdict: Literal["accept", "reject", "correct"] = Field(description="accept: the answer is right; reject: it "
                                                             "is wrong; correct: the right labels are `labels`.")
    labels: tuple[str, ...] = Field(default=(), max_length=32, description="With correct: the right labels, from "
                                    "the task's closed set (the routing rules' options).")
    reader_role: str = Field(max_length=32, description="Who judged: one of feedback.reader_roles.")

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackBody:
        if (self.study_instance_uid is None) == (self.accession is None):
            raise ValueError("give exactly one of study_instance_uid and accession")
        if (self.verdict == "correct") != bool(self.labels):
            raise ValueError("labels go with the verdict correct, and correct needs at least one")
        return self


def closed_sets(router: Router) -> dict[str, tuple[str, ...]]:
    """Each task's closed label set (its options in the routing rules), by task name."""
    return {name: spec.labels for name, spec in router.rules.domains.items()}


def parse(body: object) -> FeedbackBody:
    """The body checked; :class:`FeedbackRefused` (422) naming each bad field and why, never its value."""
    try:
        return FeedbackBody.model_validate(body)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise FeedbackRefused(422, reasons) from None


def submit(store: Store, closed_sets: Mapping[str, Sequence[str]], config: FeedbackConfig, body: FeedbackBody,
           allowed_roles: Sequence[str] | None = None, now: float | None = None) -> Verdict:
    """Keep ``body``'s verdict on the node's newest answer for its study (``allowed_roles``: the roles the caller
    may post; None: any of ``config.reader_roles``) and return it once it is on disk. Refused: 403 for a role
    the caller may not post, 404 for a study the node has not answered, 422 for an unknown role or a label
    outside the task's closed set."""
    if body.reader_role not in config.reader_roles:
        raise FeedbackRefused(422, f"reader_role is not one of {', '.join(config.reader_roles)}")
    if allowed_roles is not None and body.reader_role not in allowed_roles:
        raise FeedbackRefused(403, "this token may not post verdicts for that reader_role")
    if body.study_instance_uid is not None:
        answer = store.answers.for_study(body.study_instance_uid)
    else:
        answer = store.answers.for_accession(body.accession or "")
    if answer is None:
        raise FeedbackRefused(404, "the node has no result for that study")
    closed = closed_sets.get(answer.task, ())
    labels = closed_labels(body.labels, closed)
    if OTHER in labels:
        raise FeedbackRefused(422, f"labels must be from task {answer.task}'s closed set: {', '.join(closed)}")
    verdict = Verdict(answer.study_instance_uid, answer.version, answer.task, Source.API,
                      f"{answer.study_instance_uid}|{body.reader_role}", body.verdict,
                      time.time() if now is None else now, answer.labels,
                      labels if body.verdict == Judgement.CORRECT else None, reader_role=body.reader_role)
    store.verdicts.record(verdict)
    return verdict
