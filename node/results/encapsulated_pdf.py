"""The AI report (:mod:`node.results.pdf_report`) as a DICOM Encapsulated PDF in the study, in a series of its
own: what OHIF (its dicom-pdf extension) and most PACS viewers open beside the images.

PS3.3 A.45.1: Patient and General Study copied from the source (made valid by
:mod:`node.results.source_header`), Encapsulated Document Series (modality DOC), General and SC Equipment,
and the Encapsulated Document module: the document, its MIME type and length, a title and the report's
concept name (LOINC 18748-4, Diagnostic Imaging Report, PS3.16 CID 7000), Burned In Annotation YES (the
report names the patient) and the source images it pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

from node.results.provenance import (
    MANUFACTURER,
    Provenance,
    clip,
    contributing_equipment,
    describe_equipment,
    label_series,
    result_uid,
)
from node.results.source_header import COPIED_ATTRIBUTES

ENCAPSULATED_PDF_STORAGE = UID("1.2.840.10008.5.1.4.1.1.104.1")
SERIES_NUMBER = 9906
MIME_TYPE = "application/pdf"
#: PS3.16 CID 7000 (Diagnostic Imaging Report Document Titles).
REPORT_CONCEPT = ("18748-4", "LN", "Diagnostic Imaging Report")
#: The patient and study attributes copied from the source (Patient and General Study modules).
_COPIED = ("StudyInstanceUID", *COPIED_ATTRIBUTES)


def report_uid(study_uid: str, study_version: int, task: str, provenance: Provenance) -> str:
    """The SOP Instance UID of a study version's report: the same whenever the same read is written again."""
    return result_uid(study_uid, study_version, task, provenance, "pdf")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _source_reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    return item


def build_encapsulated_pdf(document: bytes, source: Dataset, pictured: Sequence[Dataset], provenance: Provenance,
                           study_version: int, task: str, title: str, created: datetime) -> Dataset:
    """The Encapsulated PDF of ``document`` (the report's bytes) in ``source``'s study; ``pictured``: the
    source images the report shows (its Source Instance Sequence)."""
    study_uid = str(source.StudyInstanceUID)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(report_uid(study_uid, study_version, task,
                                                                                 provenance))
    ds.InstanceCreationDate, ds.InstanceCreationTime = DA(created.date()), TM(created.time())
    for keyword in _COPIED:
        if keyword in source:
            ds[keyword] = source[keyword]
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = result_uid(study_uid, study_version, task, provenance, "pdf-series")
    ds.SeriesNumber = SERIES_NUMBER
    label_series(ds, source, provenance, "pdf")
    ds.Manufacturer = MANUFACTURER
    describe_equipment(ds, provenance)
    ds.ContributingEquipmentSequence = [contributing_equipment(provenance)]
    ds.ConversionType = "WSD"  # made on a workstation: the node
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = DA(created.date()), TM(created.time())
    ds.AcquisitionDateTime = DT(created)
    ds.BurnedInAnnotation = "YES"  # the report names the patient
    ds.DocumentTitle = clip(title, 1024)
    ds.ConceptNameCodeSequence = [_code(*REPORT_CONCEPT)]
    if pictured:
        ds.SourceInstanceSequence = [_source_reference(image) for image in pictured]
    ds.MIMETypeOfEncapsulatedDocument = MIME_TYPE
    ds.EncapsulatedDocumentLength = len(document)
    ds.EncapsulatedDocument = document + b"\0" * (len(document) % 2)  # OB: an even length, padded with a NUL
    return ds
