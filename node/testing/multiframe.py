"""A big synthetic multi-frame (an ultrasound cine of a fictitious patient) and the memory the imaging stage
takes to read it, measured in a fresh process: ``python -m node.testing.multiframe FILE`` prints the
process's resident set before the stage (after the imports), its peak, and what it settles at after.

The file is written a frame at a time, so writing a 655 MB cine takes little memory itself.
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
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


def resident_mb() -> dict[str, float]:
    """This process's resident set now (VmRSS) and at its peak (VmHWM), MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[name].split()[0]) * 1024 / 1e6 for key, name in (("now", "VmRSS"), ("peak", "VmHWM"))}


def measure(path: Path) -> dict[str, float]:
    """The imaging stage (through :func:`node.chain.prepare_study`, default configuration and rules) on the
    one-file study at ``path``, on a worker thread as ``serve``'s imaging pool runs it, then the read (a replay
    engine) and the results stage: the resident set before, the peak and the resident set after the imaging
    stage, and the peak and resident set after the results (MB)."""
    from node.chain import prepare_study
    from node.config import load_config
    from node.dicom_files import read_attributes
    from node.engine import GenerationSettings
    from node.engine.replay import ReplayEngine
    from node.imaging.prepared import Prepared
    from node.model.profiles import PROFILES
    from node.reading import read_batch
    from node.results.hl7 import Hl7Party
    from node.results.writer import write_results
    from node.routing import Router

    config = load_config(None, environ={})
    router = Router.from_file(config.routing.rules)
    study_uid = str(read_attributes(path, ["StudyInstanceUID"]).StudyInstanceUID)
    before = resident_mb()["now"]
    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(prepare_study, study_uid, [path], router, config.imaging,
                               PROFILES["qwen2.5-vl"]).result()
    if not isinstance(prepared, Prepared) or not prepared.inputs:
        raise RuntimeError(f"the cine was not prepared: {prepared}")
    after = resident_mb()
    [read] = read_batch([prepared], ReplayEngine({"*": "<think>a</think>\\boxed{Benign}"}), GenerationSettings())
    with tempfile.TemporaryDirectory(prefix="qoq-results-") as results, ThreadPoolExecutor(1) as pool:
        pool.submit(write_results, read, Path(results), {"oru": Hl7Party()}, config.results.secondary_capture).result()
    done = resident_mb()
    return {"before_mb": before, "peak_mb": after["peak"], "settled_mb": after["now"],
            "results_peak_mb": done["peak"], "results_settled_mb": done["now"]}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]))))
