"""HL7 v2.5.1 ORU^R01 for the EHR: the AI answer, findings and reasoning of one study.

Model text is untrusted: every value is escaped (``| ^ ~ \\ &`` as HL7 escape sequences),
control characters are dropped (line breaks in the reasoning become ``\\.br\\``), and values
are cut to their field lengths, so no text can break the segment structure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydicom.dataset import Dataset

from node.errors import DataError
from node.findings import Findings
from node.ingest.hl7v2 import escape
from node.results.codes import label_concept
from node.results.provenance import DISCLAIMER, Provenance, clip

SEGMENT_SEPARATOR = "\r"
ST_LIMIT = 199  # an OBX-5 length every receiver (and hl7apy's strict check) accepts
REASONING_LIMIT = 16_000  # the reasoning sent to the EHR; the whole of it is in the SR
_ESCAPED_TOKEN = re.compile(r"\\[^\\]*\\|.", re.DOTALL)


class NoPatientIdentifier(DataError):
    """The source names no patient (no Patient ID): an ORU without PID-3 is invalid and would be filed
    under no patient, so none is sent (the SR and the other objects still are)."""


@dataclass(frozen=True)
class Hl7Party:
    """Sending and receiving application/facility (MSH-3 to MSH-6), from the destination's config."""

    sending_application: str = "QOQNODE"
    sending_facility: str = "RADIOLOGY"
    receiving_application: str = "EHR"
    receiving_facility: str = "HOSPITAL"
    #: What ORC-3/OBR-3 (filler order number) carry: the accession number, or the Study Instance UID.
    filler_order_number: Literal["accession", "study_uid"] = "accession"


def _value(text: str, limit: int = ST_LIMIT) -> str:
    """Escaped and cut to ``limit`` characters (marked "..."), never in the middle of an escape sequence."""
    escaped = escape(str(text))
    if len(escaped) <= limit:
        return escaped
    return _chunks(escaped, limit - 3)[0] + "..."


def _chunks(escaped: str, limit: int = ST_LIMIT) -> list[str]:
    """Escaped text in pieces of at most ``limit`` characters, never splitting an escape sequence, and
    split after a space (a word boundary) where the piece has one; joined again they are the text."""
    chunks, current = [], ""
    for token in _ESCAPED_TOKEN.findall(escaped):
        if len(current) + len(token) > limit:
            cut = current.rfind(" ") + 1
            if 0 < cut < len(current):  # keep the word that does not fit whole for the next piece
                chunks.append(current[:cut])
                current = current[cut:]
            else:
                chunks.append(current)
                current = ""
        current += token
    return [*chunks, current] if current else chunks


