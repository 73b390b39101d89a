"""Peers that misbehave (issue 26, items 1-5): each raw-PDU case ends its association cleanly or answers it
with a status. After each, C-ECHO works, no study is left ``receiving``, and both the associations-open
gauge and ``open_associations()`` are back at 0."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid
from structlog.testing import capture_logs

from node.config import DicomConfig
from node.ingest import hygiene
from node.testing.raw_peer import (
    COMMAND_LAST,
    CT_IMAGE_STORAGE,
    DATA_LAST,
    DATA_MORE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    RELEASE_RQ,
    VERIFICATION,
    RawPeer,
    echo_command,
    encode_implicit,
    p_data,
    p_data_header,
    store_command,
)
from tests.helpers import metric_value, state, wait_for

CONTEXTS = {1: (CT_IMAGE_STORAGE, IMPLICIT_LE), 3: (VERIFICATION, IMPLICIT_LE), 5: (CT_IMAGE_STORAGE, EXPLICIT_LE)}
#: A Sequence Delimitation Item (FFFE,E0DD), length 0.
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def ct_dataset(study_uid: str, sop_instance: str | None = None, size: int = 16) -> tuple[str, bytes]:
    """A small CT image of ``study_uid``: its SOP Instance UID and its Implicit VR Little Endian encoding."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance or generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "RAW-1", "RAW^PEER", "CT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = np.zeros((size, size), np.uint16).tobytes()
    return str(ds.SOPInstanceUID), encode_implicit(ds)


def store_raw(peer: RawPeer, context_id: int, sop: str, data: bytes, message_id: int = 1) -> int:
    """C-STORE ``data`` (its SOP Instance UID ``sop``) on ``context_id``; the status answered."""
    peer.send(p_data((context_id, COMMAND_LAST, store_command(sop, message_id)))
              + p_data((context_id, DATA_LAST, data)))
    return peer.status_of_response()


def store(peer: RawPeer, study_uid: str, message_id: int = 1) -> int:
    """C-STORE one small CT image of ``study_uid`` on context 1; the status answered."""
    return store_raw(peer, 1, *ct_dataset(study_uid), message_id=message_id)


def echo_status(port: int) -> int:
    """A C-ECHO on a fresh association; its status."""
    peer = RawPeer(port)
    try:
        peer.associate({3: (VERIFICATION, IMPLICIT_LE)})
        peer.send(p_data((3, COMMAND_LAST, echo_command())))
        return peer.status_of_response()
    finally:
        peer.close()


def assert_recovered(node, study_uid: str | None = None) -> None:
    """C-ECHO works, the study is not left receiving, and nothing counts an open association."""
    assert echo_status(node.scp.port) == 0
    wait_for(lambda: node.scp.open_associations() == 0, timeout=15, what="open_associations() back to 0")
    gauge = metric_value(node.metrics.render().decode(), "qoqnode_dicom_associations_open")
    assert gauge == 0
    if study_uid is not None:
        wait_for(lambda: state(node, study_uid) not in ("", "receiving"), timeout=15,
                 what="the study to leave receiving")


@pytest.mark.parametrize("bad", [
    pytest.param(p_data((99, COMMAND_LAST, store_command("1.2.3.99"))), id="p-data-on-an-unknown-context"),
    pytest.param(p_data((1, COMMAND_LAST, b"\x00" * 7 + b"\xff" * 21)), id="garbage-command-set"),
])
def test_a_broken_pdu_after_a_stored_instance_ends_the_association_and_frees_its_study(make_node, capfd,
                                                                                      bad) -> None:
    """Item 1: a P-DATA on a presentation context never proposed (pynetdicom's thread died on a KeyError) or a
    command set that does not decode (an AttributeError in pynetdicom's decoder): the association is aborted,
    its study goes on to be read, and neither a phantom association nor the gauge is left counting."""
    node = make_node()
    study_uid = generate_uid()
    for _ in range(3):
        peer = RawPeer(node.scp.port)
        peer.associate(CONTEXTS)
        assert store(peer, study_uid) == 0
        with capture_logs() as events:
            peer.send(bad)
            assert peer.ended()
        peer.close()
        assert [e["event"] for e in events if e["log_level"] == "warning"] == ["association.protocol_error"]
    assert_recovered(node, study_uid)
    assert "Traceback" not in capfd.readouterr().err  # nothing but the node's events
    started = time.monotonic()
    node.stop(drain_seconds=30)  # nothing phantom to drain
    assert time.monotonic() - started < 5


