"""Shared fixtures: in-process nodes, node processes and other child processes (each stopped or killed at
teardown, pass or fail), a real Orthanc, synthetic studies, the peers (dcmtk, dicom3tools, promtool) and
the test lanes they decide (``unit``, ``peers``, ``viewer``). Plain helpers are in ``tests/helpers.py``."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from node.app import Node
from node.ops.logging import configure_logging
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import SyntheticStudy, write_ct_study
from tests.helpers import DCMTK_ENV, LONGEST_WAIT_SECONDS, node_config

if TYPE_CHECKING:
    from node.engine.transformers_backend import TransformersEngine

#: Property tests check what holds, not how fast: no per-example deadline (on a loaded 2-core machine a
#: 200 ms deadline fails correct code).
settings.register_profile("qoq", deadline=None)
settings.load_profile("qoq")

configure_logging("INFO", "json")


#: The peer fixtures: the programs each needs and the package that brings them. A test that uses one
#: (itself or through another fixture) is marked ``peers`` (see ``pytest_collection_modifyitems``). A
#: peer is required, never skipped: its fixture fails when it is missing.
PEERS = {
    "dcmtk": (("storescu", "echoscu", "dcmdump", "dsr2xml"), "apt-get install dcmtk"),
    "orthanc_installed": (("Orthanc",), "apt-get install orthanc orthanc-dicomweb"),
    "dicom3tools": (("dciodvfy",), "apt-get install dicom3tools"),
    "promtool": (("promtool",), "apt-get install prometheus"),
    "pixelmed": (("java",), "apt-get install libpixelmed-java default-jdk-headless"),
}


def _require(peer: str) -> None:
    programs, install = PEERS[peer]
    missing = [program for program in programs if shutil.which(program) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found on PATH: {install}", pytrace=False)


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """dcmtk's command-line tools (storescu, echoscu, dcmdump, dsr2xml)."""
    _require("dcmtk")


@pytest.fixture(scope="session")
def orthanc_installed() -> None:
    """Orthanc, for tests that start their own."""
    _require("orthanc_installed")


@pytest.fixture(scope="session")
def dicom3tools() -> None:
    """dicom3tools' dciodvfy."""
    _require("dicom3tools")


@pytest.fixture(scope="session")
def promtool() -> None:
    """Prometheus's promtool."""
    _require("promtool")


PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: Runs pixelmed's DicomSRValidator over many files in one JVM (it compiles its templates once).
VALIDATE_SR = Path(__file__).parent / "pixelmed" / "ValidateSR.java"
#: pixelmed's XSLT templates exceed the JDK's default XPath limits.
_XPATH_LIMITS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0")
_NOT_IN_GROUP = re.compile(r"Code \(([^,]+),([^,]+),[^)]*\) not found in context group (\d+)$")


@pytest.fixture(scope="session")
def pixelmed() -> None:
    """pixelmed's DicomSRValidator (Debian's libpixelmed-java; a JDK runs the one-JVM driver)."""
    _require("pixelmed")
    if not PIXELMED_JAR.is_file():
        pytest.fail(f"{PIXELMED_JAR} not found: {PEERS['pixelmed'][1]}", pytrace=False)


def _in_current_group(line: str) -> bool:
    """Whether an error says a code is not in a context group that the current standard (pydicom's tables)
    puts it in: Debian's pixelmed (2022) carries older context groups (its CID 100 lacks projection X-ray)."""
    from pydicom.sr.codedict import codes

    found = _NOT_IN_GROUP.search(line)
    if not found:
        return False
    value, scheme, cid = found.groups()
    group = getattr(codes, f"cid{cid}", None)
    return group is not None and any((code.value, code.scheme_designator) == (value, scheme)
                                     for code in group.concepts.values())


def _sr_validator_errors(paths: list[Path]) -> dict[Path, list[str]]:
    """The ``Error`` lines pixelmed's DicomSRValidator reports for each SR or KOS file (warnings ignored)."""
    report = subprocess.run(["java", *_XPATH_LIMITS, "-cp", str(PIXELMED_JAR), str(VALIDATE_SR), *map(str, paths)],
                            capture_output=True, text=True, timeout=1800)
    assert report.returncode == 0, report.stderr[-2000:]
    errors: dict[Path, list[str]] = {}
    current: list[str] = []
    for line in report.stdout.splitlines():
        if line.startswith("=== "):
            current = errors.setdefault(Path(line[4:]), [])
        elif line.startswith("Error") and not _in_current_group(line):
            current.append(line)
    return errors


@pytest.fixture(scope="session")
def sr_validator_errors(pixelmed: None):
    """``sr_validator_errors(paths)``: pixelmed DicomSRValidator's ``Error`` lines for each SR or KOS file."""
    return _sr_validator_errors


