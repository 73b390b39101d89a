"""Prior studies from a DICOMweb archive (a ``destinations.dicomweb`` entry that ``context.pacs`` names): the
patient's studies found by QIDO-RS (PatientID and a StudyDate range), their instances listed by QIDO-RS, and
the ones the node reads (``RETRIEVABLE``, as the C-GET path asks for) retrieved by WADO-RS — a series at
once when all of it is wanted, else instance by instance — each part written as it arrives into the same
folder the C-GET path writes. Every failure is a :class:`PacsError`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from node.config import DicomWebDestination
from node.context.pacs import RETRIEVABLE, FoundStudy, PacsError
from node.dicomweb.auth import TokenError
from node.dicomweb.client import close_client, open_client
from node.dicomweb.multipart import MultipartError, write_parts
from node.dicomweb.response_module import JSON_MEDIA_TYPE
from node.uids import is_uid

#: Every instance as the archive holds it (the node decodes every transfer syntax its SCP accepts).
INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_STUDY_FIELDS = ("StudyInstanceUID", "ModalitiesInStudy", "StudyDate", "StudyTime", "StudyDescription",
                 "AccessionNumber")
_TAGS = {"StudyInstanceUID": "0020000D", "ModalitiesInStudy": "00080061", "StudyDate": "00080020",
         "StudyTime": "00080030", "StudyDescription": "00081030", "AccessionNumber": "00080050",
         "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018", "SOPClassUID": "00080016"}
_WANTED_CLASSES = {str(sop_class) for sop_class in RETRIEVABLE}


def _values(match: dict[str, Any], keyword: str) -> list[str]:
    return [str(v) for v in (match.get(_TAGS[keyword]) or {}).get("Value") or [] if v is not None]


def _first(match: dict[str, Any], keyword: str) -> str:
    values = _values(match, keyword)
    return values[0] if values else ""


def _uid(match: dict[str, Any], keyword: str) -> str:
    """A UID of a match ("" when absent or not a UID)."""
    value = _first(match, keyword)
    return value if is_uid(value) else ""  # what goes into a URL and a folder name: nothing else is taken


class DicomWebPriors:
    """Queries and retrieves one DICOMweb archive for a patient's prior studies."""

    def __init__(self, destination: DicomWebDestination, max_instance_bytes: int) -> None:
        self._destination, self._max_instance_bytes = destination, max_instance_bytes
        self._client = open_client(destination)

    def close(self) -> None:
        """Close the client's connections (and its token endpoint's)."""
        close_client(self._client)

    def _get(self, path: str, params: Iterable[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """A QIDO-RS query's matches (204: none)."""
        try:
            response = self._client.get(path, params=list(params), headers={"Accept": JSON_MEDIA_TYPE})
        except (httpx.HTTPError, TokenError, OSError) as exc:
            raise PacsError(f"QIDO-RS to {self._destination.name} failed: {type(exc).__name__}") from None
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise PacsError(f"QIDO-RS answered HTTP {response.status_code}", response.status_code)
        try:
            matches = response.json()
        except ValueError:
            raise PacsError("QIDO-RS answer is not JSON") from None
        if not isinstance(matches, list):
            raise PacsError("QIDO-RS answer is not a list of matches")
        return [match for match in matches if isinstance(match, dict)]

    def find(self, patient_id: str, since: date, until: date) -> list[FoundStudy]:
        """The patient's studies dated within [since, until]."""
        params = [("PatientID", patient_id), ("StudyDate", f"{since:%Y%m%d}-{until:%Y%m%d}")]
        params += [("includefield", keyword) for keyword in _STUDY_FIELDS]  # repeated: some archives ignore a list
        return [FoundStudy(_uid(match, "StudyInstanceUID"), tuple(_values(match, "ModalitiesInStudy")),
                           _first(match, "StudyDate"), _first(match, "StudyTime"), _first(match, "StudyDescription"),
                           _first(match, "AccessionNumber"))
                for match in self._get("studies", params) if _uid(match, "StudyInstanceUID")]

    def _retrieve(self, path: str, directory: Path, prefix: str) -> list[Path]:
        """WADO-RS of ``path`` into ``directory``, each instance written as it arrives."""
        try:
            with self._client.stream("GET", path, headers={"Accept": INSTANCES}) as response:
                if response.status_code != 200:
                    raise PacsError(f"WADO-RS answered HTTP {response.status_code}", response.status_code)
                return write_parts(response.headers.get("Content-Type", ""), response.iter_bytes(), directory,
                                   prefix, self._max_instance_bytes)
        except (httpx.HTTPError, TokenError, OSError, MultipartError) as exc:
            detail = str(exc) if isinstance(exc, MultipartError) else type(exc).__name__
            raise PacsError(f"WADO-RS from {self._destination.name} failed: {detail}") from None

    def retrieve(self, study_uid: str, directory: Path) -> list[Path]:
        """WADO-RS the study's instances the node reads into ``directory`` (one file each, durably); its files."""
        series: dict[str, list[tuple[str, bool]]] = {}
        for match in self._get(f"studies/{study_uid}/instances", [("includefield", "SOPClassUID")]):
            series_uid, sop_uid = _uid(match, "SeriesInstanceUID"), _uid(match, "SOPInstanceUID")
            if series_uid and sop_uid:
                wanted = _first(match, "SOPClassUID") in _WANTED_CLASSES
                series.setdefault(series_uid, []).append((sop_uid, wanted))
        written: list[Path] = []
        for number, (series_uid, instances) in enumerate(sorted(series.items())):
            base = f"studies/{study_uid}/series/{series_uid}"
            if all(wanted for _, wanted in instances):
                written += self._retrieve(base, directory, f"{number:03d}-")
                continue
            for index, (sop_uid, wanted) in enumerate(instances):
                if wanted:
                    written += self._retrieve(f"{base}/instances/{sop_uid}", directory, f"{number:03d}-{index:05d}-")
        return written
