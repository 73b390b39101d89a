"""The STOW-RS receiver on the node's real HTTP server (a ``qoq-node serve`` process): studies stored from
dicomweb-client and from Orthanc's own DICOMweb client are read and answered like studies that came by
C-STORE; an instance of an ignored class acknowledged and let go, and an IOCM rejection note of the node's
result read, as C-STORE does; bearer tokens (401, 403); bad bodies answered 400 or 415 with nothing
half-stored; 64 requests at once; a kill -9 right after a 200; a 600 MB instance in bounded memory."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from node.results.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE
from node.store import COMPLETE, FINISHED
from node.testing.loopback import LOOPBACK, free_port, http_json
from node.testing.node_process import NodeProcess
from node.testing.pacs import Orthanc
from node.testing.synthetic import SyntheticStudy, write_ct_study
from tests.helpers import (
    NO_FINDINGS,
    dataset_bytes,
    key_object_note,
    make_pki,
    metric_value,
    stored_studies,
    wait_for,
)

TOKENS = {"CLOUDPACS": "cloud-pacs-token-0123456789", "ORTHANC": "orthanc-token-0123456789",
          "OUTSIDER": "outsider-token-0123456789"}
BOUNDARY = "qoq-test-boundary"
DICOM_MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081199", "00081197"


def stow_settings(root: Path, **more: str) -> dict[str, str]:
    """A node's settings with the STOW-RS receiver on: every client of :data:`TOKENS` known, OUTSIDER not allowed."""
    root.mkdir(parents=True, exist_ok=True)
    tokens = root / "stow-tokens.yaml"
    tokens.write_text(json.dumps([{"name": name, "token": token} for name, token in TOKENS.items()]))
    return {"QOQ_NODE__DICOMWEB__STOW__ENABLED": "true", "QOQ_NODE__DICOMWEB__STOW__TOKENS_FILE": str(tokens),
            "QOQ_NODE__DICOMWEB__STOW__ALLOWED_CLIENTS": "[CLOUDPACS, ORTHANC]",
            "QOQ_NODE__STUDY__STABLE_SECONDS": "1", **more}


def auth(client: str = "CLOUDPACS") -> dict[str, str]:
    """The Authorization header of a client of :data:`TOKENS`."""
    return {"Authorization": f"Bearer {TOKENS[client]}"}


def body(*parts: bytes, content_type: str = "application/dicom", close: bool = True) -> bytes:
    """A multipart/related body of ``parts`` (each of ``content_type``); without its closing boundary unless
    ``close``."""
    out = b"".join(f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
                   for part in parts)
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def post(node: NodeProcess, content: bytes, path: str = "/dicomweb/studies", headers: dict | None = None,
         content_type: str = DICOM_MULTIPART) -> httpx.Response:
    """POST a STOW-RS request to the node."""
    return httpx.post(node.url + path, content=content, timeout=60,
                      headers={"Content-Type": content_type, **auth(), **(headers or {})})


