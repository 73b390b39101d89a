"""A big synthetic multi-frame: an ultrasound cine of a fictitious patient, written a frame at a time (so
writing a 655 MB cine takes little memory itself), for the memory benchmark (``benchmarks/big_multiframe.py``)
and its test.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from node.testing.synthetic import SyntheticStudy

#: One cine frame: 1024 × 768 RGB, 8 bits (2.36 MB).
ROWS, COLUMNS = 768, 1024
FRAME_BYTES = ROWS * COLUMNS * 3


def write_cine(path: Path, megabytes: int) -> SyntheticStudy:
    """An ultrasound breast cine of about ``megabytes`` MB of RGB pixel data (a moving bright disc on grey),
    in Explicit VR Little Endian."""
    frames = max(megabytes * 1_000_000 // FRAME_BYTES, 2)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundMultiFrameImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "SYNTHETIC^CINE", "SYN-CINE", "SYNCINE1"
    ds.Modality, ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = "US", "BREAST", 1, 1
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS]
    length = frames * FRAME_BYTES
    with path.open("ab") as out:
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length + length % 2))
        for index in range(frames):
            disc = (yy - ROWS // 2) ** 2 + (xx - 200 - index % 600) ** 2 < 80**2
            out.write(np.repeat(np.where(disc, 220, 60).astype(np.uint8)[..., np.newaxis], 3, axis=2).tobytes())
        out.write(b"\0" * (length % 2))
    return SyntheticStudy(str(ds.StudyInstanceUID), (str(ds.SeriesInstanceUID),), (path,))