def test_half_sent_association_requests_leave_no_association_counted(make_node) -> None:
    """Item 1: connections that sent half an A-ASSOCIATE-RQ are closed after the association request time,
    and ``open_associations()`` (what a stop drains) is back at 0 with them, not 3 of 3."""
    node = make_node(dicom={"association_request_seconds": 1})
    half = [RawPeer(node.scp.port) for _ in range(3)]
    for peer in half:
        peer.send(struct.pack(">BBI", 0x01, 0x00, 200) + b"\x00\x01")  # 6 of 206 bytes
    assert all(peer.ended(within=5) for peer in half)
    wait_for(lambda: hygiene.pending_connections() == 0, timeout=10)
    assert_recovered(node)
    started = time.monotonic()
    node.stop(drain_seconds=30)
    assert time.monotonic() - started < 5


def test_an_idle_huge_association_request_does_not_hold_up_a_stop(make_node) -> None:
    """Item 1: a connection that announced a 500 kB A-ASSOCIATE-RQ and went quiet holds no stop up: nothing
    established is drained, the stop is over in seconds, not the drain's 30 s."""
    node = make_node(dicom={"association_request_seconds": 60})
    peer = RawPeer(node.scp.port)
    peer.send(struct.pack(">BBI", 0x01, 0x00, 500_000) + b"\x00\x01")
    wait_for(lambda: hygiene.pending_connections() == 1)
    started = time.monotonic()
    node.stop(drain_seconds=30)
    assert time.monotonic() - started < 5
    assert peer.ended(within=5)
    peer.close()
    wait_for(lambda: hygiene.pending_connections() == 0, timeout=5)  # its thread ended too


def test_the_node_announces_a_bounded_maximum_pdu_length_by_default(make_node) -> None:
    """Item 2: with the default configuration the A-ASSOCIATE-AC announces a bounded maximum length (0 would
    let a sender put a 600 MB dataset in one PDU, which pynetdicom reads whole into memory)."""
    node = make_node()
    peer = RawPeer(node.scp.port)
    try:
        announced = peer.associate(CONTEXTS)
    finally:
        peer.close()
    assert announced == DicomConfig().max_pdu_bytes
    assert 0 < announced <= 4 << 20


def _store_in_pdus_of(peer: RawPeer, study_uid: str, pdu_length: int) -> None:
    """Send a C-STORE of a small CT image whose dataset travels in P-DATA-TF PDUs of ``pdu_length`` bytes
    (the last one shorter)."""
    sop, data = ct_dataset(study_uid, size=64)
    peer.send(p_data((1, COMMAND_LAST, store_command(sop))))
    step = pdu_length - 6  # a PDU of one PDV: the item's 4-byte length, context id and control header
    for at in range(0, len(data), step):
        last = at + step >= len(data)
        peer.send(p_data((1, DATA_LAST if last else DATA_MORE, data[at:at + step])))