def spooled(node: NodeProcess, sop_instance_uid: str) -> list[Path]:
    """The node's spool files of an instance (none when it was not stored)."""
    return list((node.root / "var" / "spool").glob(f"*/{sop_instance_uid}.dcm"))


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def stow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node with the receiver on and the replay engine, for the tests that do not stop it; its results go
    by C-STORE to its own SCP (which lets them go: its own results), so that they are in its outbox."""
    root = tmp_path_factory.mktemp("stow-node")
    node = NodeProcess(root, stow_settings(root), NO_FINDINGS)
    node.settings["QOQ_NODE__DESTINATIONS__DICOM"] = json.dumps(
        [{"name": "self", "ae_title": "QOQNODE", "host": LOOPBACK, "port": node.dicom_port}])
    with node:
        yield node


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return write_ct_study(tmp_path_factory.mktemp("stow-ct"), slices=4, series=2, size=64)


def _finished(node: NodeProcess, study_uid: str):
    return wait_for(lambda: next((s for s in stored_studies(node) if s.study_uid == study_uid
                                  and s.state in FINISHED), None), 60, 0.2, f"study {study_uid} read")


def test_dicomweb_client_stores_a_study_that_is_read_and_answered(stow_node: NodeProcess,
                                                                    study: SyntheticStudy) -> None:
    client = DICOMwebClient(f"{stow_node.url}/dicomweb", headers=auth())
    answer = client.store_instances([pydicom.dcmread(path) for path in study.files], study.study_uid)
    assert {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence} == set(map(uid_of, study.files))
    assert "FailedSOPSequence" not in answer
    assert _finished(stow_node, study.study_uid).state == COMPLETE
    for path in study.files:
        [stored] = spooled(stow_node, uid_of(path))
        assert dataset_bytes(stored) == dataset_bytes(path)
        assert pydicom.dcmread(stored, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle == "CLOUDPACS"


@pytest.mark.usefixtures("orthanc_installed")
def test_orthanc_pushes_a_study_with_its_own_dicomweb_client(tmp_path: Path, stow_node: NodeProcess) -> None:
    sent = write_ct_study(tmp_path / "ct", slices=3, series=1, size=64)
    with Orthanc(tmp_path / "orthanc", dicomweb=True) as orthanc:
        server = {"Url": f"{stow_node.url}/dicomweb/", "HttpHeaders": auth("ORTHANC")}
        http_json(f"{orthanc.url}/dicom-web/servers/node", json.dumps(server).encode(), method="PUT")
        for path in sent.files:
            orthanc.upload(path)
        job = {"Resources": [orthanc.study_id(sent.study_uid)], "Synchronous": True}
        http_json(f"{orthanc.url}/dicom-web/servers/node/stow", json.dumps(job).encode(), timeout=60)
    assert _finished(stow_node, sent.study_uid).state == COMPLETE
    for path in sent.files:
        [stored] = spooled(stow_node, uid_of(path))
        assert pydicom.dcmread(stored, stop_before_pixels=True).file_meta.SourceApplicationEntityTitle == "ORTHANC"


def test_an_ignored_class_and_a_rejection_note_are_handled_as_c_store_does(
        tmp_path: Path, stow_node: NodeProcess, study: SyntheticStudy) -> None:
    """A KOS of another title (KO is in dicom.ignored_sop_classes) is acknowledged and let go; a rejection note
    of the node's SR and PDF report is read: the result rejected."""
    assert post(stow_node, body(*(path.read_bytes() for path in study.files))).status_code == 200  # (again: once)
    _finished(stow_node, study.study_uid)
    results = [pydicom.dcmread(path) for path in (stow_node.root / "var" / "results" / study.study_uid).glob("*/*.dcm")]
    [sr] = [ds for ds in results if ds.Modality == "SR"]
    [pdf] = [ds for ds in results if ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE]
    other = write_ct_study(tmp_path / "ct", slices=1, size=64)
    of_interest = key_object_note([pydicom.dcmread(other.files[0])], tmp_path, "113000", "Of Interest")
    rejection = key_object_note([sr, pdf], tmp_path, "113001", "Rejected for Quality Reasons")
    answered = _requests_answered(stow_node, "2xx")
    answer = post(stow_node, body(of_interest.read_bytes(), rejection.read_bytes()))
    assert answer.status_code == 200 and FAILED_SOP_SEQUENCE not in answer.json()
    assert {item["00081155"]["Value"][0] for item in answer.json()[REFERENCED_SOP_SEQUENCE]["Value"]} == {
        uid_of(of_interest), uid_of(rejection)}
    assert not spooled(stow_node, uid_of(of_interest)) and not spooled(stow_node, uid_of(rejection))
    assert _requests_answered(stow_node, "2xx") == answered + 1
    metrics = httpx.get(f"{stow_node.url}/metrics").text
    assert metric_value(metrics, "qoqnode_cstore_requests_total", 'outcome="ignored"') == 1
    assert metric_value(metrics, "qoqnode_cstore_requests_total", 'outcome="rejection_note"') == 1
    assert metric_value(metrics, "qoqnode_results_rejected_total", 'reason="113001"') == 1
    studies = {s.study_uid: s for s in stored_studies(stow_node)}
    assert other.study_uid not in studies and studies[study.study_uid].version == 1


