"""Synthetic HL7 v2 messages for demos and tests: an imaging order, a laboratory result, a patient
merge, as a RIS, a LIS and an EHR send them. The patients are fictitious."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import generate_uid

SEPARATOR = "\r"


@dataclass(frozen=True)
class LabValue:
    """One OBX of a laboratory result."""

    loinc: str
    name: str
    value: str
    unit: str
    reference_range: str = ""
    flag: str = ""
    observed_at: str = ""  # HL7 DTM


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number (the ones not given are empty)."""
    return "|".join([name, *(fields.get(number, "") for number in range(1, max(fields) + 1))])


def _msh(sender: str, message_type: str, structure: str, control_id: str, at: str) -> str:
    return f"MSH|^~\\&|{sender}|HOSP|QOQNODE|RADIOLOGY|{at}||{message_type}^{structure}|{control_id}|P|2.5.1"


def _pid(patient_id: str, authority: str) -> str:
    return f"PID|1||{patient_id}^^^{authority}^MR||SYNTHETIC^PATIENT||19700101|O"


def order_message(control_id: str, patient_id: str, accession: str, reason: str, clinical_info: str = "",
                  procedure: str = "XR CHEST PA", authority: str = "HOSP", ordered_at: str = "20260101100000",
                  message_type: str = "ORM^O01", procedure_code: str = "CXR", coding_system: str = "L") -> str:
    """An imaging order: ORM^O01 (IHE SWF: accession number in OBR-18) or OMI^O23 (IPC-1); OBR-4 is
    ``procedure_code`` in ``coding_system`` with ``procedure`` as its text."""
    structure = "ORM_O01" if message_type == "ORM^O01" else "OMI_O23"
    obr = _segment("OBR", {1: "1", 2: f"{accession}P", 3: f"{accession}F",
                           4: f"{procedure_code}^{procedure}^{coding_system}", 6: ordered_at,
                           13: clinical_info, 18: accession, 31: f"^{reason}"})
    segments = [_msh("RIS", message_type, structure, control_id, ordered_at), _pid(patient_id, authority),
                f"ORC|NW|{accession}P|{accession}F||SC||^^^^^R||{ordered_at}", obr]
    if message_type == "OMI^O23":
        segments.append(f"IPC|{accession}|{accession}RP|{generate_uid(entropy_srcs=[accession])}|{accession}SP")
    return SEPARATOR.join(segments)


def lab_message(control_id: str, patient_id: str, values: Sequence[LabValue], authority: str = "HOSP",
                sent_at: str = "20260101110000") -> str:
    """A laboratory result: ORU^R01 with one OBX per value."""
    segments = [_msh("LIS", "ORU^R01", "ORU_R01", control_id, sent_at), _pid(patient_id, authority),
                f"OBR|1||LAB{control_id}|LABPANEL^Laboratory panel^L|||{sent_at}"]
    for number, v in enumerate(values, start=1):
        segments.append(_segment("OBX", {1: str(number), 2: "NM", 3: f"{v.loinc}^{v.name}^LN", 5: v.value, 6: v.unit,
                                         7: v.reference_range, 8: v.flag, 11: "F", 14: v.observed_at or sent_at}))
    return SEPARATOR.join(segments)


def merge_message(control_id: str, surviving_id: str, merged_id: str, authority: str = "HOSP",
                  at: str = "20260101090000") -> str:
    """ADT^A40: the patient ``merged_id`` is now ``surviving_id``."""
    return SEPARATOR.join([_msh("EHR", "ADT^A40", "ADT_A39", control_id, at), f"EVN|A40|{at}",
                           _pid(surviving_id, authority), f"MRG|{merged_id}^^^{authority}^MR"])
