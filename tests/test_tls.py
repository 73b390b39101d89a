"""DICOM TLS with certificates generated here: server authentication and client certificates."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from node.config import ClientTlsConfig
from node.egress.dicom import DicomSender
from node.egress.mllp import Delivery
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import SyntheticStudy, write_ct_study
from tests.helpers import make_pki


def _tls_node(make_node, pki: dict[str, Path], require_client: bool):
    tls = {"tls__enabled": "true", "tls__certificate": pki["server_cert"], "tls__private_key": pki["server_key"]}
    if require_client:
        tls["tls__ca"] = pki["ca"]
    return make_node(dicom=tls)


def test_tls_with_client_certificates(make_node, tmp_path: Path, ct_study: SyntheticStudy, storescu, echoscu) -> None:
    pki = make_pki(tmp_path)
    node = _tls_node(make_node, pki, require_client=True)
    client = ("+tls", str(pki["client_key"]), str(pki["client_cert"]), "+cf", str(pki["ca"]))
    echo = echoscu(node.scp.port, *client)
    assert echo.returncode == 0, echo.stderr
    store = storescu(node.scp.port, list(ct_study.files[:2]), *client)
    assert store.returncode == 0, store.stderr
    assert sum(s.instances for s in node.store.studies.summaries()) == 2
    # No client certificate: the handshake fails, nothing is stored.
    anonymous = echoscu(node.scp.port, "--anonymous-tls", "+cf", str(pki["ca"]))
    assert anonymous.returncode != 0
    # Plain TCP to a TLS port fails too.
    assert echoscu(node.scp.port).returncode != 0


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
