"""Plain helpers the tests share: configs for test nodes, waiting on a condition, reading a node's
state (its store, its metrics, its operations endpoint), walking an SR, running ``qoq-node``, talking
MLLP, and a test PKI. Fixtures (nodes, peers, processes) are in ``conftest.py``."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pydicom
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from highdicom.sr import CodedConcept

from node.app import STATE_DB_NAME
from node.config import NodeConfig, load_config
from node.egress.mllp import MllpClient
from node.findings import locate, parse_output
from node.imaging.geometry import FrameRef, Geometry
from node.mllp import END, START, MllpReader
from node.model.profiles import PROFILES
from node.results.gsps import build_presentation_state
from node.results.provenance import Provenance
from node.results.sr import build_sr
from node.store import InstanceRecord, Store, StudySummary, Verdict
from node.store.verdicts import Source
from node.testing.loopback import LOOPBACK
from node.testing.node_process import NodeProcess, replay_settings
from node.testing.synthetic import lesion_box, write_ct_study
from tests.reference import model_box

REPO = Path(__file__).resolve().parents[1]
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

#: What the test nodes' replay engine answers unless a test says otherwise: no boxes, no answer.
NO_FINDINGS = {"*": "<think>nothing to report</think>"}

T = TypeVar("T")


def loopback_settings(root: Path, replay: Mapping[str, str] | None = NO_FINDINGS) -> dict[str, str]:
    """The environment settings of a node on loopback with ephemeral ports, storing under ``root``, and
    playing back ``replay`` (None: the engine is configured otherwise)."""
    return {
        **(replay_settings(root / "replay.json", replay) if replay is not None else {}),
        "QOQ_NODE__DICOM__HOST": LOOPBACK,
        "QOQ_NODE__DICOM__PORT": "0",
        "QOQ_NODE__HTTP__HOST": LOOPBACK,
        "QOQ_NODE__HTTP__PORT": "0",
        "QOQ_NODE__STORAGE__ROOT": str(root),
        "QOQ_NODE__STORAGE__MIN_FREE_BYTES": "0",
    }


def node_config(root: Path, **sections: dict) -> NodeConfig:
    """A config for a node on loopback with ephemeral ports under ``root``, reading studies with
    the replay engine (``NO_FINDINGS``) unless ``engine`` settings are given."""
    env = {**loopback_settings(root, None if "engine" in sections else NO_FINDINGS),
           "QOQ_NODE__STUDY__STABLE_SECONDS": "1"}
    for section, values in sections.items():
        for key, value in values.items():
            env[f"QOQ_NODE__{section.upper()}__{key.upper()}"] = str(value)
    return load_config(None, environ=env)


def replay_engine(directory: Path, responses: Mapping[str, str]) -> dict:
    """The ``engine`` settings (for ``make_node``) that play back ``responses``, written under ``directory``."""
    settings = replay_settings(directory / "responses.json", responses)
    return {"backend": "replay", "replay_responses": settings["QOQ_NODE__ENGINE__REPLAY_RESPONSES"]}


#: The longest a test waits for one thing: well inside pytest-timeout's 300 s per test, so the wait fails
#: with its own message instead of the whole test being killed without one.
LONGEST_WAIT_SECONDS = 240


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until ``predicate()`` is truthy; return its value or fail, naming ``what`` was waited for."""
    assert timeout <= LONGEST_WAIT_SECONDS, f"a wait of {timeout} s would outlast pytest-timeout's limit"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s")


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


class _InProcessNode(Protocol):
    @property
    def store(self) -> Store: ...


def study_of(node: _InProcessNode, study_uid: str) -> StudySummary | None:
    """An in-process node's study, as ``qoq-node studies`` lists it (None when it has none by that UID)."""
    return next((s for s in node.store.studies.summaries() if s.study_uid == study_uid), None)


def state(node: _InProcessNode, study_uid: str) -> str:
    """An in-process node's study state ("" when it has no such study)."""
    study = study_of(node, study_uid)
    return study.state if study else ""


