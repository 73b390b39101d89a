"""Quality monitoring (``quality:``) and the feedback API (``feedback:``)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from node.config.base import Section

#: A reader role: what ``POST /v1/feedback`` and ``qoq-node feedback`` take as ``reader_role``.
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class QualityConfig(Section):
    """How the node watches its own answers: the windows, the baseline and the margins ``qoq-node quality``
    flags (the chart's alerts take the same margins from its values)."""

    window: int = Field(default=200, ge=1, description="Concordance over the last this-many decided verdicts; "
                        "label drift, input drift and rejection rate over the last this-many answers, per task.")
    baseline: Path | None = Field(default=None, description="The report.json of `qoq-node evaluate` at this "
                                  "site: its answer distribution and accuracy per task are the baseline. Unset: "
                                  "each task's first baseline_studies answers.")
    baseline_studies: int = Field(default=200, ge=1, description="Without an evaluation: this many first answers "
                                  "of a task are its baseline (labels and equipment).")
    concordance_margin: float = Field(default=0.1, ge=0, le=1, description="Concordance this far below the "
                                      "baseline's accuracy is flagged …")
    min_verdicts: int = Field(default=30, ge=1, description="… once over at least this many decided verdicts.")
    psi_limit: float = Field(default=0.2, gt=0, description="Label drift (PSI) above this is flagged.")
    rejection_rate_limit: float = Field(default=0.05, ge=0, le=1, description="A share of answers rejected "
                                        "(IOCM, or the feedback API's reject) above this is flagged.")


class FeedbackConfig(Section):
    """``POST /v1/feedback``: off unless ``tokens_file`` names the mounted secret."""

    tokens_file: Path | None = Field(
        default=None, description="Bearer tokens (as dicomweb.stow.tokens_file): a directory (a mounted Secret: "
        "each file a token of 16+ characters, its name the client's name) or a YAML/JSON file of [{name, token}]; "
        "read at start and again when it changes. Unset: the API is off (404).")
    reader_roles: tuple[str, ...] = Field(default=("radiologist", "resident", "fellow", "referrer", "technologist"),
                                          min_length=1, description="The reader roles a verdict may name.")
    token_roles: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="Per token name, the reader "
                                                    "roles it may post (others: 403); a token not named: any role.")

    @model_validator(mode="after")
    def _roles_are_known(self) -> FeedbackConfig:
        for role in self.reader_roles:
            if not re.match(ROLE_PATTERN, role):
                raise ValueError(f"reader role {role!r} is not 1-32 lower-case letters, digits, '_' or '-'")
        for name, roles in self.token_roles.items():
            unknown = sorted(set(roles) - set(self.reader_roles))
            if unknown:
                raise ValueError(f"token_roles.{name} names roles not in reader_roles: {', '.join(unknown)}")
        return self
