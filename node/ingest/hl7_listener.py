"""The MLLP listener: orders, laboratory results, radiology reports and patient updates from the RIS, LIS
and EHR.

Each message (framed by ``node/mllp.py``) is answered with one ACK, and only after what it
says is durable: the message file fsynced under ``storage.root/hl7/`` and its rows committed in the
state database. AA: kept (or a resend of a message already kept). AE: it cannot be read — kept in
the quarantine with the reason (the sender's engine shows the error; resending it unchanged fails
again) — or it could not be stored now (disk, database: resend later). AR: a sending application
not allowed, or a message type the node does not take. No value of a message reaches the logs.
"""

from __future__ import annotations

import itertools
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from node.config import Hl7ListenerConfig
from node.durable import fsync_dir, write_atomically
from node.ingest.hl7_inbound import UnsupportedMessage, interpret, message_type
from node.ingest.hl7v2 import Hl7Error, Hl7Message, escape, parse
from node.ingest.spool import Spool
from node.mllp import MessageTooLong, MllpReader, frame
from node.ops.logging import get_logger
from node.ops.metrics import Metrics
from node.store import Store

log = get_logger("hl7")

#: What a socket server hands its request handlers (a TCP server: the connection's socket).
_Request = socket.socket | tuple[bytes, socket.socket]

ACK_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
#: ERR-3 codes (HL7 table 0357).
_ERROR_CODES = {"AE": "207^Application internal error^HL70357", "AR": "200^Unsupported message type^HL70357"}
_UNSAFE = re.compile(r"[|^~\\&\x00-\x1f\x7f]")


def _safe(text: str, limit: int) -> str:
    """A value from the message, fit to echo in the ACK: no separators or control characters."""
    return _UNSAFE.sub("", text)[:limit]


