"""Shared fixtures: an in-process node, a real Orthanc, synthetic studies, the peers (dcmtk, dicom3tools,
promtool) and the test lanes they decide (``unit``, ``peers``, ``viewer``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from hypothesis import settings

from node.app import Node
from node.config import NodeConfig, load_config
from node.imaging.geometry import FrameRef, Geometry
from node.model.profiles import PROFILES
from node.ops.logging import configure_logging
from node.testing.loopback import LOOPBACK
from node.testing.node_process import replay_settings
from node.testing.pacs import Orthanc
from node.testing.synthetic import SyntheticStudy, write_ct_study

if TYPE_CHECKING:
    from node.engine.transformers_backend import TransformersEngine

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

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


#: What the test nodes' replay engine answers unless a test says otherwise: no boxes, no answer.
NO_FINDINGS = {"*": "<think>nothing to report</think>"}


def node_config(root: Path, **sections: dict) -> NodeConfig:
    """A config for a node on loopback with ephemeral ports under ``root``, reading studies with
    the replay engine (``NO_FINDINGS``) unless ``engine`` settings are given."""
    env = {
        **(replay_settings(root / "replay.json", NO_FINDINGS) if "engine" not in sections else {}),
        "QOQ_NODE__DICOM__HOST": LOOPBACK,
        "QOQ_NODE__DICOM__PORT": "0",
        "QOQ_NODE__HTTP__HOST": LOOPBACK,
        "QOQ_NODE__HTTP__PORT": "0",
        "QOQ_NODE__STORAGE__ROOT": str(root),
        "QOQ_NODE__STORAGE__MIN_FREE_BYTES": "0",
        "QOQ_NODE__STUDY__STABLE_SECONDS": "1",
    }
    for section, values in sections.items():
        for key, value in values.items():
            env[f"QOQ_NODE__{section.upper()}__{key.upper()}"] = str(value)
    return load_config(None, environ=env)


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
def make_node(tmp_path: Path) -> Iterator:
    """Start in-process nodes (``make_node(**sections)``); all are stopped at teardown."""
    nodes: list[Node] = []

    def start(**sections: dict) -> Node:
        node = Node(node_config(tmp_path / f"node{len(nodes)}", **sections))
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(drain_seconds=5)


@pytest.fixture
def node(make_node) -> Node:
    """One in-process node with default test settings."""
    return make_node()


@pytest.fixture(scope="session")
def orthanc(orthanc_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc for the session; tests register the node as a modality through REST."""
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="session")
def ct_study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    """A small synthetic CT study: 2 series of 5 slices, 64x64."""
    return write_ct_study(tmp_path_factory.mktemp("ct"), slices=5, series=2, size=64)


def _storescu(port: int, files: list[Path], *options: str, called_ae: str = "QOQNODE") -> subprocess.CompletedProcess:
    """Run dcmtk storescu against the node; returns the completed process (never raises)."""
    return subprocess.run(
        ["storescu", "-v", *options, "-aec", called_ae, LOOPBACK, str(port), *map(str, files)],
        capture_output=True, text=True, env=DCMTK_ENV, timeout=300,
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


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information (the dataset as sent)."""
    raw = path.read_bytes()
    with pydicom.dcmread(path, stop_before_pixels=True) as ds:
        meta_length = ds.file_meta.FileMetaInformationGroupLength
    return raw[132 + 12 + meta_length :]


def _dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dicom3tools' dciodvfy prints for a DICOM file (warnings ignored)."""
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def dciodvfy_errors(dicom3tools: None):
    """``dciodvfy_errors(path)``: the ``Error`` lines dciodvfy prints for a DICOM file."""
    return _dciodvfy_errors


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll until ``predicate()`` is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def get(node: Node, path: str) -> tuple[int, str]:
    """GET a path of an in-process node's operations endpoint: (status, body), errors included."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{node.ops.port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def model_geometry(frame: FrameRef, family: str = "qwen2.5-vl") -> Geometry:
    """The geometry the node records for ``frame`` as a model input of ``family`` (trained pre-resize, grid)."""
    profile = PROFILES[family]
    size = profile.model_size(frame.columns, frame.rows)
    return Geometry.single(frame, size, profile.grid_size(*size))
