"""The MLLP client against a real loopback listener that answers as the test dictates."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.egress.mllp import END, START, Delivery, MllpClient, classify_ack
from node.localpeers import LOOPBACK

MESSAGE = ("MSH|^~\\&|QOQNODE|RADIOLOGY|EHR|HOSPITAL|20260101120000||ORU^R01^ORU_R01|QOQ123|P|2.5.1\r"
           "PID|1||SYN-0001||SYNTHETIC^PATIENT\r"
           "OBR|1|A1|A1|QOQMED^QoQ-Med AI read^L\r"
           "OBX|1|ST|AI-MODEL^AI model^L||replay||||||P")


class LoopbackEhr:
    """A loopback MLLP listener; ``behaviours`` is consumed one per received message."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = list(behaviours)
        self.received: list[str] = []
        self.server = socket.create_server((LOOPBACK, 0))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
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
                    message = buffer[buffer.find(START) + 1 : buffer.find(END)].decode()
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
        self._stop.set()
        self._thread.join(5)
        self.server.close()


@pytest.fixture
def ehr() -> Iterator:
    listeners: list[LoopbackEhr] = []

    def start(*behaviours: str) -> LoopbackEhr:
        listeners.append(LoopbackEhr(list(behaviours)))
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
