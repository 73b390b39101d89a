"""What routing looks at in a study: one instance's header (or a C-FIND response's study and series
attributes: no pixels are needed), and the procedure of its HL7 order when the node holds one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydicom.dataset import Dataset

from node.dicom_files import read_attributes
from node.store.clinical import Order

#: Sequences whose items are the requested or performed procedure's codes.
_PROCEDURE_SEQUENCES = ("RequestedProcedureCodeSequence", "ProcedureCodeSequence")
#: A procedure or description that says no contrast was given, and one that says it was.
_WITHOUT_CONTRAST = re.compile(r"\b(w/?o|without|non[- ]?(contrast|con|enhanced)|noncontrast|unenhanced|plain)\b",
                               re.IGNORECASE)
_WITH_CONTRAST = re.compile(r"\b(w/?|with)\s*(iv\s*)?contrast\b|\bcontrast[- ]enhanced\b|\bcta\b|\bctpa\b|angio",
                            re.IGNORECASE)
_AGE_UNITS = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _codes(items: Sequence[Dataset] | None) -> list[str]:
    """``SCHEME:VALUE`` of each item of a code sequence."""
    return [f"{_text(item, 'CodingSchemeDesignator')}:{_text(item, 'CodeValue')}".upper()
            for item in (items or []) if _text(item, "CodeValue")]


def _age_years(ds: Dataset) -> float | None:
    """Patient Age (nnnD/W/M/Y), else the years from Patient Birth Date to Study Date (read with their
    separators left out, as the results repair them: "1923-04-05", "1923.04.05")."""
    age = re.fullmatch(r"(\d{1,3})([DWMY])", _text(ds, "PatientAge").upper())
    if age:
        return int(age.group(1)) / _AGE_UNITS[age.group(2)]
    try:
        born, seen = (date.fromisoformat(f"{v[:4]}-{v[4:6]}-{v[6:8]}")
                      for v in (re.sub(r"\D", "", _text(ds, key)) for key in ("PatientBirthDate", "StudyDate")))
    except ValueError:
        return None
    return (seen - born).days / 365.25 if seen >= born else None


@dataclass(frozen=True)
class StudyHeader:
    """The attributes routing looks at, from one instance of the study (and its HL7 order)."""

    modality: str
    body_part: str
    sop_class_uid: str
    series_description: str
    calling_ae: str = ""
    study_description: str = ""
    procedure_description: str = ""  # RequestedProcedureDescription; the HL7 order's procedure text after it
    procedure_codes: tuple[str, ...] = ()  # SCHEME:VALUE, the header's then the HL7 order's
    anatomic_regions: tuple[str, ...] = ()  # SCHEME:VALUE
    view_position: str = ""
    contrast_agent: bool = False  # ContrastBolusAgent (or its sequence) given
    age_years: float | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, calling_ae: str = "", order: Order | None = None) -> StudyHeader:
        """The routing attributes of a dataset (an instance, or a C-FIND response's attributes), with the
        procedure of the study's HL7 order when there is one."""
        requests = list(ds.get("RequestAttributesSequence", None) or [])
        descriptions = [_text(ds, "RequestedProcedureDescription")]
        descriptions += [_text(item, "RequestedProcedureDescription") for item in requests]
        codes = [code for keyword in _PROCEDURE_SEQUENCES for code in _codes(ds.get(keyword, None))]
        codes += [code for item in requests for code in _codes(item.get("RequestedProcedureCodeSequence", None))]
        if order is not None:
            descriptions.append(order.procedure)
            codes += [code.upper() for code in order.procedure_codes]
        return cls(_text(ds, "Modality"), _text(ds, "BodyPartExamined"), _text(ds, "SOPClassUID"),
                   _text(ds, "SeriesDescription"), calling_ae, _text(ds, "StudyDescription"),
                   "; ".join(dict.fromkeys(d for d in descriptions if d)), tuple(dict.fromkeys(codes)),
                   tuple(_codes(ds.get("AnatomicRegionSequence", None))), _text(ds, "ViewPosition"),
                   bool(_text(ds, "ContrastBolusAgent") or ds.get("ContrastBolusAgentSequence", None)),
                   _age_years(ds))

    @classmethod
    def read(cls, path: Path, calling_ae: str = "") -> StudyHeader:
        """Read the routing attributes of the instance at ``path``."""
        return cls.from_dataset(read_attributes(path), calling_ae)

    @property
    def descriptions(self) -> tuple[str, str, str]:
        """The study, procedure and series descriptions."""
        return self.study_description, self.procedure_description, self.series_description

    @property
    def contrast(self) -> bool:
        """Whether contrast was given: a contrast agent in the header (the Contrast/Bolus module is there
        only when contrast was used), else what the study's or procedure's description says, else the series'
        ("without" and "non-contrast" saying not)."""
        if self.contrast_agent:
            return True
        for text in (f"{self.study_description} {self.procedure_description}", self.series_description):
            if _WITHOUT_CONTRAST.search(text):
                return False
            if _WITH_CONTRAST.search(text):
                return True
        return False