def _user_message(text: str, limit: int = 250) -> str:
    """ERR-8's text, HL7-escaped (``ADT^A01`` stays readable as ``ADT\\S\\A01``) and cut, before escaping,
    to fit ``limit`` once escaped."""
    escaped = escape(text)
    while len(escaped) > limit:
        text = text[:len(text) - (len(escaped) - limit + 2) // 3 - 1]
        escaped = escape(text)
    return escaped


class Hl7Listener:
    """Receives HL7 messages over MLLP and keeps them as the patients' context."""

    def __init__(self, config: Hl7ListenerConfig, default_authority: str, store: Store, spool: Spool,
                 metrics: Metrics, on_context: Callable[[], None] = lambda: None) -> None:
        self._config, self._authority, self._store, self._metrics = config, default_authority, store, metrics
        self._spool, self._on_context = spool, on_context
        self._messages_dir = spool.root / "hl7"
        self._acks = itertools.count()
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the listener is bound to."""
        assert self._server is not None
        return int(self._server.server_address[1])

    # --- one message ---------------------------------------------------------------------------

    def handle(self, raw: bytes, peer: str = "") -> str:
        """Keep one message (its bytes between the MLLP frame marks) and return the ACK to send."""
        received_at = time.time()
        text = _decode(raw)
        try:
            message = parse(text)
        except Hl7Error as exc:
            return self._refuse_unreadable(raw, None, str(exc), peer)
        kind, sender = message_type(message), message.field("MSH", 3)
        allowed = self._config.allowed_sending_applications
        if allowed and sender not in allowed:
            self._count(kind, "rejected")
            log.warning("hl7.rejected", reason="sending application not allowed", peer=peer)
            return self._ack(message, "AR", "sending application not allowed")
        try:
            inbound = interpret(message, self._authority, received_at)
        except UnsupportedMessage as exc:
            self._count(kind, "rejected")
            log.warning("hl7.rejected", reason="unsupported message type", message_type=kind[:16])
            return self._ack(message, "AR", str(exc))
        except Hl7Error as exc:
            return self._refuse_unreadable(raw, message, str(exc), peer)
        path = None
        try:
            path = self._keep(raw)
            kept = self._store.clinical.record_message(inbound, str(path.relative_to(self._spool.root)), received_at)
        except Exception as exc:  # disk or database: the sender keeps the message and resends; nothing half-kept
            if path is not None:
                path.unlink(missing_ok=True)
            self._count(kind, "failed")
            log.error("hl7.store_failed", message_type=kind, error=type(exc).__name__)
            return self._ack(message, "AE", "the message could not be stored now; send it again later")
        if not kept:
            path.unlink(missing_ok=True)
        self._count(kind, "accepted" if kept else "duplicate")
        log.info("hl7.received", message_type=kind, orders=len(inbound.orders), results=len(inbound.results),
                 merges=len(inbound.merges), reports=len(inbound.reports), duplicate=not kept)
        self._on_context()
        return self._ack(message, "AA", "")

    def _refuse_unreadable(self, raw: bytes, message: Hl7Message | None, reason: str, peer: str) -> str:
        """AE for a message that cannot be used, kept in the quarantine with the reason."""
        kind = message_type(message) if message is not None else "unreadable"
        self._count(kind, "error")
        try:
            path = self._spool.quarantine(raw, f"HL7: {reason}", {"detail": reason, "peer": peer}, suffix=".hl7")
            self._store.quarantine.record(str(path), f"HL7: {reason}", peer)
        except Exception as exc:  # the answer still says why; the sender keeps the message
            log.error("hl7.quarantine_failed", error=type(exc).__name__)
        log.warning("hl7.refused", reason=reason, message_type=kind[:16])
        return self._ack(message, "AE", reason)

    def _keep(self, raw: bytes) -> Path:
        directory = self._messages_dir / time.strftime("%Y%m%d")
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(directory.parent)
        path = directory / f"{self._spool.unique_name()}.hl7"
        write_atomically(path, raw)
        fsync_dir(directory)
        return path

    def _count(self, kind: str, outcome: str) -> None:
        label = kind if kind in _COUNTED_TYPES else "other"
        self._metrics.hl7_messages.labels(label, outcome).inc()

    def _ack(self, message: Hl7Message | None, code: str, text: str) -> str:
        """The ACK (segments separated by CR) for ``message`` (None: it could not be parsed)."""
        field = (lambda n, c=1: message.field("MSH", n, c)) if message is not None else (lambda n, c=1: "")
        version = field(12) if field(12) in ACK_VERSIONS else "2.5.1"
        event = _safe(field(9, 2), 3)
        now = datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
        control = "QACK" + f"{int(time.time() * 1000):x}{next(self._acks):x}"[-16:]
        segments = [
            "|".join(["MSH", "^~\\&", _safe(self._config.receiving_application, 180),
                      _safe(self._config.receiving_facility, 180), _safe(field(3), 180), _safe(field(4), 180), now,
                      "", f"ACK^{event}^ACK", control[:20], _safe(field(11), 3) or "P", version]),
            "|".join(["MSA", code, _safe(field(10), 20)]),
        ]
        if code != "AA":
            segments.append("|".join(["ERR", "", "", _ERROR_CODES[code], "E", "", "", "", _user_message(text)]))
        return "\r".join(segments)

    # --- the server ------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen (in the background)."""
        listener = self

        class _Connection(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                listener._serve_connection(self.request, f"{self.client_address[0]}")

        class _Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: _Request, client_address: Any) -> None:
                if not listener._slots.acquire(blocking=False):
                    log.warning("hl7.connection_refused", reason="hl7_listener.max_connections reached")
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request: _Request, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    listener._slots.release()

        try:
            self._server = _Server((self._config.host, self._config.port), _Connection)
        except OSError as exc:  # say which of the node's ports it is
            raise OSError(exc.errno, f"HL7 port {self._config.host}:{self._config.port} (hl7_listener.host, "
                                     f"hl7_listener.port): {exc.strerror}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="hl7-listener", daemon=True)
        self._thread.start()
        log.info("hl7.listening", port=self.port)

    def _serve_connection(self, connection: socket.socket, peer: str) -> None:
        connection.settimeout(self._config.idle_timeout_seconds)
        limit = self._config.max_message_bytes
        reader = MllpReader(connection.recv, limit)
        try:
            while True:
                try:
                    raw = reader.read()
                except MessageTooLong:  # no end in sight: answer once and hang up
                    connection.sendall(frame(self._ack(None, "AE", "the message is too long")))
                    return
                if raw is None:
                    return
                ack = self.handle(raw, peer) if len(raw) <= limit else self._ack(None, "AE", "the message is too long")
                connection.sendall(frame(ack))
        except (TimeoutError, OSError):
            return

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


#: Message types counted under their own label; anything else is "other".
_COUNTED_TYPES = frozenset({"ORM^O01", "OMI^O23", "ORU^R01", "MDM^T02", "ADT^A08", "ADT^A40", "unreadable"})


def _decode(raw: bytes) -> str:
    """The message's text: UTF-8, else ISO 8859-1 (which every byte string is)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