def _requests_answered(node: NodeProcess, status: str) -> float:
    """``qoqnode_stow_requests_total`` of an HTTP status class (2xx, 4xx, 5xx), from the node's /metrics."""
    return metric_value(httpx.get(f"{node.url}/metrics").text, "qoqnode_stow_requests_total", f'status="{status}"')


def test_tokens(stow_node: NodeProcess, study: SyntheticStudy) -> None:
    part = body(study.files[0].read_bytes())
    refused = _requests_answered(stow_node, "4xx")
    missing = httpx.post(f"{stow_node.url}/dicomweb/studies", content=part, headers={"Content-Type": DICOM_MULTIPART})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(stow_node, part, headers={"Authorization": "Bearer not-a-known-token-at-all"}).status_code == 401
    forbidden = post(stow_node, part, headers=auth("OUTSIDER"))
    assert forbidden.status_code == 403 and "OUTSIDER" in forbidden.json()["error"]
    assert _requests_answered(stow_node, "4xx") == refused + 3


def test_wrong_content_type_is_415(stow_node: NodeProcess, study: SyntheticStudy) -> None:
    data = study.files[0].read_bytes()
    for content_type in ("application/dicom", f'multipart/related; type="application/pdf"; boundary={BOUNDARY}'):
        answer = post(stow_node, body(data), content_type=content_type)
        assert answer.status_code == 415 and answer.json()["error"]


def test_bad_bodies_store_nothing_half_and_keep_the_good_parts(tmp_path: Path, stow_node: NodeProcess) -> None:
    good, cut, mixed = (write_ct_study(tmp_path / name, slices=1, size=64).files[0] for name in ("a", "b", "c"))
    # A body cut off in its second part: 400 with the reason; the whole first part stored, nothing of the second.
    broken = post(stow_node, body(good.read_bytes(), cut.read_bytes(), close=False)[:-2000])
    assert broken.status_code == 400 and "truncated" in broken.headers["Warning"]
    assert len(broken.json()[REFERENCED_SOP_SEQUENCE]["Value"]) == 1
    assert spooled(stow_node, uid_of(good)) and not spooled(stow_node, uid_of(cut))
    assert list((stow_node.root / "var" / "tmp").iterdir()) == []
    # A part that is not DICOM alone: 400 with the reason; beside a good part: 202, the good part stored and listed.
    not_dicom = b"%PDF-1.4 not a DICOM file"
    alone = post(stow_node, body(not_dicom))
    assert alone.status_code == 400 and "DICM" in alone.headers["Warning"]
    answer = post(stow_node, body(mixed.read_bytes(), not_dicom))
    assert answer.status_code == 202
    [referenced] = answer.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    assert referenced["00081155"]["Value"] == [uid_of(mixed)] and spooled(stow_node, uid_of(mixed))
    [failed] = answer.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC000]
    assert post(stow_node, f"--{BOUNDARY}\r\nno headers end".encode()).status_code == 400


def _stalled_answer(node: NodeProcess, sent: bytes, length: int) -> tuple[float, int, dict[str, str], bytes]:
    """Send a STOW-RS request whose head says ``length`` body bytes and only ``sent`` of them, then nothing; the
    seconds until the node answered and closed the connection, and its status, headers (lower-case) and body."""
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: node\r\nContent-Type: {DICOM_MULTIPART}\r\n"
            f"Authorization: Bearer {TOKENS['CLOUDPACS']}\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection((LOOPBACK, node.http_port), timeout=30) as connection:
        connection.sendall(head + sent)
        started, data = time.monotonic(), b""
        while chunk := connection.recv(65536):  # to the end: the node closes the connection
            data += chunk
        seconds = time.monotonic() - started
    lines, _, answer = data.partition(b"\r\n\r\n")
    status, *fields = lines.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (field.partition(":") for field in fields)}
    return seconds, int(status.split()[1]), headers, answer


