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


def report_message(control_id: str, patient_id: str, accession: str, text: str, status: str = "F",
                   authority: str = "HOSP", message_type: str = "ORU^R01", at: str = "20260101150000") -> str:
    """A radiologist's final (``F``) or corrected (``C``) report: ORU^R01 (OBR-18 the accession, OBR-24 RAD,
    one TX OBX per line of ``text``) or MDM^T02 (the same ORC and OBR, TXA, then the OBX lines)."""
    lines = [line for line in text.split("\n") if line] or [""]
    obx = [_segment("OBX", {1: str(n), 2: "TX", 3: "18782-3^Radiology Study observation^LN", 5: line, 11: status,
                            14: at}) for n, line in enumerate(lines, start=1)]
    obr = _segment("OBR", {1: "1", 2: f"{accession}P", 3: f"{accession}F", 4: "CXR^XR CHEST PA^L", 7: at,
                           18: accession, 22: at, 24: "RAD", 25: status})
    if message_type == "MDM^T02":
        txa = _segment("TXA", {1: "1", 2: "RAD", 3: "TX", 4: at, 12: f"{control_id}DOC",
                               14: f"{accession}P", 15: f"{accession}F", 17: "LA" if status == "F" else "AU"})
        return SEPARATOR.join([_msh("RIS", "MDM^T02", "MDM_T02", control_id, at), f"EVN|T02|{at}",
                               _pid(patient_id, authority), "PV1|1|O", f"ORC|RE|{accession}P|{accession}F||CM", obr,
                               txa, *obx])
    return SEPARATOR.join([_msh("RIS", "ORU^R01", "ORU_R01", control_id, at), _pid(patient_id, authority),
                           f"ORC|RE|{accession}P|{accession}F||CM", obr, *obx])
