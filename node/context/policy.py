"""What context a task gathers, and within what window (a routing task's ``context`` key)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
