"""The HL7 listener over real MLLP connections: what is kept before the ACK, AA/AE/AR, quarantine,
resends; a kill -9 right after an ACK loses nothing; no clinical context or identifier in the logs."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.ingest.hl7v2 import parse
from node.mllp import START, MllpReader
from node.store import Store
from node.store.clinical import patient_key
from node.testing.loopback import LOOPBACK, free_port
from node.testing.node_process import NodeProcess
from node.testing.synthetic import restamp, write_cr_study
from node.testing.synthetic_hl7 import LabValue, lab_message, merge_message, order_message
from tests.helpers import metric_value, mllp_exchange, wait_for


def _msa(ack: str) -> list[str]:
    return next(segment for segment in ack.split("\r") if segment.startswith("MSA")).split("|")


def _strict(ack: str) -> None:
    parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT)


@pytest.fixture
def listening(make_node):
    return make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0,
                                   "allowed_sending_applications": "[RIS, LIS, EHR]"},
                     context={"default_authority": "HOSP"})


def test_an_order_is_kept_before_its_aa_and_a_resend_is_kept_once(listening) -> None:
    node = listening
    message = order_message("ORD-1", "PAT-1", "ACC-1", "cough", "smoker")
    for _ in range(2):
        ack = mllp_exchange(node.hl7.port, message.encode())
        _strict(ack)
        assert _msa(ack)[1:3] == ["AA", "ORD-1"]
    key = patient_key("PAT-1", "HOSP")
    order = node.store.clinical.order_for(key, ("ACC-1",))
    assert order is not None and order.reason == "cough" and order.clinical_info == "smoker"
    [kept] = node.store.clinical.messages_of(key)  # the resend added nothing
    assert (node.config.storage.root / kept.path).read_bytes() == message.encode()
    text = node.metrics.render().decode()
    assert metric_value(text, "qoqnode_hl7_messages_received_total", 'outcome="accepted",type="ORM^O01"') == 1
    assert metric_value(text, "qoqnode_hl7_messages_received_total", 'outcome="duplicate",type="ORM^O01"') == 1


@pytest.mark.parametrize(("payload", "code", "reason"), [
    (b"this is not HL7", "AE", "does not begin with an MSH segment"),
    (order_message("ORD-2", "PAT-1", "ACC-2", "cough").split("\rOBR")[0].encode(), "AE", "no OBR segment"),
    (lab_message("LAB-3", "", [LabValue("10839-9", "Troponin I", "1", "ng/mL")]).encode(), "AE", "PID-3"),
    (order_message("ORD-4", "PAT-1", "ACC-4", "cough").replace("|RIS|", "|ROGUE|", 1).encode(), "AR",
     "sending application not allowed"),
    (order_message("ORD-5", "PAT-1", "ACC-5", "x").replace("ORM^O01^ORM_O01", "ADT^A01^ADT_A01").encode(), "AR",
     "message type ADT^A01 is not taken"),
])
def test_messages_the_node_cannot_use_are_answered_ae_or_ar_with_the_reason(listening, payload: bytes, code: str,
                                                                            reason: str) -> None:
    node = listening
    ack = mllp_exchange(node.hl7.port, payload)
    _strict(ack)
    assert _msa(ack)[1] == code
    assert reason in parse(ack).field("ERR", 8)  # separators in the reason escaped, not lost ("ADTA01")
    quarantined = [q for q in node.store.quarantine.items() if q.reason.startswith("HL7:")]
    if code == "AE":  # kept aside with its reason; an AR is the sender's to fix and is not kept
        [item] = quarantined
        assert reason in item.reason and Path(item.path).read_bytes() == payload
        assert reason in json.loads(Path(item.path).with_suffix(".json").read_text())["detail"]  # the note
    else:
        assert not quarantined


def test_a_merge_moves_the_old_identifier_s_results_to_the_surviving_patient(listening) -> None:
    node = listening
    assert _msa(mllp_exchange(node.hl7.port, lab_message("L1", "OLD", [LabValue("1988-5", "CRP", "88", "mg/L")])
                          .encode()))[1] == "AA"
    assert _msa(mllp_exchange(node.hl7.port, merge_message("M1", "NEW", "OLD").encode()))[1] == "AA"
    assert _msa(mllp_exchange(node.hl7.port, lab_message("L2", "OLD", [LabValue("6690-2", "WBC", "14", "10*9/L")])
                          .encode()))[1] == "AA"  # sent late under the old identifier: it follows the merge
    clinical, new = node.store.clinical, patient_key("NEW", "HOSP")
    labs = clinical.lab_results(new, ("1988-5", "6690-2"), 0, time.time() + 1e9)
    assert [lab.name for lab in labs] == ["CRP", "WBC"]
    assert clinical.lab_results(patient_key("OLD", "HOSP"), ("1988-5",), 0, time.time() + 1e9) == labs[:1]


def test_a_message_longer_than_the_limit_is_answered_ae(make_node) -> None:
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0, "max_message_bytes": 2048})
    ack = mllp_exchange(node.hl7.port, order_message("BIG", "PAT-1", "ACC", "x" * 4000).encode())
    assert _msa(ack)[1] == "AE" and "too long" in ack


def test_a_stream_without_an_end_past_the_limit_is_answered_ae_and_closed(make_node) -> None:
    """More than max_message_bytes and no end mark in sight: one AE, then the listener hangs up."""
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0, "max_message_bytes": 2048})
    with socket.create_connection((LOOPBACK, node.hl7.port), timeout=10) as connection:
        connection.sendall(START + b"MSH|" + b"x" * 4000)
        reader = MllpReader(connection.recv, 1_000_000)
        ack = reader.read()
        assert ack is not None and _msa(ack.decode())[1] == "AE" and b"too long" in ack
        assert reader.read() is None  # the listener closed the connection


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the listener closes ``connection`` within ``seconds``."""
    connection.settimeout(seconds)
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_beyond_max_connections_are_closed_at_once_and_a_freed_slot_serves_again(make_node) -> None:
    """Issue 26 item 6: ``hl7_listener.max_connections`` (as the DICOM side's pending cap is tested)."""
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0, "max_connections": 2})
    held = [socket.create_connection((LOOPBACK, node.hl7.port)) for _ in range(2)]
    try:
        time.sleep(0.5)  # both accepted, each on its thread
        extra = socket.create_connection((LOOPBACK, node.hl7.port))
        assert _closed_within(extra, 2)  # refused on accept
        extra.close()
        assert not any(_closed_within(connection, 0.3) for connection in held)
        held.pop().close()

        def answered() -> bool:
            try:
                return _msa(mllp_exchange(node.hl7.port, order_message("SLOT", "PAT-1", "ACC-S", "x").encode()))[1] \
                    == "AA"
            except AssertionError:  # closed on accept: the freed slot is not counted free yet
                return False

        wait_for(answered, timeout=5, what="a freed slot to serve a message")
    finally:
        for connection in held:
            connection.close()


