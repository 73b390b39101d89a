"""A STOW-RS answer's body (PS3.18 10.5.3, Table 10.5.3-1): which instances were stored (Referenced SOP
Sequence, with a Warning Reason), which were not (Failed SOP Sequence, each with its Failure Reason), in
DICOM JSON (application/dicom+json, what the node asks for) or the Native DICOM Model (application/dicom+xml,
what some archives answer regardless)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # the archive's answer, bounded in size; expat refuses entity bombs
from dataclasses import dataclass, field
from typing import Any

from node.dicomweb.response_module import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    WARNING_REASON,
)

#: (the sequence, the reason its items give): the stored instances and the failed ones.
_SEQUENCES = ((REFERENCED_SOP_SEQUENCE.tag, WARNING_REASON.tag), (FAILED_SOP_SEQUENCE.tag, FAILURE_REASON.tag))


@dataclass(frozen=True)
class StowAnswer:
    """Per SOP Instance UID: stored (with its warning reason, or None) or failed (with its failure reason)."""

    stored: dict[str, int | None] = field(default_factory=dict)
    failed: dict[str, int | None] = field(default_factory=dict)


def _json_value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _from_json(text: str) -> dict[str, list[tuple[str, int | None]]]:
    body = json.loads(text)
    dataset = body[0] if isinstance(body, list) and body else body
    if not isinstance(dataset, dict):
        raise ValueError("not a DICOM JSON object")
    found: dict[str, list[tuple[str, int | None]]] = {}
    for sequence, reason in _SEQUENCES:
        for item in (dataset.get(sequence) or {}).get("Value") or []:
            uid, code = _json_value(item, REFERENCED_SOP_INSTANCE_UID.tag), _json_value(item, reason)
            if uid:
                found.setdefault(sequence, []).append((str(uid), int(code) if code is not None else None))
    return found


def _xml_value(item: ET.Element, tag: str) -> str | None:
    value = item.find(f"DicomAttribute[@tag='{tag}']/Value")
    return value.text.strip() if value is not None and value.text else None


def _from_xml(text: str) -> dict[str, list[tuple[str, int | None]]]:
    root = ET.fromstring(re.sub(r'\sxmlns="[^"]*"', "", text, count=1))  # noqa: S314 - see the import
    found: dict[str, list[tuple[str, int | None]]] = {}
    for sequence, reason in _SEQUENCES:
        for item in root.findall(f"DicomAttribute[@tag='{sequence}']/Item"):
            uid, code = _xml_value(item, REFERENCED_SOP_INSTANCE_UID.tag), _xml_value(item, reason)
            if uid:
                found.setdefault(sequence, []).append((uid, int(code) if code else None))
    return found


def parse_answer(content_type: str, text: str) -> StowAnswer | None:
    """The answer in a STOW-RS response body; None when there is none or it cannot be read."""
    if not text.strip():
        return None
    try:
        found = _from_xml(text) if "xml" in content_type.lower() else _from_json(text)
    except (ValueError, TypeError, AttributeError, ET.ParseError):
        return None
    return StowAnswer(dict(found.get(REFERENCED_SOP_SEQUENCE.tag, [])),
                      dict(found.get(FAILED_SOP_SEQUENCE.tag, [])))
