"""PACS on loopback for demos, tests and benchmarks: a real Orthanc with its own storage, and a folder
PACS (a pynetdicom storage SCP) when Orthanc is not installed. Both are context managers that stop
what they start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from node.testing.loopback import LOOPBACK, free_port, http_json, stop_process, wait_http

#: Where Debian's orthanc-dicomweb package puts its plugin.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

if TYPE_CHECKING:
    from pynetdicom.events import Event


class Orthanc:
    """A real Orthanc on loopback with its own storage, no authentication."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: Mapping[str, tuple[str, int]] | None = None,
                 dicom_port: int | None = None, dicomweb: bool = False, settings: Mapping[str, object] | None = None):
        self.workdir = workdir.resolve()  # Orthanc reads relative paths from its config file's folder
        self.settings = dict(settings or {})  # more of Orthanc's configuration (e.g. LimitFindResults)
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
            **self.settings,
        }
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(config))
        log_path = self.workdir / "orthanc.log"
        env = {**os.environ, "TCP_NODELAY": "1"}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([executable, str(config_path)], stdout=log, stderr=log, env=env)
        wait_http(f"{self.url}/system", self.process, 60, log_path)
        return self

    def stop(self) -> None:
        """Stop Orthanc."""
        if self.process is not None:
            stop_process(self.process)

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


class FolderPacs:
    """A minimal PACS on loopback when Orthanc is not installed: a storage SCP (pynetdicom) that
    answers C-ECHO and C-STORE and writes every object it receives into ``folder``."""

    def __init__(self, folder: Path, aet: str = "DEMOPACS") -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # pynetdicom makes its SOP classes at import

        self.folder, self.aet = folder, aet
        folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=aet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        assert server is not None  # (start_server gives None only when it blocks)
        self._server = server
        self.dicom_port = server.server_address[1]

    def _store(self, event: Event) -> int:
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