def test_a_body_that_stalls_in_its_third_part_is_answered_408_and_keeps_the_two_before(
        tmp_path: Path, node_process) -> None:
    """http.body_idle_seconds (2 s here): two whole parts, half of a third (big enough to be spilled to tmp/),
    then a pause. Within seconds the node answers 408 with the Store Instances Response of the two parts, which
    are stored and committed, and closes the connection (docs/conformance-statement.md); nothing of the third is
    kept. The answer is counted and logged, and the node then takes the third whole."""
    first, second = write_ct_study(tmp_path / "ct", slices=2, size=64).files
    third = _big_instance(tmp_path / "big.dcm", 10_000_000)  # its half past incoming.SPILL_BYTES: in tmp/
    node = node_process("node", stow_settings(tmp_path / "node", QOQ_NODE__STUDY__STABLE_SECONDS="600",
                                              QOQ_NODE__HTTP__BODY_IDLE_SECONDS="2"), NO_FINDINGS).start()
    whole = body(first.read_bytes(), second.read_bytes(), third.read_bytes())
    cut = whole.index(third.read_bytes()) + third.stat().st_size // 2
    tmp, spilled = node.root / "var" / "tmp", []
    with ThreadPoolExecutor(1) as pool:
        stalled = pool.submit(_stalled_answer, node, whole[:cut], len(whole))
        while not stalled.done() and not spilled:  # the half part on disk while the node waits for the rest
            spilled = list(tmp.iterdir())
            time.sleep(0.01)
        seconds, status, headers, answer = stalled.result()
    assert spilled and list(tmp.iterdir()) == []
    assert status == 408 and headers["connection"] == "close" and 1.5 < seconds < 10
    assert "request body paused over 2 s" in headers["warning"]
    response = json.loads(answer)
    assert {item["00081155"]["Value"][0] for item in response[REFERENCED_SOP_SEQUENCE]["Value"]} == {
        uid_of(first), uid_of(second)} and FAILED_SOP_SEQUENCE not in response
    [arrived] = stored_studies(node)  # the rows committed before the answer
    assert arrived.study_uid == str(pydicom.dcmread(first).StudyInstanceUID) and arrived.instances == 2
    for path in (first, second):
        [stored] = spooled(node, uid_of(path))
        assert dataset_bytes(stored) == dataset_bytes(path)
    assert not spooled(node, uid_of(third))
    assert _requests_answered(node, "4xx") == 1
    [logged] = [event for line in node.log_path.read_text().splitlines() if line.startswith("{")
                for event in [json.loads(line)] if event["event"] == "stow.request"]
    assert {"status": 408, "parts": 2, "stored": 2, "error": "request body paused over 2 s"}.items() <= logged.items()
    assert post(node, body(third.read_bytes())).status_code == 200  # the node serves on
    [stored] = spooled(node, uid_of(third))
    assert stored.stat().st_size >= third.stat().st_size - 1024


def test_an_instance_of_another_study_than_the_path_names_is_refused(stow_node: NodeProcess,
                                                                        tmp_path: Path) -> None:
    path = write_ct_study(tmp_path / "ct", slices=1, size=64).files[0]
    answer = post(stow_node, body(path.read_bytes()), path="/dicomweb/studies/1.2.826.0.1.3680043.2.1125.1",
                  headers={"Accept": "application/dicom+xml"})
    assert answer.status_code == 409 and answer.headers["content-type"].startswith("application/dicom+xml")
    assert '<DicomAttribute tag="00081197" vr="US" keyword="FailureReason"><Value number="1">43264</Value>' \
        in answer.text
    assert not spooled(stow_node, uid_of(path))
    notes = [json.loads(note.read_text()) for note in (stow_node.root / "var" / "quarantine").glob("*.json")]
    assert any({"reason": "study_mismatch", "calling_ae": "CLOUDPACS"}.items() <= note.items() for note in notes)


def test_64_parallel_requests_are_all_answered(tmp_path: Path, stow_node: NodeProcess) -> None:
    files = write_ct_study(tmp_path / "ct", slices=64, size=64).files
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda path: post(stow_node, body(path.read_bytes())), files))
    assert [answer.status_code for answer in answers] == [200] * 64
    assert all(spooled(stow_node, uid_of(path)) for path in files)