def _pn_to_xpn(name: object) -> str:
    """DICOM PN family^given^middle^prefix^suffix → HL7 XPN family^given^middle^suffix^prefix."""
    parts = (str(name or "").split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (_value(part, 48) for part in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^") or '""'  # "" is HL7's explicit null


def _label_cwe(label: str) -> str:
    """An answer label as CWE: the same concept the SR codes it with (SNOMED CT ``SCT`` where known,
    else the node's local scheme ``99QOQ``, a valid HL7 local coding system name)."""
    concept = label_concept(label)
    return f"{_value(concept.value, 20)}^{_value(concept.meaning, 60)}^{concept.scheme_designator}"


def control_id(result_key: str) -> str:
    """MSH-10: the same for every resend of one result, so the EHR can drop duplicates (≤ 20 chars)."""
    return "QOQ" + hashlib.sha256(result_key.encode()).hexdigest()[:17].upper()


def _dicom_datetime(ds: Dataset) -> str:
    date = str(ds.get("StudyDate", "") or "")
    time = str(ds.get("StudyTime", "") or "").split(".")[0]
    return re.sub(r"\D", "", date + time)[:14]


def critical(findings: Findings, critical_labels: Sequence[str]) -> list[str]:
    """The answer labels that are critical findings (``results.critical_labels``, case-insensitive)."""
    wanted = {label.strip().lower() for label in critical_labels}
    return [label for label in findings.labels if label.strip().lower() in wanted]


def build_oru(
    findings: Findings,
    source: Dataset,
    provenance: Provenance,
    party: Hl7Party,
    result_key: str,
    sr_sop_instance_uid: str | None = None,
    now: datetime | None = None,
    corrects_earlier: bool = False,
    critical_labels: Sequence[str] = (),
    inputs: Sequence[str] = (),
) -> str:
    """The ORU^R01 message (segments separated by carriage returns) for one study's result.

    With ``corrects_earlier`` (a new study version after late instances), OBR-25 and OBX-11 are
    ``C`` (correction): the EHR replaces the earlier result of the same order with this one. An
    answer among ``critical_labels`` flags the answer OBX-8 ``AA`` (critically abnormal) and adds a
    TQ1 with priority ``S`` (stat), so the RIS worklist can move the study up. The order number is
    always there: the accession number, else the Study Instance UID. ``inputs``: one line per study the
    model read besides this one's images (priors, an ECG), each an ``AI-INPUT`` OBX. Raises
    :class:`NoPatientIdentifier` when the source has no Patient ID (PID-3 is required)."""
    patient_id = _value(str(source.get("PatientID", "") or "").strip(), 20)
    if not patient_id:
        raise NoPatientIdentifier("the source has no Patient ID: the ORU is held, PID-3 would be empty")
    now = (now or datetime.now(UTC)).astimezone()
    status = "C" if corrects_earlier else "P"
    accession = _value(source.get("AccessionNumber", ""), 16)
    study_uid = str(source.StudyInstanceUID)
    filler = _value(study_uid, 64) if party.filler_order_number == "study_uid" or not accession else accession
    flagged = critical(findings, critical_labels)
    segments = [
        "|".join(["MSH", "^~\\&", _value(party.sending_application, 180), _value(party.sending_facility, 180),
                  _value(party.receiving_application, 180), _value(party.receiving_facility, 180),
                  now.strftime("%Y%m%d%H%M%S%z"), "", "ORU^R01^ORU_R01", control_id(result_key),
                  "T" if provenance.is_test_result else "P", "2.5.1"]),
        "|".join(["PID", "1", "", f"{patient_id}^^^"
                  f"{_value(source.get('IssuerOfPatientID', ''), 20)}".rstrip("^"),
                  "", _pn_to_xpn(source.get("PatientName", "")), "", _value(source.get("PatientBirthDate", ""), 8),
                  _value(source.get("PatientSex", ""), 1)]),
        "|".join(["PV1", "1", "U"]),  # the visit is the EHR's to know: patient class unknown
        "|".join(["ORC", "RE", accession, filler, "", "CM"]),
        "|".join(["OBR", "1", accession, filler, "QOQMED^QoQ-Med AI read^L", "", "", _dicom_datetime(source),
                  *[""] * 10, accession, *[""] * 6, status]),
    ]
    if flagged:
        segments.append("|".join(["TQ1", "1", *[""] * 7, "S^Stat^HL70485"]))
    observations: list[tuple[str, str, str, str, str]] = [
        ("CWE", "AI-ANSWER^AI answer^L",
         "~".join(_label_cwe(label) for label in findings.labels) or "NONE^No answer^L", "", "AA" if flagged else ""),
    ]
    for number, box in enumerate(findings.boxes, start=1):
        s = box.source
        observations.append(("ST", "AI-FINDING^AI finding^L", _value(
            f"{box.label}: instance {s.frame.sop_instance_uid} frame {s.frame.frame}, columns "
            f"{s.column_min:.0f}-{s.column_max:.0f}, rows {s.row_min:.0f}-{s.row_max:.0f}"), str(number), ""))
    reasoning = _chunks(escape(clip(findings.reasoning, REASONING_LIMIT), line_breaks=True))
    observations += [("FT", "AI-REASONING^AI reasoning^L", chunk, str(part), "")
                     for part, chunk in enumerate(reasoning, start=1)]
    observations.append(("ST", "110180^Study Instance UID^DCM", _value(study_uid, 64), "", ""))
    if sr_sop_instance_uid:  # a reference pointer to the SR: pointer ^ application ^ type of data ^ subtype
        observations.append(("RP", "AI-SR^AI structured report^L",
                             f"{_value(sr_sop_instance_uid, 64)}^{_value(party.sending_application, 20)}^AP^DICOM",
                             "", ""))
    observations += [("ST", "AI-INPUT^AI input^L", _value(line), str(number), "")
                     for number, line in enumerate(inputs, start=1)]
    observations.append(("ST", "AI-MODEL^AI model^L", _value(f"{provenance.model_identity}; qoq-node "
                                                              f"{provenance.node_version}"), "", ""))
    for index, (value_type, code, value, sub_id, flag) in enumerate(observations, start=1):
        segments.append("|".join(["OBX", str(index), value_type, code, sub_id, value, "", "", flag, "", "", status]))
    segments.append("|".join(["NTE", "1", "L", _value(f"{provenance.banner}. {DISCLAIMER}")]))
    message = SEGMENT_SEPARATOR.join(segments)
    if not message.isascii():  # MSH-18: the character set, when the message needs more than ASCII
        msh, _, rest = message.partition(SEGMENT_SEPARATOR)
        message = f"{msh}||||||UNICODE UTF-8{SEGMENT_SEPARATOR}{rest}"
    return message
