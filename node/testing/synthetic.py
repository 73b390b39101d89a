"""Synthetic DICOM studies for demos, tests and benchmarks.

Everything here is generated: the patients are fictitious and the pixels are
phantoms, so the objects can be sent anywhere without privacy concerns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    TwelveLeadECGWaveformStorage,
    generate_uid,
)

from node.imaging.geometry import FrameRef, Geometry, SourceBox
from node.model.profiles import PROFILES, ModelProfile

#: Stored value of the phantoms' body; the lesion is brighter (CT: 300 HU denser than water).
BODY_LEVEL = 1024
LESION_LEVEL = BODY_LEVEL + 300


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
    ds = _image(CTImageStorage, "CT", study_uid, series_uid, series_number, index + 1, size, pixels)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDescription = "SYNTHETIC CTA CHEST"  # a CT pulmonary angiogram: the PE task's population
    ds.SeriesDescription = f"SYNTHETIC AXIAL {series_number}"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-250.0, -250.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = float(index)
    ds.PixelSpacing = [500.0 / size, 500.0 / size]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def _image(sop_class: str, modality: str, study_uid: str, series_uid: str, series_number: int,
           instance_number: int, size: int, pixels: np.ndarray) -> Dataset:
    """The patient, study, series and 16-bit grey pixel attributes every synthetic image shares."""
    ds = _header(sop_class, modality, study_uid, series_uid, series_number, instance_number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def _header(sop_class: str, modality: str, study_uid: str, series_uid: str, series_number: int,
            instance_number: int) -> Dataset:
    """The patient, study and series attributes every synthetic object shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "SYN0001"
    ds.Modality = modality
    ds.Manufacturer = "qoq-node synthetic"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "SYNTHETIC^PATIENT"
    ds.PatientID = "SYN-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _phantom(size: int, index: int) -> np.ndarray:
    """A water cylinder with a dense lesion whose position depends on the slice index."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = size / 2
    body = (yy - centre) ** 2 + (xx - centre) ** 2 < (0.4 * size) ** 2
    pixels = np.where(body, BODY_LEVEL, 0).astype(np.uint16)
    lesion_y = int(size * 0.35) + index % 16
    lesion = (yy - lesion_y) ** 2 + (xx - int(size * 0.6)) ** 2 < (size // 20) ** 2
    pixels[lesion] = LESION_LEVEL
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


def write_cr_study(directory: Path, size: int = 1024) -> SyntheticStudy:
    """Write a synthetic one-image chest CR study (a PA view with one dense lesion)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _image(ComputedRadiographyImageStorage, "CR", study_uid, series_uid, 1, 1, size, _phantom(size, 0))
    ds.StudyDescription = "SYNTHETIC CHEST PA"
    ds.SeriesDescription = "SYNTHETIC CHEST PA"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.WindowCenter = str(BODY_LEVEL)
    ds.WindowWidth = str(2 * (LESION_LEVEL - BODY_LEVEL))
    path = directory / "cr.dcm"
    write_file(ds, path)
    return SyntheticStudy(study_uid, (series_uid,), (path,))


def lesion_box(ds: Dataset) -> tuple[float, float, float, float]:
    """The phantom lesion's bounding box in source pixels: (column min, row min, column max, row max),
    the max edges exclusive (pixel edges, as boxes are drawn)."""
    rows, columns = np.nonzero(ds.pixel_array > BODY_LEVEL)
    return float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1)


def boxed_response(ds: Dataset, label: str, profile: ModelProfile = PROFILES["qwen2.5-vl"]) -> str:
    """A model response (QoQ-Med's format) that boxes the phantom lesion of ``ds`` in the
    coordinates of its model input (``profile``'s pre-resized image) and answers ``label``: what a
    replay engine plays back."""
    geometry = Geometry.single(FrameRef(str(ds.SOPInstanceUID), 1, int(ds.Rows), int(ds.Columns)),
                               profile.model_size(int(ds.Columns), int(ds.Rows)))
    x1, y1, x2, y2 = geometry.box_to_model(SourceBox(geometry.placements[0].source, *lesion_box(ds)))
    return (f"<think>A dense round opacity is seen.</think>\n```json\n"
            f'[{{"bbox_2d": [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}], "label": "{label.lower()}"}}]\n```\n'
            f"\\boxed{{{label}}}")


#: The twelve leads in the standard order, with their MDC codes (DICOM CID 3001).
ECG_LEADS = (("I", "2:1"), ("II", "2:2"), ("III", "2:61"), ("aVR", "2:62"), ("aVL", "2:63"), ("aVF", "2:64"),
             ("V1", "2:3"), ("V2", "2:4"), ("V3", "2:5"), ("V4", "2:6"), ("V5", "2:7"), ("V6", "2:8"))


def ecg_lead_signal(lead: str, seconds: np.ndarray) -> np.ndarray:
    """The synthetic ECG's lead ``lead`` in mV at times ``seconds``: a sine whose frequency and amplitude
    name the lead (so a test can tell the leads apart after any reordering)."""
    index = [name for name, _ in ECG_LEADS].index(lead)
    return (0.2 + 0.1 * index) * np.sin(2 * np.pi * (1.0 + 0.5 * index) * seconds)


def write_ecg_study(directory: Path, rate_hz: float = 500.0, seconds: float = 10.0,
                    lead_order: tuple[str, ...] | None = None) -> SyntheticStudy:
    """A 12-lead ECG waveform (Twelve Lead ECG Waveform Storage) of ``seconds`` at ``rate_hz``, its
    channels stored in ``lead_order`` (default: the standard order), 1 µV per stored unit."""
    codes = dict(ECG_LEADS)
    order = lead_order or tuple(codes)
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _header(TwelveLeadECGWaveformStorage, "ECG", study_uid, series_uid, 1, 1)
    ds.BodyPartExamined = ""
    ds.StudyDescription = "SYNTHETIC ECG"
    ds.SeriesDescription = "SYNTHETIC RESTING ECG"
    ds.AcquisitionDateTime = "20260101120000"
    samples = round(rate_hz * seconds)
    times = np.arange(samples) / rate_hz
    stored = np.stack([np.round(ecg_lead_signal(lead, times) * 1000) for lead in order], axis=1).astype("<i2")
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(order)
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = f"{rate_hz:g}"
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = stored.tobytes()
    group.ChannelDefinitionSequence = [_ecg_channel(lead, codes[lead]) for lead in order]
    ds.WaveformSequence = [group]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ecg.dcm"
    write_file(ds, path)
    return SyntheticStudy(study_uid, (series_uid,), (path,))


def _ecg_channel(lead: str, mdc_code: str) -> Dataset:
    source, units = Dataset(), Dataset()
    source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = mdc_code, "MDC", f"Lead {lead}"
    units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
    channel = Dataset()
    channel.ChannelSourceSequence = [source]
    channel.ChannelSensitivity = "1"
    channel.ChannelSensitivityUnitsSequence = [units]
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = "0"
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    return channel


def write_file(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)



def restamp(study: SyntheticStudy, **attributes: str) -> SyntheticStudy:
    """Give every file of a synthetic study other header values (by keyword: PatientID, StudyDate, ...)."""
    for path in study.files:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    return study


def calibration_study(directory: Path, index: int) -> tuple[Path, ...]:
    """Write calibration study number ``index`` for ``qoq-node engine prepare``: a chest CR for an odd
    index, a 4-slice CT for an even one; returns its files."""
    study = write_cr_study(directory) if index % 2 else write_ct_study(directory, slices=4)
    return study.files
