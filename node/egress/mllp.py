"""HL7 v2 over MLLP: send one message, wait for its ACK, say what the EHR answered.

Framed by ``node/mllp.py``. The answer is classified for the outbox: AA (and CA) delivered; AE (and
CE) or no/garbled answer or a broken connection: retry later; AR (and CR): rejected, do not resend
unchanged. One connection is kept and reused, and reopened when it breaks.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import Enum

from node.mllp import MessageTooLong, MllpReader, frame

MAX_ACK_BYTES = 1_000_000


class Delivery(Enum):
    """What an attempt achieved."""

    ACCEPTED = "accepted"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AckResult:
    """The outcome of one send: the classification, the acknowledgment code and why."""

    delivery: Delivery
    code: str  # MSA-1, or "" when no acknowledgment was read
    detail: str


def classify_ack(ack: str, control_id: str) -> AckResult:
    """Read an ACK's MSA segment and classify it for the message with ``control_id``."""
    segments = {segment[:3]: segment.split("|") for segment in ack.replace("\n", "\r").split("\r") if segment}
    msa = segments.get("MSA")
    if msa is None or len(msa) < 2:
        return AckResult(Delivery.RETRY, "", "the answer has no MSA segment")
    code = msa[1].strip().upper()
    if len(msa) > 2 and msa[2].strip() and msa[2].strip() != control_id:
        return AckResult(Delivery.RETRY, code, f"the ACK names message {msa[2].strip()[:20]}, not {control_id}")
    if code in {"AA", "CA"}:
        return AckResult(Delivery.ACCEPTED, code, "accepted")
    if code in {"AR", "CR"}:
        return AckResult(Delivery.REJECTED, code, "rejected by the receiver")
    return AckResult(Delivery.RETRY, code, "application error at the receiver" if code in {"AE", "CE"}
                     else f"unknown acknowledgment code {code[:8]}")


class MllpClient:
    """A reusable MLLP connection to one receiver."""

    def __init__(self, host: str, port: int, timeout_seconds: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout_seconds
        self._socket: socket.socket | None = None

    def close(self) -> None:
        """Close the connection (the next send reopens it)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connection(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self._socket

    def _read_ack(self, connection: socket.socket) -> bytes:
        """The answer to the message just sent (anything the receiver sent after it is not kept)."""
        try:
            ack = MllpReader(connection.recv, MAX_ACK_BYTES).read()
        except MessageTooLong:
            raise ConnectionError("the acknowledgment is too long") from None
        if ack is None:
            raise ConnectionError("the receiver closed the connection before acknowledging")
        return ack

    def reachable(self) -> bool:
        """Whether the receiver accepts a connection now (a cheap probe of a destination that was down)."""
        try:
            self._connection()
            return True
        except OSError:
            self.close()
            return False

    def send(self, message: str, control_id: str) -> AckResult:
        """Send one message and wait for its ACK; never raises for network trouble."""
        for attempt in (1, 2):  # a reused connection may have gone stale: reopen once
            try:
                connection = self._connection()
                connection.sendall(frame(message))
                ack = self._read_ack(connection).decode("utf-8", "replace")
                return classify_ack(ack, control_id)
            except TimeoutError:
                self.close()
                return AckResult(Delivery.RETRY, "", f"no acknowledgment within {self.timeout:g} s")
            except OSError as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, ConnectionError | BrokenPipeError):
                    return AckResult(Delivery.RETRY, "", f"connection failed: {type(exc).__name__}")
        return AckResult(Delivery.RETRY, "", "connection failed")
