"""DICOM TLS with certificates generated here: server authentication and client certificates."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.config import ClientTlsConfig
from node.egress.dicom import DicomSender
from node.egress.mllp import Delivery
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import SyntheticStudy, write_ct_study
from tests.helpers import make_pki, metric_value


def _tls_node(make_node, pki: dict[str, Path], require_client: bool):
    tls = {"tls__enabled": "true", "tls__certificate": pki["server_cert"], "tls__private_key": pki["server_key"]}
    if require_client:
        tls["tls__ca"] = pki["ca"]
    return make_node(dicom=tls)


def _refusal(port: int, ca: Path, certificate: Path | None = None, key: Path | None = None) -> ssl.SSLError:
    """Why a TLS client (trusting ``ca``, presenting ``certificate`` if given) is refused by the node at ``port``:
    the TLS error it gets, in the handshake or (TLS 1.3: the server judges the client's certificate after it)
    on its first read."""
    context = ssl.create_default_context(cafile=str(ca))
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(key))
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw, pytest.raises(ssl.SSLError) as refused, \
            context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
        tls.recv(1)
    return refused.value


def _associations(node) -> float:
    """Associations the node has accepted so far."""
    return metric_value(node.metrics.render().decode(), "qoqnode_dicom_associations_total")


def test_tls_with_client_certificates(make_node, tmp_path: Path, ct_study: SyntheticStudy, storescu, echoscu) -> None:
    pki = make_pki(tmp_path)
    node = _tls_node(make_node, pki, require_client=True)
    client = ("+tls", str(pki["client_key"]), str(pki["client_cert"]), "+cf", str(pki["ca"]))
    echo = echoscu(node.scp.port, *client)
    assert echo.returncode == 0, echo.stderr
    store = storescu(node.scp.port, list(ct_study.files[:2]), *client)
    assert store.returncode == 0, store.stderr
    assert sum(s.instances for s in node.store.studies.summaries()) == 2
    accepted = _associations(node)
    assert accepted == 2
    # No client certificate: the handshake fails, nothing is stored.
    anonymous = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(pki["ca"]))
    assert anonymous.returncode != 0 and "Association Request Failed" in anonymous.stderr, anonymous.stderr
    assert _refusal(node.scp.port, pki["ca"]).reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    # Plain TCP to a TLS port fails too.
    plain = echoscu(node.scp.port)
    assert plain.returncode != 0 and "Association Request Failed" in plain.stderr, plain.stderr
    assert _associations(node) == accepted  # no refused client got as far as an association
    # and the node still serves a client with a good certificate
    assert echoscu(node.scp.port, *client).returncode == 0
    assert _associations(node) == accepted + 1
    assert sum(s.instances for s in node.store.studies.summaries()) == 2


def test_tls_server_only_accepts_anonymous_clients_and_they_verify_the_server(make_node, tmp_path: Path,
                                                                              echoscu) -> None:
    pki = make_pki(tmp_path)
    node = _tls_node(make_node, pki, require_client=False)
    echo = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(pki["ca"]))
    assert echo.returncode == 0, echo.stderr
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    untrusted = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(other["ca"]))
    assert untrusted.returncode != 0  # the client does not trust a server signed by another CA
    assert "Association Request Failed" in untrusted.stderr, untrusted.stderr
    refused = _refusal(node.scp.port, other["ca"])
    assert isinstance(refused, ssl.SSLCertVerificationError) and refused.reason == "CERTIFICATE_VERIFY_FAILED"
    assert _associations(node) == 1  # only the trusting client's
    again = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(pki["ca"]))  # the node still serves
    assert again.returncode == 0, again.stderr


def test_results_go_to_a_tls_pacs_that_verifies_the_node(make_node, tmp_path: Path) -> None:
    """The storage SCU side: the node sends over TLS, verifies the PACS against the CA and presents
    its client certificate (here the PACS is another node requiring client certificates)."""
    pki = make_pki(tmp_path)
    pacs = _tls_node(make_node, pki, require_client=True)
    study = write_ct_study(tmp_path / "ct", slices=1, size=32)
    dataset = pydicom.dcmread(study.files[0])
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    tls = ClientTlsConfig(enabled=True, ca=pki["ca"], certificate=pki["client_cert"], private_key=pki["client_key"])
    [sent] = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, pacs.scp.port, 5, tls).send([dataset])
    assert sent.delivery is Delivery.ACCEPTED, sent.detail
    assert pacs.store.instances.stored(dataset.SOPInstanceUID) is not None
    anonymous = ClientTlsConfig(enabled=True, ca=pki["ca"])  # no client certificate: the PACS refuses
    [refused] = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, pacs.scp.port, 5, anonymous).send([dataset])
    assert refused.delivery is Delivery.RETRY
    assert refused.detail == "association aborted", refused.detail
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    [after] = DicomSender("QOQNODE", "QOQNODE", LOOPBACK, pacs.scp.port, 5, tls).send([dataset])  # still served
    assert after.delivery is Delivery.ACCEPTED, after.detail
    assert pacs.store.instances.stored(dataset.SOPInstanceUID) is not None
