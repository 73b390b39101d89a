"""Delivery benchmark: result objects (the replay SR of a synthetic CT, copied under new SOP Instance UIDs)
to one Orthanc by C-STORE (the node's DICOM sender, 32 objects per association as the outbox worker takes
them) and by STOW-RS (its DICOMweb sender, 32 per request, to Orthanc's /dicom-web), the two alternating,
each round with objects Orthanc has not seen.

    python -m benchmarks.delivery --objects 320 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from node.config import DicomWebDestination
from node.egress.dicom import DicomSender
from node.egress.dicomweb import StowSender
from node.egress.mllp import Delivery
from node.findings import locate, parse_output
from node.imaging.geometry import FrameRef, Geometry
from node.results.provenance import Provenance
from node.results.sr import build_sr
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study

BATCH = 32


def _objects(directory: Path, count: int) -> list[tuple[str, Path]]:
    """``count`` copies of one SR, each its own instance, as files."""
    sources = [pydicom.dcmread(p) for p in write_ct_study(directory / "ct", slices=2, size=128).files]
    geometry = Geometry.single(FrameRef(sources[0].SOPInstanceUID, 1, 128, 128), (128, 128))
    findings = locate(parse_output('```json\n[{"bbox_2d": [10, 10, 40, 40], "label": "mass"}]\n```\\boxed{Mass}'),
                      [geometry])
    sr = build_sr(findings, sources, Provenance("replay (TEST)", True), 1, "ct")
    written = []
    for index in range(count):
        sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = directory / f"sr{index:05d}.dcm"
        sr.save_as(path, enforce_file_format=True)
        written.append((str(sr.SOPInstanceUID), path))
    return written


def _timed(send: Callable[[list[tuple[str, Path]]], list[Delivery]], objects: list[tuple[str, Path]]) -> float:
    start = time.perf_counter()
    for first in range(0, len(objects), BATCH):
        outcomes = send(objects[first:first + BATCH])
        assert set(outcomes) == {Delivery.ACCEPTED}, outcomes
    return time.perf_counter() - start


def main() -> None:
    """Run the rounds and print the per-object times as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Orthanc(Path(tmp) / "orthanc", dicomweb=True) as orthanc:
        dimse = DicomSender("QOQNODE", orthanc.aet, LOOPBACK, orthanc.dicom_port)
        stow = StowSender(DicomWebDestination.model_validate({"name": "orthanc", "url": f"{orthanc.url}/dicom-web"}))

        def c_store(batch: list[tuple[str, Path]]) -> list[Delivery]:
            return [r.delivery for r in dimse.send([pydicom.dcmread(path) for _, path in batch])]

        def stow_rs(batch: list[tuple[str, Path]]) -> list[Delivery]:
            return [r.delivery for r in stow.send(batch)]

        times: dict[str, list[float]] = {"C-STORE": [], "STOW-RS": []}
        for round_ in range(args.rounds):
            for name, send in (("C-STORE", c_store), ("STOW-RS", stow_rs)):
                objects = _objects(Path(tmp) / f"{name}-{round_}", args.objects)
                times[name].append(_timed(send, objects) / args.objects * 1000)
        stow.close()
    print(json.dumps({name: {"ms_per_object_median": round(statistics.median(values), 2),
                             "rounds": [round(v, 2) for v in values]} for name, values in times.items()}, indent=2))


if __name__ == "__main__":
    main()
