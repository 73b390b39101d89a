"""STOW-RS in: the node's receiver against Orthanc's (its DICOMweb plugin), from the same HTTP client.

Every round POSTs a fresh synthetic CT series (generated up front, so nothing is a duplicate) as one
multipart/related request, streamed from the files, to the node's ``/dicomweb/studies`` and to Orthanc's
``/dicom-web/studies``, the order alternating between rounds, and times each request to its answer (the node
answers once every instance is fsynced and committed; Orthanc does not fsync). ``--parallel N`` splits each
series over N requests at once.

    python -m benchmarks.stow --instances 300 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.figures import against_orthanc, throughput
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_ct_study

BOUNDARY = "qoq-bench-boundary"
TOKEN = "benchmark-token-0123456789abcdef"


def multipart(files: list[Path]) -> Iterator[bytes]:
    """A multipart/related body of ``files`` (application/dicom parts), read from disk as it is sent."""
    for path in files:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield path.read_bytes()
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def stow(client: httpx.Client, url: str, files: list[Path], requests: int) -> float:
    """POST ``files`` in ``requests`` parallel STOW-RS requests; wall seconds (every one must answer 200)."""
    groups = [files[i::requests] for i in range(requests)]
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
               "Accept": "application/dicom+json", "Authorization": f"Bearer {TOKEN}"}

    def post(group: list[Path]) -> None:
        answer = client.post(url, content=multipart(group), headers=headers)
        if answer.status_code != 200:
            raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:500]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        list(pool.map(post, groups))
    return time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=1, help="requests per series, at once")
    parser.add_argument("--settle-seconds", type=float, default=3.0, help="pause between transfers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        workdir = Path(tmp)
        studies = [list(write_ct_study(workdir / f"study-{n}", args.instances).files) for n in range(args.rounds * 2)]
        tokens = workdir / "tokens.json"
        tokens.write_text(json.dumps([{"name": "BENCH", "token": TOKEN}]))
        settings = {"QOQ_NODE__DICOMWEB__STOW__ENABLED": "true", "QOQ_NODE__DICOMWEB__STOW__TOKENS_FILE": str(tokens)}
        os.sync()  # no writeback of the generated files during the timed sends
        with Orthanc(workdir / "orthanc", dicomweb=True) as orthanc, \
                NodeProcess(workdir / "node", settings, replay={"*": ""}) as node, \
                httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.parallel)) as client:
            targets = {"node": f"{node.url}/dicomweb/studies", "orthanc": f"{orthanc.url}/dicom-web/studies"}
            results: dict[str, list[float]] = {name: [] for name in targets}
            for round_number in range(args.rounds):
                order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
                for index, name in enumerate(order):
                    files = studies[2 * round_number + index]
                    results[name].append(stow(client, targets[name], files, args.parallel))
                    os.sync()  # each target starts with no dirty pages of the other's
                    time.sleep(args.settle_seconds)  # and after the other's background work
        megabytes = sum(path.stat().st_size for path in studies[0]) / 1e6
        summary: dict[str, object] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "orthanc": subprocess.run(["Orthanc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "instances": args.instances, "rounds": args.rounds, "requests_per_series": args.parallel,
        }
        for name, seconds in results.items():
            summary.update(throughput(name, seconds, args.instances, megabytes))
        summary.update(against_orthanc("", results["node"], results["orthanc"]))
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
