"""DICOMweb destinations on a real Orthanc (its DICOMweb plugin at /dicom-web): results by STOW-RS through the
outbox, priors by QIDO-RS and WADO-RS, and each kind of auth. A proxy in front of Orthanc
(``node.testing.dicomweb_proxy``) brings the faults and the bearer-token checks; every answer it forwards is
Orthanc's."""

from __future__ import annotations

import base64
import json
import ssl
import time
from datetime import date
from pathlib import Path

import pydicom
import pytest

from node.config import ConfigError, DestinationsConfig, DicomWebDestination, config_problems
from node.context.dicomweb import DicomWebPriors
from node.context.pacs import PacsError
from node.dicomweb.answer import parse_answer
from node.dicomweb.multipart import MultipartError, write_parts
from node.egress.dicomweb import StowSender, classify_answer
from node.egress.mllp import Delivery
from node.egress.worker import DestinationWorker, dicomweb_sender
from node.ops.metrics import Metrics
from node.results.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE
from node.store import COMPLETE, DEAD, PENDING, SENT, Store
from node.testing.dicomweb_proxy import DicomWebProxy
from node.testing.loopback import LOOPBACK, free_port, http_json
from node.testing.pacs import Orthanc
from node.testing.synthetic import restamp, write_cr_study
from tests.helpers import make_pki, metric_value, node_config, result_objects, sr_texts, state, wait_for

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


def _destination(url: str, **settings: object) -> DicomWebDestination:
    return DicomWebDestination.model_validate({"name": "archive", "url": f"{url}/dicom-web", "timeout_seconds": 10,
                                               **settings})


def _objects(directory: Path) -> list[tuple[str, Path]]:
    """The SR and GSPS written as files: (SOP Instance UID, path)."""
    written = []
    for index, dataset in enumerate(result_objects(directory)):
        path = directory / f"result{index}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        written.append((str(dataset.SOPInstanceUID), path))
    return written


def _copies(orthanc: Orthanc, sop_uid: str) -> int:
    return len(http_json(f"{orthanc.url}/tools/find", json.dumps(
        {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}).encode()))


def _queued(store: Store, objects: list[tuple[str, Path]], study_uid: str = "1.2.3") -> None:
    for uid, path in objects:
        assert store.outbox.enqueue("archive", "dicomweb", uid, str(path), study_uid, now=0)


def _worker(store: Store, destination: DicomWebDestination) -> DestinationWorker:
    """A worker for the destination whose retries wait a minute (unless a probe finds it answering)."""
    sender = dicomweb_sender(destination)
    policy = DestinationsConfig(retry_base_seconds=60, probe_seconds=5)
    return DestinationWorker("archive", sender.send, store, Metrics(), policy, seed=0, probe=sender.probe,
                             close=sender.close)


def test_results_and_priors_go_through_the_archive(orthanc: Orthanc, make_node, tmp_path: Path, storescu) -> None:
    """Orthanc holds a prior radiograph of the patient; the node finds it by QIDO-RS, retrieves it by WADO-RS
    into storage.root/context/, reads the new radiograph with it, and STOWs every result to Orthanc (the
    Encapsulated PDF report among them), where a QIDO-RS finds them."""
    prior = restamp(write_cr_study(tmp_path / "prior", size=256), PatientID="DW-0001", StudyDate="20250601")
    current = restamp(write_cr_study(tmp_path / "current", size=256), PatientID="DW-0001", StudyDate="20260101")
    for path in prior.files:
        orthanc.upload(path)
    archive = {"name": "archive", "url": f"{orthanc.url}/dicom-web/", "timeout_seconds": 10}
    node = make_node(destinations={"dicomweb": [archive], "retry_base_seconds": 0.2, "retry_cap_seconds": 1},
                     context={"pacs": "archive"})
    assert storescu(node.scp.port, list(current.files)).returncode == 0
    wait_for(lambda: state(node, current.study_uid) == COMPLETE, timeout=90)

    retrieved = sorted((node.config.storage.root / "context" / prior.study_uid).glob("*.dcm"))
    assert [pydicom.dcmread(p).SOPInstanceUID for p in retrieved] == [pydicom.dcmread(prior.files[0]).SOPInstanceUID]
    assert metric_value(node.metrics.render().decode(), "qoqnode_context_priors_retrieved_total") == 1
    items = node.store.outbox.items()
    assert items and {(i.kind, i.state) for i in items} == {("dicomweb", SENT)}
    found = http_json(f"{orthanc.url}/dicom-web/studies/{current.study_uid}/instances")
    assert {m["00080018"]["Value"][0] for m in found} == {i.key for i in items}
    [sr_match] = [m for m in found if m["00080016"]["Value"][0] == SR_CLASS]
    assert ENCAPSULATED_PDF_STORAGE in {m["00080016"]["Value"][0] for m in found}  # the AI report goes too
    [sr_id] = [i["ID"] for i in orthanc.instances(current.study_uid)
               if i["MainDicomTags"]["SOPInstanceUID"] == sr_match["00080018"]["Value"][0]]
    import io

    sr = pydicom.dcmread(io.BytesIO(orthanc.file(sr_id)))
    assert prior.study_uid in {str(item.StudyInstanceUID) for item in sr.PertinentOtherEvidenceSequence}
    assert any(f"prior CR study {prior.study_uid} of 2025-06-01" in text for text in sr_texts(sr))


