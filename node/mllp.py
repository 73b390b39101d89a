"""MLLP, the framing HL7 v2 travels in over TCP: each message is sent as ``0x0B message 0x1C 0x0D``.

One codec for every side of it: the node's sender (``egress/mllp.py``), its listener
(``ingest/hl7_listener.py``) and the test EHR (``testing/ehr.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from node.errors import DataError

START, END = b"\x0b", b"\x1c\x0d"
#: How much one read asks the connection for.
CHUNK_BYTES = 65536


class MessageTooLong(DataError):
    """More than the reader's limit arrived without the end of a message."""


def frame(message: str) -> bytes:
    """The MLLP frame of an HL7 message (segments separated by carriage returns), in UTF-8."""
    return START + message.encode("utf-8") + END


def unframe(block: bytes) -> bytes:
    """The message in ``block``, the bytes read up to (not including) an end mark: what follows the
    start mark, or all of it when the start mark is missing."""
    return block[block.find(START) + 1 :]


class MllpReader:
    """Reads framed messages one after another from a connection or stream, keeping whatever arrived
    after one message for the next. ``recv(n)`` returns up to ``n`` bytes, ``b""`` at the end
    (``socket.recv``, a buffered stream's ``read1``)."""

    def __init__(self, recv: Callable[[int], bytes], max_bytes: int) -> None:
        self._recv, self._max_bytes = recv, max_bytes
        self._buffer = bytearray()
        self._searched = 0  # the buffer holds no end mark before this offset

    def read(self) -> bytes | None:
        """The next message (its bytes between the marks), or None when the peer ends the connection
        before one is complete (a partial message is dropped).

        Raises ``MessageTooLong`` when more than ``max_bytes`` are held without an end mark (a complete
        message is returned whatever its length: the caller judges it). Timeouts and socket errors
        of ``recv`` pass through.
        """
        while (end := self._buffer.find(END, self._searched)) < 0:
            if len(self._buffer) > self._max_bytes:
                raise MessageTooLong(f"more than {self._max_bytes} bytes without the end of a message")
            chunk = self._recv(CHUNK_BYTES)
            if not chunk:
                return None
            self._searched = max(len(self._buffer) - len(END) + 1, 0)
            self._buffer += chunk
        block = bytes(self._buffer[:end])
        del self._buffer[: end + len(END)]
        self._searched = 0
        return unframe(block)