def test_its_own_https_listener_asks_for_client_certificates(tmp_path: Path, node_process,
                                                              study: SyntheticStudy) -> None:
    pki, port = make_pki(tmp_path), free_port()
    tls = {"ENABLED": "true", "CERTIFICATE": pki["server_cert"], "PRIVATE_KEY": pki["server_key"], "CA": pki["ca"]}
    node = node_process("node", stow_settings(tmp_path / "node", QOQ_NODE__DICOMWEB__STOW__PORT=str(port), **{
        f"QOQ_NODE__DICOMWEB__STOW__TLS__{key}": str(value) for key, value in tls.items()}), NO_FINDINGS).start()
    url, part = f"https://{LOOPBACK}:{port}/dicomweb/studies", body(study.files[0].read_bytes())
    headers = {"Content-Type": DICOM_MULTIPART, **auth()}
    client_context = ssl.create_default_context(cafile=pki["ca"])
    client_context.load_cert_chain(pki["client_cert"], pki["client_key"])
    assert httpx.post(url, content=part, headers=headers, verify=client_context).status_code == 200
    with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
        httpx.post(url, content=part, headers=headers, verify=ssl.create_default_context(cafile=pki["ca"]))
    assert post(node, part).status_code == 404  # not on the port of /metrics and the probes
    node.stop()


def test_kill_9_right_after_the_200_loses_nothing(tmp_path: Path, node_process) -> None:
    sent = write_ct_study(tmp_path / "ct", slices=20, size=64)
    node = node_process("node", stow_settings(tmp_path / "node", QOQ_NODE__STUDY__STABLE_SECONDS="600"),
                        NO_FINDINGS).start()
    answer = post(node, body(*(path.read_bytes() for path in sent.files)))
    node.kill()
    assert answer.status_code == 200
    [arrived] = stored_studies(node)
    assert arrived.instances == 20
    for path in sent.files:
        [stored] = spooled(node, uid_of(path))
        assert dataset_bytes(stored) == dataset_bytes(path)


def _big_instance(path: Path, pixel_bytes: int) -> Path:
    """A CT instance on disk whose Pixel Data is ``pixel_bytes`` long, written without holding it in memory."""
    [template] = write_ct_study(path.parent / "template", slices=1, size=64).files
    ds = pydicom.dcmread(template)
    side = int((pixel_bytes // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    length = side * side * 2
    with path.open("ab") as out:
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        out.truncate(out.tell() + length)  # sparse zeros: written, never held
    return path


def _peak_kib(node: NodeProcess) -> int:
    """The node process's peak resident memory so far (VmHWM), in KiB."""
    status = Path(f"/proc/{node.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


@pytest.mark.slow
def test_a_600_mb_instance_in_bounded_memory(tmp_path: Path, node_process) -> None:
    big = _big_instance(tmp_path / "big.dcm", 600_000_000)
    node = node_process("node", stow_settings(tmp_path / "node", QOQ_NODE__STUDY__STABLE_SECONDS="600"),
                        NO_FINDINGS).start()
    try:
        def stream() -> Iterator[bytes]:
            yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            with big.open("rb") as source:
                while chunk := source.read(1 << 20):
                    yield chunk
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        before_kib = _peak_kib(node)
        answer = httpx.post(node.url + "/dicomweb/studies", content=stream(), timeout=120,
                            headers={"Content-Type": DICOM_MULTIPART, **auth()})
        assert answer.status_code == 200, answer.text
        peak_kib = _peak_kib(node)
        print(f"node peak RSS {peak_kib / 1024:.0f} MiB (before {before_kib / 1024:.0f} MiB) for a "
              f"{big.stat().st_size / 1e6:.0f} MB instance")
        assert peak_kib - before_kib < 64 * 1024
        [stored] = spooled(node, uid_of(big))
        assert stored.stat().st_size >= big.stat().st_size - 1024
    finally:
        node.stop()
