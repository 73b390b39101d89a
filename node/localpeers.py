"""Peers on loopback for demos, tests and benchmarks: a real Orthanc acting as the PACS, an MLLP
listener acting as the EHR, and a node running as its own process (``qoq-node serve``), each on
free ports with its own storage. All are context managers that stop what they start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from node.egress.mllp import END, START

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_json(url: str, data: bytes | None = None, timeout: float = 10.0, method: str | None = None) -> Any:
    """GET (or POST ``data`` to) a URL and decode the JSON answer."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http URL: {url}")
    method = method or ("POST" if data is not None else "GET")
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read() or b"null")


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen, timeout: float,
                log_path: Path) -> None:
    """Poll ``ready`` until it is true; fail with the process's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text()[-2000:]
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}; log: {tail}")
        if ready():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s; log: {log_path.read_text()[-2000:]}")


def _answers_http(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (loopback only)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False
    return True


def _accepts_tcp(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_http(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    _wait_until(lambda: _answers_http(url), f"{url} did not answer", process, timeout, log_path)


def _stop(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: Where Debian's orthanc-dicomweb package puts its plugin.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    """A real Orthanc on loopback with its own storage, no authentication."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: Mapping[str, tuple[str, int]] | None = None,
                 dicom_port: int | None = None, dicomweb: bool = False):
        self.workdir = workdir
        self.dicomweb = dicomweb  # serve DICOMweb at /dicom-web/ (Debian's orthanc-dicomweb plugin)
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{LOOPBACK}:{self.http_port}"

    def start(self) -> Orthanc:
        """Start Orthanc and wait until its REST API answers."""
        executable = shutil.which("Orthanc")
        if executable is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test-pacs",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {name: [aet, LOOPBACK, port] for name, (aet, port) in self.modalities.items()},
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
        }
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(config))
        log_path = self.workdir / "orthanc.log"
        env = {**os.environ, "TCP_NODELAY": "1"}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([executable, str(config_path)], stdout=log, stderr=log, env=env)
        _wait_http(f"{self.url}/system", self.process, 60, log_path)
        return self

    def stop(self) -> None:
        """Stop Orthanc."""
        if self.process is not None:
            _stop(self.process)

    def upload(self, path: Path) -> dict:
        """Upload one DICOM file over REST (``POST /instances``)."""
        return http_json(f"{self.url}/instances", path.read_bytes())

    def send_study(self, orthanc_study_id: str, modality: str, timeout: float = 300) -> dict:
        """Have Orthanc C-STORE a study to a configured modality, as a PACS would."""
        return http_json(f"{self.url}/modalities/{modality}/store", orthanc_study_id.encode(), timeout=timeout)

    def add_modality(self, name: str, aet: str, port: int) -> None:
        """Register (or update) a DICOM peer on loopback that Orthanc may send to."""
        body = json.dumps({"AET": aet, "Host": LOOPBACK, "Port": port}).encode()
        http_json(f"{self.url}/modalities/{name}", body, method="PUT")

    def study_id(self, study_uid: str) -> str:
        """Orthanc's identifier of a study, by Study Instance UID."""
        [found] = http_json(f"{self.url}/tools/lookup", study_uid.encode())
        return found["ID"]

    def instances(self, study_uid: str) -> list[dict]:
        """Every instance Orthanc holds of a study (with its main DICOM tags)."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        return http_json(f"{self.url}/tools/find", json.dumps(query).encode())

    def file(self, instance_id: str) -> bytes:
        """The DICOM file of one instance."""
        with urllib.request.urlopen(f"{self.url}/instances/{instance_id}/file", timeout=30) as response:  # noqa: S310
            return response.read()

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def replay_settings(path: Path, responses: Mapping[str, str]) -> dict[str, str]:
    """Write replay ``responses`` to ``path``; the environment that makes a node play them back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(responses)), encoding="utf-8")
    return {"QOQ_NODE__ENGINE__BACKEND": "replay", "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(path)}


class NodeProcess:
    """``qoq-node serve`` as a child process on free loopback ports. With ``replay`` (domain or "*" →
    response text) it runs the replay engine on those responses instead of a model."""

    def __init__(self, root: Path, settings: Mapping[str, str] | None = None,
                 replay: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.settings = {
            "QOQ_NODE__DICOM__HOST": LOOPBACK,
            "QOQ_NODE__DICOM__PORT": str(self.dicom_port),
            "QOQ_NODE__HTTP__HOST": LOOPBACK,
            "QOQ_NODE__HTTP__PORT": str(self.http_port),
            "QOQ_NODE__STORAGE__ROOT": str(root / "var"),
            "QOQ_NODE__STORAGE__MIN_FREE_BYTES": "0",
            **(replay_settings(root / "replay.json", replay) if replay is not None else {}),
            **(settings or {}),
        }
        self.log_path = root / "node.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the operations endpoint."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment the node runs with (also right for ``qoq-node studies``)."""
        return {**os.environ, **self.settings}

    def start(self) -> NodeProcess:
        """Start the node and wait until it is ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "node", "serve"], stdout=log, stderr=log, env=self.env
            )
        _wait_http(f"{self.url}/healthz", self.process, 60, self.log_path)
        # /healthz answers before the SCP listens: wait for the DICOM port too
        _wait_until(lambda: _accepts_tcp(self.dicom_port), f"nothing listens on port {self.dicom_port}", self.process,
                    60, self.log_path)
        return self

    def stop(self) -> None:
        """SIGTERM the node and wait for it to drain."""
        if self.process is not None:
            _stop(self.process)

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def metrics(self) -> str:
        """The node's /metrics text."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:  # noqa: S310
            return response.read().decode()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class MllpListener:
    """An EHR on loopback: an MLLP listener that keeps every message it receives and answers as
    told. ``behaviours`` is consumed one per message: an acknowledgment code (AA, AE, AR), "silent"
    (no answer), "close" (drop the connection) or "wrong-id" (an AA naming another message);
    once it is used up every message gets AA."""

    def __init__(self, behaviours: list[str] | None = None, port: int = 0) -> None:
        self.behaviours = list(behaviours or [])
        self.received: list[str] = []
        self.server = socket.create_server((LOOPBACK, port))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:  # one connection at a time, as many EHR interfaces work
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                buffer = b""
                while not self._stop.is_set():
                    try:
                        chunk = connection.recv(65536)
                    except (TimeoutError, OSError):
                        break
                    if not chunk:
                        break
                    buffer += chunk
                    if END not in buffer:
                        continue
                    message = buffer[buffer.find(START) + 1 : buffer.find(END)].decode("utf-8", "replace")
                    buffer = b""
                    self.received.append(message)
                    behaviour = self.behaviours.pop(0) if self.behaviours else "AA"
                    if behaviour == "close":
                        break
                    if behaviour == "silent":
                        continue
                    control_id = "WRONG" if behaviour == "wrong-id" else message.split("\r")[0].split("|")[9]
                    code = "AA" if behaviour == "wrong-id" else behaviour
                    ack = f"MSH|^~\\&|EHR|HOSPITAL|QOQNODE|RADIOLOGY|20260101||ACK|A{len(self.received)}|P|2.5.1\r" \
                          f"MSA|{code}|{control_id}"
                    connection.sendall(START + ack.encode() + END)

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(5)
        self.server.close()

    def __enter__(self) -> MllpListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class FolderPacs:
    """A minimal PACS on loopback when Orthanc is not installed: a storage SCP (pynetdicom) that
    answers C-ECHO and C-STORE and writes every object it receives into ``folder``."""

    def __init__(self, folder: Path, aet: str = "DEMOPACS") -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.folder, self.aet = folder, aet
        folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=aet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.dicom_port = self._server.server_address[1]

    def _store(self, event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        dataset.save_as(self.folder / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    def close(self) -> None:
        """Stop the SCP."""
        self._server.shutdown()

    def __enter__(self) -> FolderPacs:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
