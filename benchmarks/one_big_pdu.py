"""Memory benchmark: the node process's peak resident memory while a sender puts a large instance in PDUs
longer than the node announced (one P-DATA-TF PDU for the whole dataset), and while senders keep to the
announced maximum (dcmtk's storescu, and a raw sender in PDUs of exactly that length).

Each case starts a fresh node (a subprocess) and reads its peak resident set (VmHWM, /proc) once the
C-STORE is answered or the association aborted; ``dicom.max_instance_bytes`` is raised to fit the instance.

    python -m benchmarks.one_big_pdu --megabytes 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pydicom

from benchmarks.large_instance import CT_IMAGE_STORAGE, EXPLICIT_VR_LE, peak_resident_mb, write_instance
from benchmarks.large_instance import measure as measure_storescu
from node.testing.node_process import NodeProcess
from node.testing.raw_peer import (
    COMMAND_LAST,
    DATA_LAST,
    DATA_MORE,
    RawPeer,
    p_data,
    p_data_header,
    pdv_header,
    store_command,
)

#: Zeros are sent in chunks of this size (the sender's own memory stays small).
CHUNK = 1 << 20


def _explicit(ds: pydicom.Dataset) -> bytes:
    encoded = pydicom.filebase.DicomBytesIO()
    encoded.is_implicit_VR, encoded.is_little_endian = False, True
    pydicom.filewriter.write_dataset(encoded, ds)
    return encoded.getvalue()


def dataset_parts(payload_bytes: int) -> tuple[str, bytes, bytes]:
    """A CT instance carrying ``payload_bytes`` of zeros in a private OB element (Explicit VR Little Endian):
    its SOP Instance UID, the bytes before the zeros and those after them."""
    low, high = pydicom.Dataset(), pydicom.Dataset()
    low.SOPClassUID, low.SOPInstanceUID = CT_IMAGE_STORAGE, pydicom.uid.generate_uid()
    low.Modality = "CT"
    low.add_new(0x00090010, "LO", "PADDING")
    high.StudyInstanceUID, high.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    padding = bytes.fromhex("09001010") + b"OB\x00\x00" + payload_bytes.to_bytes(4, "little")
    return str(low.SOPInstanceUID), _explicit(low) + padding, _explicit(high)


def send_raw(port: int, payload_bytes: int, pdu_bytes: int) -> str:
    """C-STORE one instance over a raw association, its dataset in P-DATA-TF PDUs of ``pdu_bytes`` (0: all in
    one PDU, whatever the node announced); the node's answer: a status, or "aborted"."""
    sop, head, tail = dataset_parts(payload_bytes)
    total = len(head) + payload_bytes + len(tail)
    step = pdu_bytes - 6 if pdu_bytes else total
    peer = RawPeer(port, timeout=600)
    try:
        peer.associate({1: (CT_IMAGE_STORAGE, EXPLICIT_VR_LE)})
        peer.send(p_data((1, COMMAND_LAST, store_command(sop))))
        sent = 0
        while sent < total:
            size = min(step, total - sent)
            peer.send(p_data_header(size + 6) + pdv_header(size, 1, DATA_LAST if sent + size == total else DATA_MORE))
            _send_range(peer, head, payload_bytes, tail, sent, size)
            sent += size
        return f"0x{peer.status_of_response():04X}"
    except (OSError, AssertionError):
        return "aborted"
    finally:
        peer.close()


def _send_range(peer: RawPeer, head: bytes, payload: int, tail: bytes, start: int, size: int) -> None:
    """Send bytes ``start``..``start + size`` of head + zeros + tail, a chunk at a time."""
    end = start + size
    while start < end:
        if start < len(head):
            chunk = head[start:min(end, len(head))]
        elif start < len(head) + payload:
            chunk = bytes(min(end, len(head) + payload, start + CHUNK) - start)
        else:
            offset = start - len(head) - payload
            chunk = tail[offset:offset + end - start]
        peer.send(chunk)
        start += len(chunk)


def measure_raw(workdir: Path, name: str, payload_bytes: int, pdu_bytes: int,
                settings: dict[str, str]) -> dict[str, object]:
    """Start a node, send the instance raw in PDUs of ``pdu_bytes``, and return the answer and its peak memory."""
    with NodeProcess(workdir / name, settings=settings, replay={"*": ""}) as node:
        assert node.process is not None
        started = time.monotonic()
        answer = send_raw(node.dicom_port, payload_bytes, pdu_bytes)
        return {"case": name, "answer": answer, "seconds": round(time.monotonic() - started, 1),
                "node_peak_rss_mb": round(peak_resident_mb(node.process.pid), 1)}


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=600, help="the instance's size")
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    limits = {"QOQ_NODE__DICOM__MAX_INSTANCE_BYTES": str(size + 1_000_000)}
    unlimited = {**limits, "QOQ_NODE__DICOM__MAX_PDU_BYTES": "0"}
    announced = 1_048_576  # the default dicom.max_pdu_bytes
    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        workdir = Path(tmp)
        cases = [measure_raw(workdir, "one_pdu_max_pdu_0", size, 0, unlimited),
                 measure_raw(workdir, "one_pdu_default", size, 0, limits),
                 measure_raw(workdir, "announced_pdus_default", size, announced, limits)]
        instance = write_instance(workdir / "large.dcm", size, deflate=False)
        cases.append(measure_storescu(workdir, "storescu_default", instance, limits))
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores", "megabytes": args.megabytes,
                      "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
