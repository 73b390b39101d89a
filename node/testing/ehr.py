"""An EHR on loopback: an MLLP listener that keeps what it receives and answers as a test tells it."""

from __future__ import annotations

import socket
import threading

from node.mllp import MessageTooLong, MllpReader, frame
from node.testing.loopback import LOOPBACK

#: The longest message the EHR takes (a longer one closes the connection).
MAX_MESSAGE_BYTES = 16 * 2**20


class MllpListener:
    """An EHR on loopback: an MLLP listener that keeps every message it receives and answers as
    told. ``behaviours`` is consumed one per message: an acknowledgment code (AA, AE, AR), "silent"
    (no answer), "close" (drop the connection) or "wrong-id" (an AA naming another message);
    once it is used up every message gets AA."""

    def __init__(self, behaviours: list[str] | None = None, port: int = 0) -> None:
        self.behaviours = list(behaviours or [])
        self.received: list[str] = []
        self.server = socket.create_server((LOOPBACK, port))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:  # one connection at a time, as many EHR interfaces work
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                reader = MllpReader(connection.recv, MAX_MESSAGE_BYTES)
                while not self._stop.is_set():
                    try:
                        raw = reader.read()
                    except (TimeoutError, OSError, MessageTooLong):
                        break
                    if raw is None:
                        break
                    message = raw.decode("utf-8", "replace")
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
                    connection.sendall(frame(ack))

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(5)
        self.server.close()

    def __enter__(self) -> MllpListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