def stored_studies(node: NodeProcess) -> list[StudySummary]:
    """A node process's studies (running, stopped or killed), read from its state database through a
    read-only store, most recently received first."""
    store = Store(Path(node.settings["QOQ_NODE__STORAGE__ROOT"]) / STATE_DB_NAME, read_only=True)
    try:
        return store.studies.summaries()
    finally:
        store.close()


def verdicts_of(store: Store, study_uid: str) -> list[Verdict]:
    """Every verdict on a study's results (or on its key, once purged), oldest first."""
    return [verdict for verdict in store.verdicts.since(0) if verdict.study_instance_uid == study_uid]


def is_rejected(store: Store, study_uid: str, version: int | None = None) -> bool:
    """Whether an IOCM rejection marks the study's result rejected (of ``version``, when given; a rejection
    whose version is not known rejects every version). An API 'reject' is a verdict only: it rejects nothing."""
    return any(verdict.source == Source.IOCM and (version is None or verdict.version in (None, version))
               for verdict in verdicts_of(store, study_uid))


def report_count(store: Store, waiting: bool | None = None) -> int:
    """How many reports are kept (``waiting``: only those unmatched; False: only those matched)."""
    condition = {None: "1", True: "study_uid IS NULL", False: "study_uid IS NOT NULL"}[waiting]
    with store.database.reading() as db:
        return int(db.execute(f"SELECT COUNT(*) FROM reports WHERE {condition}").fetchone()[0])


def instance_record(sop: str, study: str = "1.2.3", at: float = 100.0) -> InstanceRecord:
    """A CT instance's row as the receiver records it (file ``spool/STUDY/SOP.dcm``, from ``PACS``)."""
    return InstanceRecord(sop, study, "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
                          "CT", f"spool/{study}/{sop}.dcm", 10, "PACS", at)


def get(node, path: str) -> tuple[int, str]:
    """GET a path of an in-process node's operations endpoint: (status, body), errors included."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{node.web.port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def qoq_node(*arguments: str, env: Mapping[str, str] | None = None, check: bool = True,
             timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``qoq-node ARGUMENTS`` (as ``python -m node``) from the repository, with ``env`` over this
    process's environment; with ``check`` a non-zero exit fails the test with its stderr."""
    run = subprocess.run([sys.executable, "-m", "node", *arguments], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, **(env or {})}, timeout=timeout)
    if check:
        assert run.returncode == 0, f"qoq-node {' '.join(arguments)} exited {run.returncode}: {run.stderr}"
    return run