def test_priors_are_found_by_date_and_only_what_the_node_reads_is_retrieved(orthanc: Orthanc, tmp_path: Path) -> None:
    """QIDO-RS by patient and date range; a series that mixes a radiograph with an SR is retrieved instance by
    instance, the SR left on the archive."""
    prior = restamp(write_cr_study(tmp_path / "prior", size=64), PatientID="DW-0002", StudyDate="20250301")
    cr = pydicom.dcmread(prior.files[0])
    [sr, _] = result_objects(tmp_path)
    sr.PatientID, sr.StudyInstanceUID, sr.SeriesInstanceUID = "DW-0002", cr.StudyInstanceUID, cr.SeriesInstanceUID
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    for path in (prior.files[0], tmp_path / "sr.dcm"):
        orthanc.upload(path)
    archive = DicomWebPriors(_destination(orthanc.url), max_instance_bytes=10**8)
    assert archive.find("DW-0002", date(2025, 3, 2), date(2026, 1, 1)) == []
    [found] = archive.find("DW-0002", date(2025, 1, 1), date(2025, 12, 31))
    assert (found.study_uid, found.study_date, found.modalities) == (prior.study_uid, "20250301", ("CR",))
    [retrieved] = archive.retrieve(prior.study_uid, tmp_path / "context" / prior.study_uid)
    assert retrieved.name == "000-00000-00000.dcm"  # series 0, instance 0, its only part
    assert pydicom.dcmread(retrieved).SOPInstanceUID == cr.SOPInstanceUID
    assert archive.retrieve("1.2.3.4", tmp_path / "nothing") == []  # a study it does not hold: no instances
    with DicomWebProxy(orthanc.url) as proxy:
        failing = DicomWebPriors(_destination(proxy.url), max_instance_bytes=10**8)
        proxy.state.faults = [503]
        with pytest.raises(PacsError, match="QIDO-RS answered HTTP 503"):
            failing.find("DW-0002", date(2025, 1, 1), date(2025, 12, 31))
        proxy.state.rewrite = lambda path: path.replace("/series/", "/nothing/")
        with pytest.raises(PacsError, match="WADO-RS answered HTTP 404"):
            failing.retrieve(prior.study_uid, tmp_path / "again")


def test_a_resend_is_stored_once(orthanc: Orthanc, tmp_path: Path) -> None:
    """Orthanc answers a second STOW-RS of the same instances 200, naming them in its Referenced SOP Sequence:
    a retry after a lost answer is harmless (the node's result UIDs are deterministic)."""
    objects = _objects(tmp_path)
    sender = StowSender(_destination(orthanc.url))
    for _ in range(2):
        assert [r.delivery for r in sender.send(objects)] == [Delivery.ACCEPTED] * 2
    assert [_copies(orthanc, uid) for uid, _ in objects] == [1, 1]
    sender.close()


