"""Byte-level DICOM for the ingest hot path: a structural check of a received dataset and
the Part 10 file meta header that turns it into a file, without decoding the dataset.

The check walks every data element of the encoded dataset (PS3.5 section 7), through
sequences and items of defined and undefined length and encapsulated pixel data, to one depth
limit, and fails when a length runs past the end of what holds it, a delimiter is missing or stands
outside a sequence, an explicit VR is not one (or not the one an identifying attribute has), or a File
Meta element (group 0002) stands in the dataset. pydicom reads truncated data silently, so the node does
this itself before it acknowledges anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from node.errors import DataError
from node.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

#: Dataset encodings (PS3.5 Annex A): every other transfer syntax is explicit VR little endian.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
     b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_MAX_DEPTH = 64
_PIXEL_DATA = (0x7FE0, 0x0010)

SOP_CLASS_UID = (0x0008, 0x0016)
SOP_INSTANCE_UID = (0x0008, 0x0018)
MODALITY = (0x0008, 0x0060)
MANUFACTURER = (0x0008, 0x0070)
STUDY_INSTANCE_UID = (0x0020, 0x000D)
SERIES_INSTANCE_UID = (0x0020, 0x000E)
#: The top-level attributes ingest reads, and the VR each must have where the VR is explicit (or UN, which
#: readers take as the dictionary's): a UID sent as OB would be stored, then fail whatever reads it.
_HEADER_VRS = {SOP_CLASS_UID: b"UI", SOP_INSTANCE_UID: b"UI", MODALITY: b"CS", MANUFACTURER: b"LO",
               STUDY_INSTANCE_UID: b"UI", SERIES_INSTANCE_UID: b"UI"}


class MalformedDataset(DataError):
    """The encoded dataset is not well-formed DICOM; the message says where."""


@dataclass(frozen=True)
class DatasetHeader:
    """The top-level attributes ingest needs, read from the encoded dataset."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str
    manufacturer: str = ""


class _Walker:
    """Walks encoded data elements; collects the top-level header attributes."""

    def __init__(self, data: bytes | memoryview, little_endian: bool) -> None:
        self.data = data
        self.order = "<" if little_endian else ">"
        self.found: dict[tuple[int, int], bytes] = {}

    def _tag(self, pos: int, limit: int) -> tuple[int, int]:
        if pos + 8 > limit:
            raise MalformedDataset(f"truncated element header at byte {pos}")
        return struct.unpack_from(self.order + "HH", self.data, pos)

    def dataset(self, pos: int, implicit: bool, depth: int, in_item: bool, end: int | None = None) -> int:
        """Walk a dataset from ``pos`` up to ``end`` (a defined-length item's end; default the data's); inside
        an undefined-length item, up to its delimiter."""
        if depth > _MAX_DEPTH:
            raise MalformedDataset(f"sequences nested deeper than {_MAX_DEPTH} levels")
        limit = len(self.data) if end is None else end
        while pos < limit:
            tag = self._tag(pos, limit)
            if tag == _ITEM_END:
                if not in_item:
                    raise MalformedDataset(f"item delimiter outside an item at byte {pos}")
                return pos + 8
            if tag[0] == 0xFFFE:  # an item or a sequence delimiter where a data element belongs
                raise MalformedDataset(f"{_fmt(tag)} outside a sequence at byte {pos}")
            if tag[0] == 0x0002 and depth == 0:
                raise MalformedDataset(f"File Meta element {_fmt(tag)} inside the dataset at byte {pos}")
            if implicit:
                (length,) = struct.unpack_from(self.order + "I", self.data, pos + 4)
                vr, pos = None, pos + 8
            else:
                vr = bytes(self.data[pos + 4 : pos + 6])
                if vr in _LONG_VRS:
                    if pos + 12 > limit:
                        raise MalformedDataset(f"truncated element header at byte {pos}")
                    (length,) = struct.unpack_from(self.order + "I", self.data, pos + 8)
                    pos += 12
                elif vr in _SHORT_VRS:
                    (length,) = struct.unpack_from(self.order + "H", self.data, pos + 6)
                    pos += 8
                else:
                    raise MalformedDataset(f"invalid VR {vr!r} at byte {pos + 4} in element {_fmt(tag)}")
            if length == _UNDEFINED:
                # A sequence or encapsulated pixel data; UN of undefined length is implicit inside.
                pos = self._items(pos, implicit or vr == b"UN", depth + 1, tag, limit)
                continue
            if pos + length > limit:
                raise MalformedDataset(
                    f"element {_fmt(tag)} needs {length} bytes, {limit - pos} remain (truncated)"
                )
            if vr == b"SQ":  # a defined-length sequence: its items are walked too
                self._items(pos, implicit, depth + 1, tag, pos + length, defined=True)
            elif depth == 0 and tag in _HEADER_VRS:
                if vr is not None and vr not in (_HEADER_VRS[tag], b"UN"):
                    raise MalformedDataset(f"element {_fmt(tag)} has VR {vr.decode('ascii', 'replace')}, "
                                           f"not {_HEADER_VRS[tag].decode()}")
                self.found[tag] = bytes(self.data[pos : pos + length])
            pos += length
        if in_item:
            raise MalformedDataset("item of undefined length has no delimiter (truncated)")
        if pos != limit:
            raise MalformedDataset(f"an element runs past the end of its item at byte {pos}")
        return pos

    def _items(self, pos: int, implicit: bool, depth: int, owner: tuple[int, int], limit: int,
               defined: bool = False) -> int:
        """Walk the items of a sequence (or the fragments of encapsulated pixel data) from ``pos``: to the
        sequence delimiter, or — a defined-length sequence — to ``limit`` exactly. An item's dataset is
        walked too, whatever its length; pixel data fragments are opaque."""
        while True:
            if defined and pos == limit:
                return pos
            tag = self._tag(pos, limit)
            (length,) = struct.unpack_from(self.order + "I", self.data, pos + 4)
            pos += 8
            if tag == _SEQUENCE_END and not defined:
                return pos
            if tag != _ITEM:
                raise MalformedDataset(f"expected an item in {_fmt(owner)}, found {_fmt(tag)}")
            if length == _UNDEFINED:
                pos = self.dataset(pos, implicit, depth, in_item=True, end=limit)
            elif pos + length > limit:
                raise MalformedDataset(f"item in {_fmt(owner)} runs past the end (truncated)")
            else:
                if owner != _PIXEL_DATA:
                    self.dataset(pos, implicit, depth, in_item=False, end=pos + length)
                pos += length