def test_a_connection_silent_for_idle_timeout_seconds_is_closed_and_frees_its_slot(make_node) -> None:
    """Issue 26 item 6: ``hl7_listener.idle_timeout_seconds``: a silent connection (or one that stopped mid-message)
    is closed after it, not before, and its slot serves the next sender."""
    node = make_node(hl7_listener={"enabled": True, "host": LOOPBACK, "port": 0, "max_connections": 2,
                                   "idle_timeout_seconds": 1.5})
    silent = socket.create_connection((LOOPBACK, node.hl7.port))
    halfway = socket.create_connection((LOOPBACK, node.hl7.port))
    halfway.sendall(START + b"MSH|^~\\&|RIS")
    try:
        started = time.monotonic()
        assert not _closed_within(silent, 0.8)
        assert _closed_within(silent, 3) and _closed_within(halfway, 1)
        assert 1.2 < time.monotonic() - started < 4
        ack = mllp_exchange(node.hl7.port, order_message("IDLE", "PAT-1", "ACC-I", "x").encode())
        assert _msa(ack)[1] == "AA"
    finally:
        silent.close()
        halfway.close()


def test_kill_9_after_an_ack_loses_nothing_and_no_log_names_the_patient(tmp_path: Path, storescu) -> None:
    """The order, the lab and the study are kept across a kill -9 right after their ACKs; no log line
    carries the patient's identifier, name, the order's reason or a lab value."""
    hl7_port = free_port()
    settings = {"QOQ_NODE__HL7_LISTENER__ENABLED": "true", "QOQ_NODE__HL7_LISTENER__HOST": LOOPBACK,
                "QOQ_NODE__HL7_LISTENER__PORT": str(hl7_port), "QOQ_NODE__STUDY__STABLE_SECONDS": "1",
                "QOQ_NODE__CONTEXT__DEFAULT_AUTHORITY": "HOSP"}
    phi = ["ZEBRA-4711", "QUAGGA^OKAPI", "unexplained syncope while gardening", "4444.4"]  # (no timestamp holds it)
    study = restamp(write_cr_study(tmp_path / "cr", size=256), PatientID=phi[0], PatientName=phi[1],
                    AccessionNumber="ACC-PHI")
    node = NodeProcess(tmp_path / "first", settings, replay={"*": "<think>ok</think> \\boxed{No Finding}"}).start()
    try:
        ack = mllp_exchange(hl7_port, order_message("O-PHI", phi[0], "ACC-PHI", phi[2]).replace(
            "SYNTHETIC^PATIENT", phi[1]).encode())
        assert _msa(ack)[1] == "AA"
        lab = lab_message("L-PHI", phi[0], [LabValue("10839-9", "Troponin I", phi[3], "ng/mL", "0-0.04", "HH")])
        assert _msa(mllp_exchange(hl7_port, lab.encode()))[1] == "AA"
        assert storescu(node.dicom_port, list(study.files)).returncode == 0
        wait_for(lambda: metric_value(node.metrics(), "qoqnode_studies_read_total", 'context="with"') == 1,
                 timeout=60)
        assert _msa(mllp_exchange(hl7_port, order_message("O-LAST", phi[0], "ACC-2", phi[2]).encode()))[1] == "AA"
    finally:
        node.kill()
    store = Store(tmp_path / "first" / "var" / "state.db")
    try:
        key = patient_key(phi[0], "HOSP")
        assert [m.message_type for m in store.clinical.messages_of(key)] == ["ORM^O01", "ORU^R01", "ORM^O01"]
        assert store.clinical.order_for(key, ("ACC-2",)) is not None  # the last ACK's order
    finally:
        store.close()
    logs = (tmp_path / "first" / "node.log").read_text()
    for value in (*phi, "QUAGGA", "OKAPI", "syncope"):
        assert value not in logs
    with sqlite3.connect(tmp_path / "first" / "var" / "state.db") as db:  # identifiers are kept as keys only
        dump = "\n".join(db.iterdump())
    assert phi[0] not in dump and phi[1] not in dump


def test_a_message_that_cannot_be_recorded_is_answered_ae_and_leaves_no_file(listening, monkeypatch) -> None:
    """The database refuses the rows (full, locked): the sender is told to resend (AE) and the message file
    just written is removed, so nothing half-kept stays."""
    node = listening

    def full(*_args, **_kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(node.store.clinical, "record_message", full)
    ack = mllp_exchange(node.hl7.port, order_message("ORD-9", "PAT-9", "ACC-9", "cough").encode())
    assert _msa(ack)[1] == "AE" and "send it again later" in ack
    assert not list((node.config.storage.root / "hl7").rglob("*.hl7"))
