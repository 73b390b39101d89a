"""A peer that speaks DICOM's upper layer byte by byte (PS3.8 section 9.3), so tests can send what no
well-behaved SCU would: P-DATA on a context never proposed, a garbage command set, a PDU longer than the
negotiated maximum, a UID too long for its VR."""

from __future__ import annotations

import socket
import struct

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from node.testing.loopback import LOOPBACK

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _uid(uid: str) -> bytes:
    return uid.encode("ascii")


def associate_rq(contexts: dict[int, tuple[str, str]], called: str = "QOQNODE", calling: str = "RAWPEER",
                 max_pdu: int = 0) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (id -> (abstract syntax, transfer syntax))."""
    items = _item(0x10, APPLICATION_CONTEXT)
    for context_id, (abstract, transfer) in contexts.items():
        items += _item(0x20, bytes([context_id, 0, 0, 0]) + _item(0x30, _uid(abstract)) + _item(0x40, _uid(transfer)))
    items += _item(0x50, _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32) + items)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def p_data_header(length: int) -> bytes:
    """A P-DATA-TF PDU's header, for a PDU of ``length`` bytes sent as it goes."""
    return struct.pack(">BBI", 0x04, 0, length)


def pdv_header(length: int, context_id: int, header: int) -> bytes:
    """A presentation data value item's header, for ``length`` bytes of fragment."""
    return struct.pack(">IBB", length + 2, context_id, header)


def p_data(*values: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU of presentation data values (context id, message control header, fragment)."""
    body = b"".join(pdv_header(len(data), context_id, header) + data for context_id, header, data in values)
    return p_data_header(len(body)) + body


#: An A-RELEASE-RQ PDU.
RELEASE_RQ = struct.pack(">BBIL", 0x05, 0, 4, 0)
#: Message control headers: a command's last fragment, a dataset's last fragment, a dataset's fragment.
COMMAND_LAST, DATA_LAST, DATA_MORE = 0x03, 0x02, 0x00


def command_set(**elements: object) -> bytes:
    """A DIMSE command set (Implicit VR Little Endian, with its group length) from keyword=value pairs."""
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    body = encode_implicit(command)
    length = Dataset()
    length.CommandGroupLength = len(body)
    return encode_implicit(length) + body


def encode_implicit(ds: Dataset) -> bytes:
    """``ds`` encoded in Implicit VR Little Endian."""
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, True
    write_dataset(encoded, ds)
    return encoded.getvalue()


def store_command(sop_instance: str, message_id: int = 1, sop_class: str = CT_IMAGE_STORAGE) -> bytes:
    """A C-STORE-RQ command set, its dataset following."""
    return command_set(AffectedSOPClassUID=sop_class, CommandField=0x0001, MessageID=message_id, Priority=0,
                       CommandDataSetType=0x0000, AffectedSOPInstanceUID=sop_instance)


def echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set."""
    return command_set(AffectedSOPClassUID=VERIFICATION, CommandField=0x0030, MessageID=message_id,
                       CommandDataSetType=0x0101)


class RawPeer:
    """One TCP connection to a node's DICOM port, written and read PDU by PDU."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.socket = socket.create_connection((LOOPBACK, port), timeout=timeout)

    def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.socket.sendall(data)

    def read_pdu(self) -> tuple[int, bytes]:
        """The next PDU: its type and body ((0, b"") when the node closed the connection)."""
        head = self._read(6)
        if len(head) < 6:
            return 0, b""
        kind, _, length = struct.unpack(">BBI", head)
        return kind, self._read(length)

    def associate(self, contexts: dict[int, tuple[str, str]], max_pdu: int = 0) -> int:
        """Send an A-ASSOCIATE-RQ; the maximum PDU length the node's A-ASSOCIATE-AC announces."""
        self.send(associate_rq(contexts, max_pdu=max_pdu))
        kind, body = self.read_pdu()
        assert kind == 0x02, f"expected an A-ASSOCIATE-AC, got PDU type {kind:#x}"
        at = body.index(b"\x51\x00\x00\x04")
        return int(struct.unpack(">I", body[at + 4:at + 8])[0])

    def status_of_response(self) -> int:
        """Read PDUs up to a DIMSE response's last command fragment; its Status."""
        command = b""
        while True:
            kind, body = self.read_pdu()
            assert kind == 0x04, f"expected a P-DATA-TF, got PDU type {kind:#x}"
            at = 0
            while at < len(body):
                length, _context, header = struct.unpack(">IBB", body[at:at + 6])
                command += body[at + 6:at + 4 + length]
                at += 4 + length
                if header == COMMAND_LAST:
                    status = command.index(b"\x00\x00\x00\x09")  # (0000,0900) Status, implicit VR
                    return int(struct.unpack("<H", command[status + 8:status + 10])[0])

    def ended(self, within: float = 10.0) -> bool:
        """Whether the node aborts or closes the connection within ``within`` seconds."""
        self.socket.settimeout(within)
        try:
            while True:
                kind, _ = self.read_pdu()
                if kind in (0, 0x07):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        """Close the connection."""
        self.socket.close()

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.socket.recv(min(size - len(data), 1 << 20))
            if not chunk:
                break
            data += chunk
        return data
