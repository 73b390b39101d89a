"""The patient and study attributes result objects copy from their source, made valid first.

Sources from the field carry an ISO birth date ("1923-04-05"), a lower-case sex, a name with control
characters or 10 KB long, a Patient ID that is absent although the IOD makes it Type 2. highdicom
copies these into every SR, SEG, presentation state and SC, and pydicom refuses them (or writes an
invalid object). :func:`repair_header` fixes what has one obvious reading (dates and times written
with separators, upper-casing a code string), empties what has none — Type 2 allows an empty value,
an invalid one never — and gives absent Type 2 attributes an empty value. A lossy compression flag gets
its method, a Frame of Reference that reuses the Study Instance UID a UID of its own. Only the in-memory
copy is changed; the received instance stays as it was sent.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from node.results.dicom_text import NOT_IN_A_LINE

#: The patient and study attributes copied into the result objects (with the Study Instance UID), by VR. Those
#: of type 2 in the result IODs are given an empty value when absent.
COPIED_ATTRIBUTES = {
    "PatientName": "PN", "PatientID": "LO", "IssuerOfPatientID": "LO", "PatientBirthDate": "DA",
    "PatientSex": "CS", "StudyDate": "DA", "StudyTime": "TM", "AccessionNumber": "SH",
    "ReferringPhysicianName": "PN", "StudyID": "SH", "StudyDescription": "LO",
}
_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "AccessionNumber", "ReferringPhysicianName", "StudyID")
_LENGTH = {"LO": 64, "SH": 16, "PN": 64}
_SEX = frozenset({"M", "F", "O"})


def _text(value: object, vr: str) -> str:
    """A single string value: no control characters, no backslash (a value separator), within the VR's
    length (a PN's component groups beyond the first are dropped)."""
    text = NOT_IN_A_LINE.sub(" ", str(value)).replace("\\", " ")
    if vr == "PN":
        text = text.split("=")[0]
    return " ".join(text.split())[: _LENGTH[vr]].rstrip()


def _date(value: object) -> str:
    digits = re.sub(r"[-./ ]", "", str(value).strip())
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        return ""
    return digits


def _time(value: object) -> str:
    text = str(value).strip().replace(":", "")
    return text if re.fullmatch(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?", text) else ""


def _valid(value: object, vr: str) -> str:
    if vr == "DA":
        return _date(value)
    if vr == "TM":
        return _time(value)
    if vr == "CS":
        code = str(value).strip().upper()
        return code if code in _SEX else ""
    return _text(value, vr)


#: Lossy transfer syntaxes → the Lossy Image Compression Method (PS3.3 C.7.6.1.1.5) they imply.
_LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1", "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1", "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10", "1.2.840.10008.1.2.4.107": "ISO_23008_2",
    "1.2.840.10008.1.2.4.201": "ISO_15444_15",
}


def _repair_lossy(ds: Dataset) -> list[str]:
    """Lossy Image Compression 01 (which a SEG copies) with its method (Type 1C): the one the transfer syntax
    implies; without one to name, the flag is taken out (never copied invalid)."""
    if str(ds.get("LossyImageCompression", "")) != "01" or ds.get("LossyImageCompressionMethod"):
        return []
    method = _LOSSY_METHODS.get(str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "")))
    if method:
        ds.LossyImageCompressionMethod = method
        return ["LossyImageCompressionMethod"]
    del ds.LossyImageCompression
    return ["LossyImageCompression"]


def _repair_frame_of_reference(ds: Dataset) -> list[str]:
    """A Frame of Reference UID that is the study's own UID (one UID for two things, which a SEG would copy)
    made a UID of its own, derived from it: the same for every image of the study."""
    if "FrameOfReferenceUID" not in ds or ds.FrameOfReferenceUID != ds.get("StudyInstanceUID"):
        return []
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(ds.FrameOfReferenceUID), "frame of reference"])
    return ["FrameOfReferenceUID"]


def repair_header(ds: Dataset) -> list[str]:
    """Make ``ds``'s copied patient and study attributes (and its lossy compression history and frame of
    reference) valid, in place; the keywords changed."""
    changed = _repair_lossy(ds) + _repair_frame_of_reference(ds)
    for keyword, vr in COPIED_ATTRIBUTES.items():
        try:
            element = ds.data_element(keyword)
            value = "" if element is None or element.value is None else element.value
        except Exception:  # a value that cannot even be decoded
            element, value = None, ""
        if element is None and keyword not in _TYPE_2:
            continue
        if isinstance(value, MultiValue):  # more values than the attribute's VM: the first one
            value = value[0] if value else ""
        valid = _valid(value, vr)
        if element is None or vr != element.VR or str(value) != valid:
            if keyword in ds:
                del ds[keyword]
            setattr(ds, keyword, valid)
            changed.append(keyword)
    return changed
