"""Studies that are mostly header: one 4×4 instance per series carrying the attributes routing reads
(fictitious patients), for tests and benchmarks of what is routed on headers alone (``routing survey``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from node.testing.synthetic import write_file

#: The SOP class of each modality's instances (Secondary Capture for any other).
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1",
               "MG": "1.2.840.10008.5.1.4.1.1.1.2", "US": "1.2.840.10008.5.1.4.1.1.6.1",
               "SR": "1.2.840.10008.5.1.4.1.1.88.33"}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Keywords of code sequences: their values are ``SCHEME:VALUE`` strings.
CODE_SEQUENCES = ("ProcedureCodeSequence", "RequestedProcedureCodeSequence", "AnatomicRegionSequence")


def _code(text: str) -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator, item.CodeValue = text.split(":", 1)
    item.CodeMeaning = item.CodeValue
    return item


def _value(keyword: str, value: object) -> object:
    """An attribute's value: a code sequence from its ``SCHEME:VALUE`` strings, else as given."""
    if keyword in CODE_SEQUENCES and isinstance(value, list | tuple):
        return DicomSequence([_code(str(code)) for code in value])
    return value


def write_header_study(directory: Path, study: Mapping[str, object],
                       series: Sequence[Mapping[str, object]]) -> str:
    """Write a study of one instance per series into ``directory``: ``study`` holds its study-level
    attributes by keyword (StudyDate, StudyTime, StudyDescription, PatientAge, ...), each of ``series`` its
    series' (Modality, BodyPartExamined, ViewPosition, ...); code sequences are given as lists of
    ``SCHEME:VALUE``. Returns the Study Instance UID."""
    study_uid = generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    for number, attributes in enumerate(series, start=1):
        ds = Dataset()
        ds.PatientID, ds.PatientName = f"SURVEY{study_uid[-8:]}", "Survey^Fictitious"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
        ds.SeriesNumber, ds.InstanceNumber = number, 1
        for keyword, value in {**study, **attributes}.items():
            setattr(ds, keyword, _value(keyword, value))
        ds.SOPClassUID = SOP_CLASSES.get(str(ds.get("Modality", "")), _SECONDARY_CAPTURE)
        ds.Rows = ds.Columns = 4
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 7, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(16)
        write_file(ds, directory / f"{study_uid}-{number}.dcm")
    return study_uid