def _fmt(tag: tuple[int, int]) -> str:
    return f"({tag[0]:04X},{tag[1]:04X})"


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace").rstrip("\x00 ").strip()


def read_header(dataset: bytes | memoryview, transfer_syntax_uid: str) -> DatasetHeader:
    """Check the encoded ``dataset`` is complete and read its identifying attributes.

    Raises MalformedDataset when it is not well-formed in ``transfer_syntax_uid`` (a deflated dataset is
    inflated as it is received: :mod:`node.ingest.incoming`).
    """
    walker = _Walker(dataset, little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN)
    try:
        walker.dataset(0, transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN, depth=0, in_item=False)
    except struct.error as exc:
        raise MalformedDataset(f"truncated element: {exc}") from exc
    found = walker.found
    return DatasetHeader(
        sop_class_uid=_text(found.get(SOP_CLASS_UID)),
        sop_instance_uid=_text(found.get(SOP_INSTANCE_UID)),
        study_uid=_text(found.get(STUDY_INSTANCE_UID)),
        series_uid=_text(found.get(SERIES_INSTANCE_UID)),
        modality=_text(found.get(MODALITY)),
        manufacturer=_text(found.get(MANUFACTURER)),
    )


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str) -> bytes:
    """The preamble, ``DICM`` prefix and File Meta Information group (PS3.10 7.1)."""
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
            _element(0x0002, 0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _element(0x0002, 0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
            _element(0x0002, 0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _element(0x0002, 0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
            _element(0x0002, 0x0016, b"AE", _padded(source_ae.strip()[:16], b" ")),
        )
    )
    group_length = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


@dataclass(frozen=True)
class FileMeta:
    """What a Part 10 file's File Meta Information says of its dataset, and where the dataset starts."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


def read_file_meta(head: bytes | bytearray, complete: bool = False) -> FileMeta | None:
    """The File Meta of a Part 10 file whose first bytes are ``head``; None while more bytes are needed to
    see where it ends (``complete``: ``head`` is the whole file). Raises MalformedDataset when ``head`` is
    not the start of a Part 10 file (no ``DICM`` prefix after the preamble) or its group 0002 is malformed."""
    if len(head) < 132:
        if complete:
            raise MalformedDataset("not a DICOM Part 10 file: shorter than the preamble and DICM prefix")
        return None
    if head[128:132] != b"DICM":
        raise MalformedDataset("not a DICOM Part 10 file: no DICM prefix after the 128-byte preamble")
    found: dict[int, bytes] = {}
    pos = 132
    while True:
        if pos + 8 > len(head) and not (complete and pos == len(head)):
            if complete:
                raise MalformedDataset(f"File Meta truncated at byte {pos}")
            return None
        if pos == len(head) or struct.unpack_from("<H", head, pos)[0] != 0x0002:
            break
        element, vr = struct.unpack_from("<H", head, pos + 2)[0], bytes(head[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                if complete:
                    raise MalformedDataset(f"File Meta truncated at byte {pos}")
                return None
            length, start = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        elif vr in _SHORT_VRS:
            length, start = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        else:
            raise MalformedDataset(f"invalid VR {vr!r} in File Meta element (0002,{element:04X})")
        if start + length > len(head):
            if complete or length == _UNDEFINED:
                raise MalformedDataset(f"File Meta element (0002,{element:04X}) runs past the end")
            return None
        found[element] = bytes(head[start:start + length])
        pos = start + length
    meta = FileMeta(_text(found.get(0x0002)), _text(found.get(0x0003)), _text(found.get(0x0010)), pos)
    if not meta.transfer_syntax_uid:
        raise MalformedDataset("File Meta has no Transfer Syntax UID")
    return meta
