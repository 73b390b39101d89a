"""Memory benchmark: the node process's peak resident memory while it receives one large instance, one
instance over ``dicom.max_instance_bytes`` and one deflate bomb, each sent by dcmtk storescu.

Each case starts a fresh node (a subprocess) and reads its peak resident set (VmHWM, /proc) after the
C-STORE is answered; the baseline is the peak of a node that has received nothing.

    python -m benchmarks.large_instance --megabytes 600
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import tempfile
import zlib
from pathlib import Path

import pydicom

from node.ingest.part10 import file_meta
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_instance(path: Path, payload_bytes: int, deflate: bool) -> Path:
    """A CT instance (fictitious UIDs) whose dataset carries ``payload_bytes`` of zeros in a private element,
    in Explicit VR Little Endian or deflated (then a few hundred kilobytes on the wire)."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, pydicom.uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.Modality = "CT"
    ds.add_new(0x00090010, "LO", "PADDING")
    ds.add_new(0x00091010, "OB", b"\x00" * payload_bytes)
    buffer = io.BytesIO()
    encoded = pydicom.filebase.DicomFileLike(buffer)
    encoded.is_implicit_VR, encoded.is_little_endian = False, True
    pydicom.filewriter.write_dataset(encoded, ds)
    dataset, syntax = buffer.getvalue(), EXPLICIT_VR_LE
    if deflate:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset, syntax = compressor.compress(dataset) + compressor.flush(), DEFLATED_EXPLICIT_VR_LE
    path.write_bytes(file_meta(CT_IMAGE_STORAGE, str(ds.SOPInstanceUID), syntax, "BENCH") + dataset)
    return path


def peak_resident_mb(pid: int) -> float:
    """A process's peak resident set size (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc")


def measure(workdir: Path, name: str, instance: Path | None, settings: dict[str, str]) -> dict[str, object]:
    """Start a node, send ``instance`` (if any), and return the answer and the node's peak memory."""
    with NodeProcess(workdir / name, settings=settings, replay={"*": ""}) as node:
        assert node.process is not None
        answer = ""
        if instance is not None:
            sent = subprocess.run(["storescu", "-v", "-aec", "QOQNODE", LOOPBACK, str(node.dicom_port), str(instance)],
                                  capture_output=True, text=True, timeout=600)
            answer = next((line.split("Received Store Response", 1)[1].strip(" ()")
                           for line in sent.stderr.splitlines() if "Received Store Response" in line), "none")
        return {"case": name, "sent_mb": round(instance.stat().st_size / 1e6, 1) if instance else 0.0,
                "answer": answer, "node_peak_rss_mb": round(peak_resident_mb(node.process.pid), 1)}


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=600, help="the large instance's size")
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    limits = {"QOQ_NODE__DICOM__MAX_INSTANCE_BYTES": str(size + 1_000_000),
              "QOQ_NODE__DICOM__MAX_INFLATED_BYTES": str(size + 1_000_000)}
    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        workdir = Path(tmp)
        large = write_instance(workdir / "large.dcm", size, deflate=False)
        over = write_instance(workdir / "over.dcm", size + 2_000_000, deflate=False)
        bomb = write_instance(workdir / "bomb.dcm", 4 * size, deflate=True)
        cases = [measure(workdir, "idle", None, limits),
                 measure(workdir, "large", large, limits)]
        large.unlink()
        cases.append(measure(workdir, "over_max_instance_bytes", over, limits))
        over.unlink()
        cases.append(measure(workdir, "deflate_bomb", bomb, limits))
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                      "limits_mb": args.megabytes + 1, "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
