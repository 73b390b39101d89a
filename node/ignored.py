"""What the node does not read, received (``serve``) or given as files (``infer``) alike: its own results
sent back to it, and objects of a class in ``dicom.ignored_sop_classes`` (other systems' reports,
presentation states, key object selections and segmentations)."""

from __future__ import annotations

from collections.abc import Collection

from node.implementation import MANUFACTURER

#: Why one of the node's own results is not read.
OWN_RESULT = "one of the node's own results"


def why_not_read(sop_class_uid: str, manufacturer: str, ignored_sop_classes: Collection[str]) -> str | None:
    """Why an object of ``sop_class_uid`` made by ``manufacturer`` is not read (no patient data in it); None
    when it is read."""
    if manufacturer == MANUFACTURER:
        return OWN_RESULT
    if sop_class_uid in ignored_sop_classes:
        return f"SOP class {sop_class_uid} is in dicom.ignored_sop_classes"
    return None
