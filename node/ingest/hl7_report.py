"""Radiology reports in HL7: an ORU^R01 whose observations are a report's text, and MDM^T02.

An ORU^R01 is a radiology report (not laboratory results) when its OBR-24 (diagnostic service section,
HL7 table 0074) is an imaging section; with no OBR-24, when an OBX carries narrative text (value type TX or
FT, or ST with an OBX-3 of a report section: the DICOM-style ``&GDT``/``&IMP``/``&FND`` suffixes, or a LOINC
radiology report code) and none a laboratory value (NM, SN, CE, CWE …: text beside them is a lab comment).
Its text is the OBX-5 values of type TX, FT and ST (repetitions one per line); its status is OBX-11 (``C``
on any line: a correction). Only final (F) and corrected (C) reports are kept as reports; a preliminary
one is kept as a message only.

The report's order numbers: placer OBR-2 (else ORC-2), filler OBR-3 (else ORC-3), accession OBR-18
(IHE Radiology's placement of the accession number in v2.3-2.5 messages), else the filler number — the way
orders are read (:mod:`node.ingest.hl7_inbound`). MDM^T02 takes its numbers from OBR when there is one,
else TXA-14 (placer) and TXA-15 (filler), and is final unless TXA-17 says the document is not complete.
"""

from __future__ import annotations

from node.ingest.hl7v2 import Hl7Message
from node.store.reports import Report

#: OBR-24 values (HL7 table 0074) that are imaging.
IMAGING_SECTIONS = frozenset({"RAD", "RX", "CT", "NMR", "MR", "NMS", "US", "CUS", "OUS", "VUS", "XRC", "MG",
                              "CTH", "NM", "RT", "IMG"})
#: OBX-3 suffixes (DICOM SR-to-HL7 mapping, IHE Radiology) and LOINC codes of report sections.
_REPORT_SECTIONS = ("&GDT", "&IMP", "&FND", "&ADT", "&REC")
REPORT_LOINC = frozenset({"18782-3", "19005-8", "59776-5", "18834-2", "55115-0", "59771-6", "18748-4",
                          "11525-3", "24627-2", "30746-2", "36643-5"})
_TEXT_TYPES = frozenset({"TX", "FT", "ST"})
#: OBX value types of laboratory results (a message with one is results with, at most, comments).
_LAB_TYPES = frozenset({"NM", "SN", "CE", "CWE", "CNE", "NA", "TS", "DT", "TM"})
#: Report statuses kept as reports: final and corrected.
KEPT_STATUSES = frozenset({"F", "C"})
#: TXA-17 (document completion status, HL7 table 0271) values of a document not complete.
_NOT_COMPLETE = frozenset({"DI", "IN", "IP", "PA", "DO"})


def _is_report_line(message: Hl7Message, obx: tuple[str, ...]) -> bool:
    value_type = message.value(obx, 2).upper()
    code = message.value(obx, 3, 1)
    return value_type in {"TX", "FT"} or (value_type == "ST" and (code.upper().endswith(_REPORT_SECTIONS)
                                                                   or code in REPORT_LOINC))


def is_report(message: Hl7Message) -> bool:
    """Whether an ORU^R01 is a radiology report rather than laboratory results."""
    sections = {message.value(obr, 24).upper() for obr in message.segments if obr[0] == "OBR"} - {""}
    if sections:
        return bool(sections & IMAGING_SECTIONS)
    lines = [obx for obx in message.segments if obx[0] == "OBX"]
    return any(_is_report_line(message, obx) for obx in lines) and not any(
        message.value(obx, 2).upper() in _LAB_TYPES for obx in lines)


def _text(message: Hl7Message) -> tuple[str, str]:
    """The report's text (its OBX lines of text types) and its status."""
    lines, statuses = [], set()
    for obx in (s for s in message.segments if s[0] == "OBX"):
        if message.value(obx, 2).upper() not in _TEXT_TYPES:
            continue
        statuses.add(message.value(obx, 11).upper() or "F")
        lines += [message.unescape(r) for r in message.repetitions(obx, 5)]
    status = "C" if "C" in statuses else ("F" if statuses <= KEPT_STATUSES else "P")
    return "\n".join(line for line in lines if line), status


def _numbers(message: Hl7Message) -> tuple[str, str, str]:
    """(placer, filler, accession) of the report's first OBR (with the ORC), else TXA-14/15."""
    obr, orc, txa = message.first("OBR"), message.first("ORC"), message.first("TXA")
    placer = message.value(obr, 2) or message.value(orc, 2) or message.value(txa, 14)
    filler = message.value(obr, 3) or message.value(orc, 3) or message.value(txa, 15)
    return placer, filler, message.value(obr, 18) or filler


def report_of(message: Hl7Message, patient_key: str) -> Report | None:
    """The final or corrected report a message carries (ORU^R01 that :func:`is_report`, MDM^T02); None when
    it has no text, no order number or is not final."""
    text, status = _text(message)
    txa = message.first("TXA")
    if txa is not None and message.value(txa, 17).upper() in _NOT_COMPLETE:
        status = "P"
    placer, filler, accession = _numbers(message)
    if not text or status not in KEPT_STATUSES or not (placer or filler or accession):
        return None
    return Report(patient_key, placer, filler, accession, status, text)
