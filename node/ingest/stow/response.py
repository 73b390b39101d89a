"""The STOW-RS answer: the HTTP status (PS3.18 10.5.3) and the Store Instances Response Module (PS3.18 Annex
I) as DICOM JSON (PS3.18 F.2) or, asked for with Accept, the Native DICOM Model XML (PS3.19 A.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast
from xml.sax.saxutils import escape, quoteattr

from node.dicomweb.response_module import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    JSON_MEDIA_TYPE,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    XML_MEDIA_TYPE,
    AttributeTag,
)
from node.ingest.stow.parts import PartResult

#: An attribute and its values (an item list for SQ; none: present, empty — Type 2).
Attribute = tuple[AttributeTag, list[object]]


def http_status(results: Sequence[PartResult]) -> int:
    """200 all stored, 202 some, 409 none (a conflict in the data), 400 none and a part was not DICOM at all (the
    payload could not be understood)."""
    stored = sum(result.stored for result in results)
    if results and stored == len(results):
        return 200
    if stored:
        return 202
    return 409 if results and all(result.understood for result in results) else 400


def _item(result: PartResult) -> list[Attribute]:
    attributes: list[Attribute] = []
    if result.understood:  # a part that was not DICOM names no instance
        attributes += [(REFERENCED_SOP_CLASS_UID, [result.sop_class_uid]),
                       (REFERENCED_SOP_INSTANCE_UID, [result.sop_instance_uid])]
    if result.stored:
        attributes.append((RETRIEVE_URL, []))  # Type 2: the node does not serve WADO-RS
    else:
        attributes.append((FAILURE_REASON, [result.status]))
    return attributes


def response_module(results: Sequence[PartResult]) -> list[Attribute]:
    """The Store Instances Response Module's attributes for the parts' results."""
    module: list[Attribute] = [(RETRIEVE_URL, [])]
    failed = [_item(result) for result in results if not result.stored]
    stored = [_item(result) for result in results if result.stored]
    if failed:
        module.append((FAILED_SOP_SEQUENCE, list(failed)))
    if stored:
        module.append((REFERENCED_SOP_SEQUENCE, list(stored)))
    return module


def _attributes(item: object) -> list[Attribute]:
    """A sequence item (the values of an SQ attribute are items: attribute lists)."""
    return cast(list[Attribute], item)


def to_json(attributes: list[Attribute]) -> dict[str, object]:
    """DICOM JSON (PS3.18 F.2) of ``attributes``."""
    out: dict[str, object] = {}
    for (tag, vr, _), values in attributes:
        element: dict[str, object] = {"vr": vr}
        if values:
            element["Value"] = [to_json(_attributes(value)) for value in values] if vr == "SQ" else values
        out[tag] = element
    return out


def to_xml(attributes: list[Attribute]) -> str:
    """The Native DICOM Model (PS3.19 A.1) of ``attributes``, a whole XML document."""
    body = _xml_attributes(attributes)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel>{body}</NativeDicomModel>\n'


def _xml_attributes(attributes: list[Attribute]) -> str:
    parts = []
    for (tag, vr, keyword), values in attributes:
        if vr == "SQ":
            inner = "".join(f'<Item number="{n}">{_xml_attributes(_attributes(item))}</Item>'
                            for n, item in enumerate(values, 1))
        else:
            inner = "".join(f'<Value number="{n}">{escape(str(value))}</Value>' for n, value in enumerate(values, 1))
        parts.append(f"<DicomAttribute tag={quoteattr(tag)} vr={quoteattr(vr)} keyword={quoteattr(keyword)}>"
                     f"{inner}</DicomAttribute>")
    return "".join(parts)


def wants_xml(accept: str | None) -> bool:
    """Whether the client asked for XML (``Accept`` naming application/dicom+xml and not DICOM JSON first)."""
    if not accept:
        return False
    for media_range in accept.split(","):
        media_type = media_range.split(";")[0].strip().lower()
        if media_type in (JSON_MEDIA_TYPE, "application/json", "*/*", "application/*"):
            return False
        if media_type in (XML_MEDIA_TYPE, "application/xml", "text/xml"):
            return True
    return False
