"""The Store Instances Response Module (PS3.18 10.5.3, Table 10.5.3-1; Annex I): its attributes, one definition for
reading an archive's STOW-RS answer (:mod:`node.dicomweb.answer`) and writing the receiver's own
(:mod:`node.ingest.stow.response`), the two media types an answer comes in, and the reason codes its
items give."""

from __future__ import annotations

from typing import NamedTuple

#: DICOM JSON (PS3.18 F.2).
JSON_MEDIA_TYPE = "application/dicom+json"
#: The Native DICOM Model (PS3.19 A.1).
XML_MEDIA_TYPE = "application/dicom+xml"


class AttributeTag(NamedTuple):
    """An attribute of the module: its tag (8 hex digits, as DICOM JSON and XML write it), VR and keyword."""

    tag: str
    vr: str
    keyword: str


RETRIEVE_URL = AttributeTag("00081190", "UR", "RetrieveURL")
FAILED_SOP_SEQUENCE = AttributeTag("00081198", "SQ", "FailedSOPSequence")
REFERENCED_SOP_SEQUENCE = AttributeTag("00081199", "SQ", "ReferencedSOPSequence")
REFERENCED_SOP_CLASS_UID = AttributeTag("00081150", "UI", "ReferencedSOPClassUID")
REFERENCED_SOP_INSTANCE_UID = AttributeTag("00081155", "UI", "ReferencedSOPInstanceUID")
FAILURE_REASON = AttributeTag("00081197", "US", "FailureReason")
WARNING_REASON = AttributeTag("00081196", "US", "WarningReason")

#: PS3.18 I.2.2 Failure Reason "Error: Cannot understand": a part that is not a DICOM Part 10 file.
CANNOT_UNDERSTAND = 0xC000
#: Failure and Warning Reasons (PS3.18 I.2.2, PS3.4 Annex B) and what they mean.
REASONS = {0xA700: "out of resources", 0xA900: "data set does not match SOP class", CANNOT_UNDERSTAND: "cannot "
           "understand", 0x0110: "processing failure", 0x0122: "SOP class not supported", 0x0124: "not authorized",
           0xC122: "transfer syntax not supported", 0xB000: "coercion of data elements",
           0xB006: "elements discarded", 0xB007: "data set does not match SOP class"}