def test_an_outage_then_recovery_delivers_once(orthanc: Orthanc, tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    objects = _objects(tmp_path)
    _queued(store, objects)
    with DicomWebProxy(orthanc.url) as proxy:
        worker = _worker(store, _destination(proxy.url))
        proxy.state.faults = [503, 503]  # the STOW, then the probe
        assert worker.drain_once() == 2
        assert {(i.state, i.last_error) for i in store.outbox.items()} == {(PENDING, "HTTP 503: retried later")}
        assert worker.drain_once() == 0  # waiting for their retry
        assert worker.probe_once() == 0  # still down
        assert worker.probe_once(now=time.time() + 6) == 2  # the next probe: it answers, both are due now
        assert worker.drain_once() == 2
    assert {(i.state, i.attempts) for i in store.outbox.items()} == {(SENT, 2)}
    assert [_copies(orthanc, uid) for uid, _ in objects] == [1, 1]


def test_a_conflict_is_a_dead_letter_with_the_archives_reason(orthanc: Orthanc, tmp_path: Path) -> None:
    """Orthanc answers 409 with a Failed SOP Sequence when the instances are not of the study the request names
    (the proxy sends the STOW-RS to /studies/1.2.3): each object is a dead letter with Orthanc's failure reason."""
    store = Store(tmp_path / "state.db")
    objects = _objects(tmp_path)
    _queued(store, objects)
    with DicomWebProxy(orthanc.url) as proxy:
        proxy.state.rewrite = lambda path: path.replace("/dicom-web/studies", "/dicom-web/studies/1.2.3")
        assert _worker(store, _destination(proxy.url)).drain_once() == 2
    assert {(i.state, i.last_error) for i in store.outbox.items()} == {
        (DEAD, "HTTP 409: failed, reason 0x0110 (processing failure)")}
    assert [_copies(orthanc, uid) for uid, _ in objects] == [0, 0]


def test_a_bearer_token_is_read_from_its_file_and_again_when_it_changes(orthanc: Orthanc, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    objects = _objects(tmp_path)[:1]
    with DicomWebProxy(orthanc.url) as proxy:
        sender = StowSender(_destination(proxy.url, auth={"kind": "bearer", "token_file": str(token)}))
        assert sender.send(objects)[0].delivery is Delivery.ACCEPTED
        token.write_text("second-token-rotated\n")
        assert sender.probe()
        assert [s.headers.get("Authorization") for s in proxy.state.seen] == ["Bearer first-token",
                                                                               "Bearer second-token-rotated"]


def test_oauth2_client_credentials_are_fetched_refreshed_and_renewed_on_401(orthanc: Orthanc, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    objects = _objects(tmp_path)[:1]
    with DicomWebProxy(orthanc.url) as proxy:
        proxy.state.require_token = True
        auth = {"kind": "oauth2", "token_url": f"{proxy.url}/token", "client_id": "qoq-node",
                "client_secret_file": str(secret), "scope": "dicom.write"}
        sender = StowSender(_destination(proxy.url, auth=auth))
        assert sender.send(objects)[0].delivery is Delivery.ACCEPTED
        assert sender.probe()  # the token is kept: no second token request
        [first] = proxy.state.token_requests
        assert first == {"grant_type": "client_credentials", "scope": "dicom.write",
                         "authorization": "Basic " + base64.b64encode(b"qoq-node:s3cret").decode()}
        proxy.revoke_tokens()  # the archive refuses the token it holds: one new token, the request again
        assert sender.probe() and len(proxy.state.token_requests) == 2
        assert [s.path.split("?")[0] for s in proxy.state.seen[-3:]] == ["/dicom-web/studies", "/token",
                                                                         "/dicom-web/studies"]
        proxy.state.token_lifetime = 30  # expires within the refresh margin: fetched before each use
        proxy.revoke_tokens()
        assert sender.probe() and sender.probe() and len(proxy.state.token_requests) == 4


def test_basic_auth_reaches_orthanc(orthanc_installed: None, tmp_path: Path) -> None:
    """An Orthanc with a registered user: a wrong password is a 401 (retried later: credentials are an operator's
    fix, not the object's fault); the right one, written to the file, is read without a restart and let in."""
    objects = _objects(tmp_path)[:1]
    password = tmp_path / "password"
    password.write_text("wrong horse")
    settings = {"AuthenticationEnabled": True, "RegisteredUsers": {"qoq": "right horse"}}
    with Orthanc(tmp_path / "locked", dicomweb=True, settings=settings) as locked:
        sender = StowSender(_destination(locked.url, auth={"kind": "basic", "user": "qoq",
                                                            "password_file": str(password)}))
        assert sender.send(objects)[0].delivery is Delivery.RETRY
        password.write_text("right horse\n")  # the Secret rotated
        assert sender.send(objects)[0].delivery is Delivery.ACCEPTED
        sender.close()


def test_a_stopped_worker_closes_its_archive_client(tmp_path: Path) -> None:
    """The worker's thread closes the destination's pooled client as it ends; a worker never started, at stop."""
    store = Store(tmp_path / "state.db")
    for start in (True, False):
        sender = dicomweb_sender(_destination(f"http://{LOOPBACK}:{free_port()}"))
        worker = DestinationWorker("archive", sender.send, store, Metrics(), DestinationsConfig(),
                                   probe=sender.probe, close=sender.close)
        if start:
            worker.start()
        worker.stop()
        with pytest.raises(RuntimeError, match="client has been closed"):
            sender.probe()
    store.close()


def test_https_is_checked_against_the_ca_bundle(orthanc: Orthanc, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki["server_cert"], pki["server_key"])
    objects = _objects(tmp_path)[:1]
    with DicomWebProxy(orthanc.url, tls=server) as proxy:
        assert proxy.url.startswith("https://")
        [unknown] = StowSender(_destination(proxy.url)).send(objects)  # the system's CAs do not know it
        assert (unknown.delivery, unknown.detail) == (Delivery.RETRY, "connection failed: ConnectError")
        [trusted] = StowSender(_destination(proxy.url, ca=str(pki["ca"]))).send(objects)
        assert trusted.delivery is Delivery.ACCEPTED


def test_nobody_listening_is_a_retry(tmp_path: Path) -> None:
    [result] = StowSender(_destination(f"http://{LOOPBACK}:{free_port()}")).send(_objects(tmp_path)[:1])
    assert (result.delivery, result.detail) == (Delivery.RETRY, "connection failed: ConnectError")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, None, (Delivery.ACCEPTED, "stored")),
    (202, {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]},
                                               "00081196": {"vr": "US", "Value": [0xB000]}}]}},
     (Delivery.ACCEPTED, "stored with warning 0xB000 (coercion of data elements)")),
    (202, {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2"]},
                                               "00081197": {"vr": "US", "Value": [0xA700]}}]}},
     (Delivery.RETRY, "HTTP 202: failed, reason 0xA700 (out of resources)")),
    (202, {}, (Delivery.RETRY, "HTTP 202: the answer does not name the object")),
    (400, None, (Delivery.REJECTED, "HTTP 400: refused")),
    (413, None, (Delivery.REJECTED, "HTTP 413: refused")),
    (401, None, (Delivery.RETRY, "HTTP 401: retried later")),
    (429, None, (Delivery.RETRY, "HTTP 429: retried later")),
    (502, None, (Delivery.RETRY, "HTTP 502: retried later")),
])
def test_stow_answers_are_classified_per_object(status: int, body: dict | None,
                                                expected: tuple[Delivery, str]) -> None:
    answer = parse_answer("application/dicom+json", json.dumps(body)) if body is not None else None
    result = classify_answer(status, answer, "1.2")
    assert (result.delivery, result.detail) == expected


