"""Synthetic DICOM studies for demos, tests and benchmarks.

Everything here is generated: the patients are fictitious and the pixels are
phantoms, so the objects can be sent anywhere without privacy concerns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)


@dataclass(frozen=True)
class SyntheticStudy:
    """The identity of a generated study."""

    study_uid: str
    series_uids: tuple[str, ...]
    files: tuple[Path, ...]


def _ct_slice(
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_number: int,
    index: int,
    size: int,
    pixels: np.ndarray,
) -> Dataset:
    """Build one CT slice with the modules a CT Image IOD requires."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = "SYN0001"
    ds.Modality = "CT"
    ds.Manufacturer = "qoq-node synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC CT CHEST"
    ds.SeriesDescription = f"SYNTHETIC AXIAL {series_number}"
    ds.PatientName = "SYNTHETIC^PATIENT"
    ds.PatientID = "SYN-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-250.0, -250.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = float(index)
    ds.PixelSpacing = [500.0 / size, 500.0 / size]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = pixels.tobytes()
    return ds


def _phantom(size: int, index: int) -> np.ndarray:
    """A water cylinder with a dense lesion whose position depends on the slice index."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = size / 2
    body = (yy - centre) ** 2 + (xx - centre) ** 2 < (0.4 * size) ** 2
    pixels = np.where(body, 1024, 0).astype(np.uint16)
    lesion_y = int(size * 0.35) + index % 16
    lesion = (yy - lesion_y) ** 2 + (xx - int(size * 0.6)) ** 2 < (size // 20) ** 2
    pixels[lesion] = 1024 + 300
    return pixels


def write_ct_study(
    directory: Path,
    slices: int,
    series: int = 1,
    size: int = 512,
) -> SyntheticStudy:
    """Write a synthetic CT study of ``series`` series with ``slices`` slices each.

    Files are written in Explicit VR Little Endian, one per slice, named
    ``<series>-<slice>.dcm``. Returns the study's identity and file list.
    """
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    frame_of_reference_uid = generate_uid()
    series_uids = tuple(generate_uid() for _ in range(series))
    phantoms = [_phantom(size, index) for index in range(min(slices, 16))]
    files: list[Path] = []
    for series_number, series_uid in enumerate(series_uids, start=1):
        for index in range(slices):
            ds = _ct_slice(
                study_uid,
                series_uid,
                frame_of_reference_uid,
                series_number,
                index,
                size,
                phantoms[index % len(phantoms)],
            )
            path = directory / f"{series_number:03d}-{index:04d}.dcm"
            write_file(ds, path)
            files.append(path)
    return SyntheticStudy(study_uid, series_uids, tuple(files))


def write_file(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)