def start_in_foreground(command: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``command`` from the repository (its stdout and stderr piped, as text) as a terminal starts a
    command in the foreground: with SIGINT (Ctrl-C) at its default, which Python makes a KeyboardInterrupt.
    It would inherit an ignored SIGINT (this process started as a background job of a non-interactive shell)
    across exec; a handled one is reset to its default there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(list(command), cwd=REPO, env=os.environ.copy(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)


def model_geometry(frame: FrameRef, family: str = "qwen2.5-vl") -> Geometry:
    """The geometry the node records for ``frame`` as a model input of ``family`` (trained pre-resize, grid)."""
    profile = PROFILES[family]
    size = profile.model_size(frame.columns, frame.rows)
    return Geometry.single(frame, size, profile.grid_size(*size))


def result_objects(directory: Path) -> list[pydicom.Dataset]:
    """An SR and a GSPS (replay provenance) of a mass boxed on a small synthetic CT written under ``directory``."""
    sources = [pydicom.dcmread(p) for p in write_ct_study(directory / "ct", slices=2, size=128).files]
    frame = FrameRef(sources[0].SOPInstanceUID, 1, 128, 128)
    x1, y1, x2, y2 = model_box((10, 10, 40, 40), 128, 128)
    findings = locate(parse_output(f'```json\n[{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "mass"}}]\n```'
                                   "\\boxed{Mass}"), [model_geometry(frame)])
    provenance = Provenance("replay (TEST)", True)
    return [build_sr(findings, sources, provenance, 1, "ct"),
            build_presentation_state(findings, sources, provenance, 1, "ct", (40.0, 400.0))]


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information (the dataset as sent)."""
    raw = path.read_bytes()
    with pydicom.dcmread(path, stop_before_pixels=True) as ds:
        meta_length = ds.file_meta.FileMetaInformationGroupLength
    return raw[132 + 12 + meta_length :]


def sr_items(sr: pydicom.Dataset, value_type: str | None = None) -> list[pydicom.Dataset]:
    """Every content item of an SR tree, depth first (only those of ``value_type`` when given)."""
    found: list[pydicom.Dataset] = []

    def walk(items) -> None:
        for item in items:
            if value_type is None or item.get("ValueType") == value_type:
                found.append(item)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def sr_value_types(sr: pydicom.Dataset) -> set[str]:
    """Every content item's value type in the SR tree."""
    return {str(item.get("ValueType", "")) for item in sr_items(sr)}


def sr_texts(sr: pydicom.Dataset) -> list[str]:
    """Every TEXT value in an SR content tree."""
    return [str(item.TextValue) for item in sr_items(sr) if "TextValue" in item]


def sr_box(sr: pydicom.Dataset) -> tuple[str, list[float]]:
    """The referenced SOP Instance UID and the POLYLINE of the SR's first image region."""
    scoord = sr_items(sr, "SCOORD")[0]
    return scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID, list(scoord.GraphicData)


def assert_on_lesion(points: list[float], source: pydicom.Dataset, tolerance: float = 1.5) -> None:
    """The points' bounding box is the synthetic lesion's box in ``source``, within ``tolerance`` pixels."""
    x1, y1, x2, y2 = lesion_box(source)
    xs, ys = points[0::2], points[1::2]
    assert abs(min(xs) - x1) <= tolerance and abs(max(xs) - x2) <= tolerance
    assert abs(min(ys) - y1) <= tolerance and abs(max(ys) - y2) <= tolerance


def dsr2xml_errors(path: Path) -> str:
    """What dcmtk's dsr2xml (a full SR parser: templates aside, it checks the document tree) says is wrong."""
    result = subprocess.run(["dsr2xml", str(path)], capture_output=True, text=True, timeout=60)
    return "" if result.returncode == 0 and "E:" not in result.stderr else result.stderr or f"exit {result.returncode}"


def mllp_exchange(port: int, payload: bytes) -> str:
    """Send raw bytes framed as MLLP; the ACK text."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(START + payload + END)
        ack = MllpReader(connection.recv, 1_000_000).read()
    assert ack is not None, "the listener closed without answering"
    return ack.decode()


def send_hl7(port: int, message: str) -> str:
    """Send one HL7 message to a node's MLLP listener; the ACK code."""
    client = MllpClient(LOOPBACK, port, timeout_seconds=10)
    try:
        return client.send(message, message.split("\r")[0].split("|")[9]).code
    finally:
        client.close()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, key, issuer_name: x509.Name | None, issuer_key, *, ca: bool,
                 usage: ExtendedKeyUsageOID | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate and a client certificate, as PEM files."""
    files: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("qoq-test-ca", ca_key, None, ca_key, ca=True, usage=None)
    files["ca"] = directory / "ca.pem"
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"qoq-test-{role}", key, ca_cert.subject, ca_key, ca=False, usage=usage)
        files[f"{role}_key"] = directory / f"{role}.key"
        files[f"{role}_key"].write_bytes(_key_pem(key))
        files[f"{role}_cert"] = directory / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def key_object_note(referenced: Sequence[pydicom.Dataset], directory: Path, code: str, meaning: str) -> Path:
    """A Key Object Selection titled DCM ``code`` that references ``referenced`` (of one study), as a viewer or
    PACS makes one (an IHE IOCM rejection note when ``code`` is a rejection code), saved under ``directory``."""
    document = KeyObjectSelectionDocument(
        evidence=referenced, content=KeyObjectSelection(CodedConcept(code, "DCM", meaning), referenced),
        series_instance_uid=pydicom.uid.generate_uid(), series_number=99, sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1, manufacturer="Viewer Vendor")
    path = directory / f"kos-{code}-{document.SOPInstanceUID}.dcm"
    document.save_as(path)
    return path