#: Fixtures that take minutes on a CPU: the tiny random checkpoint (torch, transformers), a wheelhouse.
SLOW = {"tiny_dir", "wheelhouse"}
#: The lanes (registered in pyproject.toml); a test in none of these is ``unit``.
LANES = ("peers", "viewer", "slow")
VIEWER_TESTS = Path(__file__).parent / "viewer"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put each test in its lanes: ``viewer`` under tests/viewer/, ``peers`` when it uses a peer fixture,
    ``slow`` when it uses a slow one (itself or through another fixture), else ``unit``."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.is_relative_to(VIEWER_TESTS):
            item.add_marker(pytest.mark.viewer)
        if PEERS.keys() & fixtures:
            item.add_marker(pytest.mark.peers)
        if SLOW & fixtures:
            item.add_marker(pytest.mark.slow)
        if not any(item.get_closest_marker(lane) for lane in LANES):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Qwen2.5-VL test checkpoint (seed 0), built once per session."""
    from node.engine.tiny import build_tiny_checkpoint  # torch and transformers: only for tests that use it

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_family_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_family_dir(family)``: the tiny random checkpoint of a QoQ-Med family, built once per session."""
    from node.engine.tiny import build_tiny_checkpoint

    built = {"qwen2.5-vl": tiny_dir}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / family, family=family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_engine(tiny_dir: Path) -> TransformersEngine:
    """The transformers backend on the tiny checkpoint, on the CPU."""
    from node.engine.transformers_backend import TransformersEngine

    return TransformersEngine(tiny_dir, device="cpu")


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start in-process nodes (``make_node(**sections)``); every one is stopped at teardown, even when the
    test, a start or another node's stop fails."""
    count = 0
    with ExitStack() as stops:

        def start(**sections: dict) -> Node:
            nonlocal count
            node = Node(node_config(tmp_path / f"node{count}", **sections))
            count += 1
            stops.callback(node.stop, drain_seconds=5)  # registered first: a half-started node is stopped too
            node.start()
            return node

        yield start


@pytest.fixture
def node(make_node) -> Node:
    """One in-process node with default test settings."""
    return make_node()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``node_process(name, settings, replay)``: a ``qoq-node serve`` child process under ``tmp_path / name``
    (not started: the test starts, kills and restarts it); killed at teardown if it still runs."""
    with ExitStack() as kills:

        def make(name: str = "node", settings: Mapping[str, str] | None = None,
                 replay: Mapping[str, str] | None = None) -> NodeProcess:
            node = NodeProcess(tmp_path / name, settings, replay)
            kills.callback(node.kill)
            return node

        yield make


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """``spawn(args, **popen_options)``: a child process (a dcmtk SCU, a server) killed at teardown if it
    still runs, so a failing test leaves none behind."""
    with ExitStack() as kills:

        def start(args: list[str], **options) -> subprocess.Popen:
            process = subprocess.Popen(args, **options)
            kills.callback(_kill, process)
            return process

        yield start


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="session")
def orthanc(orthanc_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc for the session, with its DICOMweb plugin at /dicom-web/; tests register the node as a
    modality through REST."""
    with Orthanc(tmp_path_factory.mktemp("orthanc"), dicomweb=True) as server:
        yield server


@pytest.fixture(scope="session")
def ct_study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    """A small synthetic CT study: 2 series of 5 slices, 64x64."""
    return write_ct_study(tmp_path_factory.mktemp("ct"), slices=5, series=2, size=64)


def _storescu(port: int, files: list[Path], *options: str, called_ae: str = "QOQNODE") -> subprocess.CompletedProcess:
    """Run dcmtk storescu against the node; returns the completed process (never raises)."""
    return subprocess.run(
        ["storescu", "-v", *options, "-aec", called_ae, LOOPBACK, str(port), *map(str, files)],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=LONGEST_WAIT_SECONDS,
    )


def _echoscu(port: int, *options: str, called_ae: str = "QOQNODE") -> subprocess.CompletedProcess:
    """Run dcmtk echoscu against the node."""
    return subprocess.run(
        ["echoscu", "-v", *options, "-aec", called_ae, LOOPBACK, str(port)],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=60,
    )


@pytest.fixture(scope="session")
def storescu(dcmtk: None):
    """``storescu(port, files, *options, called_ae=...)``: dcmtk's storescu against a node."""
    return _storescu


@pytest.fixture(scope="session")
def echoscu(dcmtk: None):
    """``echoscu(port, *options, called_ae=...)``: dcmtk's echoscu against a node."""
    return _echoscu


def _dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dicom3tools' dciodvfy prints for a DICOM file (warnings ignored)."""
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def dciodvfy_errors(dicom3tools: None):
    """``dciodvfy_errors(path)``: the ``Error`` lines dciodvfy prints for a DICOM file."""
    return _dciodvfy_errors