def test_a_pdu_up_to_the_announced_length_is_taken_and_a_longer_one_aborted_before_it_is_read(make_node,
                                                                                             capfd) -> None:
    """Item 2: PDUs as long as the maximum the node announced are taken; one a byte longer is refused with an
    A-ABORT as its header arrives (its body is never read: here it is never even sent), logged."""
    node = make_node(dicom={"max_pdu_bytes": 4096})
    study_uid = generate_uid()
    peer = RawPeer(node.scp.port)
    assert peer.associate(CONTEXTS) == 4096
    _store_in_pdus_of(peer, study_uid, 4096)
    assert peer.status_of_response() == 0
    with capture_logs() as events:
        peer.send(p_data_header(4097) + b"\x00" * 100)
        assert peer.ended(within=5)
        peer.close()
        huge = RawPeer(node.scp.port)
        huge.associate(CONTEXTS)
        huge.send(p_data_header(600_000_000) + b"\x00" * 100)  # one 600 MB PDU, announced
        assert huge.ended(within=5)
        huge.close()
    assert [(e["length"], e["limit"]) for e in events if e["event"] == "association.pdu_too_long"] == [
        (4097, 4096), (600_000_000, 4096)]
    assert_recovered(node, study_uid)
    assert "Traceback" not in capfd.readouterr().err


def test_a_huge_association_request_is_aborted_as_its_header_arrives(make_node) -> None:
    """Item 2: an A-ASSOCIATE-RQ announcing 100 MB is refused at once, not read (nor waited for) whole."""
    node = make_node(dicom={"association_request_seconds": 60})
    peer = RawPeer(node.scp.port)
    peer.send(struct.pack(">BBI", 0x01, 0x00, 100_000_000) + b"\x00\x01")
    assert peer.ended(within=5)
    peer.close()
    assert_recovered(node)


def _explicit_with_uid_as_ob(study_uid: str) -> tuple[str, bytes]:
    """A small CT image in Explicit VR Little Endian whose SOP Instance UID is encoded as OB."""
    sop, _ = ct_dataset(study_uid)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT_IMAGE_STORAGE, sop, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, generate_uid(), "RAW-1"
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, ds)
    data = encoded.getvalue()
    value = (sop + "\0" * (len(sop) % 2)).encode()
    as_ui = b"\x08\x00\x18\x00UI" + struct.pack("<H", len(value)) + value
    as_ob = b"\x08\x00\x18\x00OB\x00\x00" + struct.pack("<I", len(value)) + value
    assert as_ui in data
    return sop, data.replace(as_ui, as_ob)


@pytest.mark.parametrize("case", ["stray-sequence-delimiter", "uid-of-70-characters", "sop-instance-uid-as-ob"])
def test_a_bad_instance_is_refused_with_a_status_and_a_note_and_the_association_goes_on(make_node, case) -> None:
    """Items 3-5: a stray Sequence Delimitation Item at the top level (was stored; dcmdump could not read it), a
    70-character SOP Instance UID in the command set (pynetdicom aborted the association: no C211, no note), a
    SOP Instance UID encoded as OB (was stored, then results failed): each is refused with its status and
    kept in the quarantine with its reason, and the same association stores the next instance."""
    node = make_node()
    study_uid = generate_uid()
    if case == "stray-sequence-delimiter":
        sop, data = ct_dataset(study_uid)
        context, data, expected = 1, data + SEQUENCE_DELIMITER, (0xC210, "malformed")
    elif case == "uid-of-70-characters":
        sop, data = ct_dataset(study_uid, sop_instance="1.2." + "3" * 66)
        context, expected = 1, (0xC211, "invalid_uid")
    else:
        sop, data = _explicit_with_uid_as_ob(study_uid)
        context, expected = 5, (0xC210, "malformed")
    peer = RawPeer(node.scp.port)
    peer.associate(CONTEXTS)
    assert store_raw(peer, context, sop, data) == expected[0]
    assert store(peer, study_uid, message_id=2) == 0  # the association goes on
    peer.send(RELEASE_RQ)
    assert peer.read_pdu()[0] == 0x06
    peer.close()
    assert [item.reason for item in node.store.quarantine.items()] == [expected[1]]
    assert node.store.instances.stored(sop) is None and len(node.store.instances.study_files(study_uid)) == 1
    assert_recovered(node, study_uid)
