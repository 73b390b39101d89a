"""The MLLP client against a real loopback listener that answers as the test dictates."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.egress.mllp import Delivery, MllpClient, classify_ack
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK

MESSAGE = ("MSH|^~\\&|QOQNODE|RADIOLOGY|EHR|HOSPITAL|20260101120000||ORU^R01^ORU_R01|QOQ123|P|2.5.1\r"
           "PID|1||SYN-0001||SYNTHETIC^PATIENT\r"
           "OBR|1|A1|A1|QOQMED^QoQ-Med AI read^L\r"
           "OBX|1|ST|AI-MODEL^AI model^L||replay||||||P")


@pytest.fixture
def ehr() -> Iterator:
    listeners: list[MllpListener] = []

    def start(*behaviours: str) -> MllpListener:
        listeners.append(MllpListener(list(behaviours)))
        return listeners[-1]

    yield start
    for listener in listeners:
        listener.close()


def test_accepted_and_the_connection_is_reused(ehr) -> None:
    server = ehr("AA", "AA")
    client = MllpClient(LOOPBACK, server.port)
    first = client.send(MESSAGE, "QOQ123")
    socket_before = client._socket
    second = client.send(MESSAGE, "QOQ123")
    client.close()
    assert (first.delivery, first.code, second.delivery) == (Delivery.ACCEPTED, "AA", Delivery.ACCEPTED)
    assert client._socket is None and socket_before is not None
    assert server.received == [MESSAGE, MESSAGE]
    assert parse_message(server.received[0], validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_application_error_is_retried_and_reject_is_final(ehr) -> None:
    server = ehr("AE", "AE", "AA", "AR")
    client = MllpClient(LOOPBACK, server.port)
    outcomes = [client.send(MESSAGE, "QOQ123") for _ in range(4)]
    client.close()
    assert [o.delivery for o in outcomes] == [Delivery.RETRY, Delivery.RETRY, Delivery.ACCEPTED, Delivery.REJECTED]
    assert [o.code for o in outcomes] == ["AE", "AE", "AA", "AR"]


def test_silence_times_out_and_the_next_send_reconnects(ehr) -> None:
    server = ehr("silent", "AA")
    client = MllpClient(LOOPBACK, server.port, timeout_seconds=0.5)
    silent = client.send(MESSAGE, "QOQ123")
    assert silent.delivery is Delivery.RETRY and "no acknowledgment within 0.5 s" in silent.detail
    assert client.send(MESSAGE, "QOQ123").delivery is Delivery.ACCEPTED
    client.close()


def test_closed_connection_and_unreachable_receiver_are_retries(ehr) -> None:
    server = ehr("close", "close")
    client = MllpClient(LOOPBACK, server.port, timeout_seconds=2)
    closed = client.send(MESSAGE, "QOQ123")
    assert closed.delivery is Delivery.RETRY and "connection failed" in closed.detail
    client.close()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((LOOPBACK, 0))
        free = probe.getsockname()[1]
    unreachable = MllpClient(LOOPBACK, free, timeout_seconds=1).send(MESSAGE, "QOQ123")
    assert unreachable.delivery is Delivery.RETRY


def test_ack_for_another_message_is_not_taken(ehr) -> None:
    server = ehr("wrong-id")
    client = MllpClient(LOOPBACK, server.port)
    outcome = client.send(MESSAGE, "QOQ123")
    client.close()
    assert outcome.delivery is Delivery.RETRY and "not QOQ123" in outcome.detail


@pytest.mark.parametrize(("ack", "delivery"), [
    ("MSH|^~\\&|A\rMSA|CA|X", Delivery.ACCEPTED),
    ("MSH|^~\\&|A\rMSA|CR|X", Delivery.REJECTED),
    ("MSH|^~\\&|A\rMSA|ZZ|X", Delivery.RETRY),
    ("garbage", Delivery.RETRY),
    ("", Delivery.RETRY),
])
def test_classify_ack(ack: str, delivery: Delivery) -> None:
    assert classify_ack(ack, "X").delivery is delivery