def test_an_xml_answer_is_read_too() -> None:
    xml = ('<?xml version="1.0"?><NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
           '<DicomAttribute tag="00081198" vr="SQ"><Item number="1">'
           '<DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3</Value></DicomAttribute>'
           '<DicomAttribute tag="00081197" vr="US"><Value number="1">49152</Value></DicomAttribute>'
           '</Item></DicomAttribute></NativeDicomModel>')
    answer = parse_answer("application/dicom+xml", xml)
    assert answer is not None and answer.failed == {"1.2.3": 0xC000}
    assert parse_answer("application/dicom+json", "not json") is None


def test_a_wado_answer_is_written_part_by_part_whatever_its_chunks(tmp_path: Path) -> None:
    parts = [b"DICM" + bytes(range(256)) * 40, b"\r\n--not-the-boundary\r\n" * 3]
    body = b"".join(b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    body += b"--b0undary\r\nContent-Type: application/octet-stream\r\n\r\nbulk\r\n--b0undary--\r\n"
    chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
    content_type = 'multipart/related; type="application/dicom"; boundary=b0undary'
    written = write_parts(content_type, chunks, tmp_path / "out", "s-", 1 << 20)
    assert [p.name for p in written] == ["s-00000.dcm", "s-00001.dcm"]
    assert [p.read_bytes() for p in written] == parts
    with pytest.raises(MultipartError, match="ended before its closing boundary"):
        write_parts(content_type, [body[:100]], tmp_path / "cut", "", 1 << 20)
    with pytest.raises(MultipartError, match="larger than"):
        write_parts(content_type, [body], tmp_path / "big", "", 100)
    assert [p.name for p in (tmp_path / "cut").iterdir()] == [] == [p.name for p in (tmp_path / "big").iterdir()]


def test_the_configuration_checks_what_auth_needs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auth kind oauth2 needs token_url, client_secret_file"):
        _destination("http://archive", auth={"kind": "oauth2", "client_id": "x"})
    config = node_config(tmp_path, destinations={"dicomweb": [{"name": "cloud", "url": "https://dicom.example/v1",
                                                               "auth": {"kind": "bearer",
                                                                        "token_file": "/nowhere/token"}}]},
                         context={"pacs": "cloud"})
    assert config.context.pacs == "cloud"
    assert config_problems(config) == ["destinations.dicomweb.0.auth: token_file /nowhere/token is not a readable "
                                       "file"]
    with pytest.raises(ConfigError, match=r"not a destinations\.dicom or destinations\.dicomweb entry"):
        node_config(tmp_path, context={"pacs": "elsewhere"})
