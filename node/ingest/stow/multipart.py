"""A multipart/related body (RFC 2387) read as it streams in, on python-multipart's parser: each part's
headers, then its data chunk by chunk to the part's sink, never a whole part or body in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MAX_BOUNDARY_LENGTH, MultipartParser, MultipartState, parse_options_header

from node.errors import DataError

#: The media type of a STOW-RS part holding a DICOM Part 10 file (PS3.18 8.7.3.1).
DICOM_MEDIA_TYPE = "application/dicom"


class UnsupportedMediaType(DataError):
    """The request's Content-Type is not multipart/related of application/dicom (HTTP 415)."""


class MalformedBody(DataError):
    """The body is not a well-formed multipart body (HTTP 400); the message says why."""


class PartSink(Protocol):
    """Where one part's data goes as it arrives."""

    def data(self, chunk: bytes) -> None:
        """Take the part's next bytes."""

    def end(self) -> None:
        """The part ended (its closing boundary arrived)."""

    def abandon(self) -> None:
        """The body broke off or turned out malformed in this part: let go of what was kept."""


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a STOW-RS request's ``Content-Type``; UnsupportedMediaType when it is not
    ``multipart/related`` with ``type`` application/dicom (or no type) and a boundary."""
    if not content_type:
        raise UnsupportedMediaType("no Content-Type; expected multipart/related; type=\"application/dicom\"")
    media_type, params = parse_options_header(content_type)
    if media_type.lower() != b"multipart/related":
        raise UnsupportedMediaType(f"Content-Type {media_type.decode('latin-1')[:64]!r} is not multipart/related")
    part_type = params.get(b"type", DICOM_MEDIA_TYPE.encode()).lower()
    if part_type != DICOM_MEDIA_TYPE.encode():
        raise UnsupportedMediaType(f"multipart/related of {part_type.decode('latin-1')[:64]!r}; only "
                                   f"{DICOM_MEDIA_TYPE} is stored")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:  # (RFC 2046 says 70; Orthanc's client sends 73)
        raise UnsupportedMediaType("multipart/related without a valid boundary parameter")
    return boundary


class MultipartReader:
    """Feeds a multipart body to one sink per part: ``open_part(headers)`` is called as each part's headers end
    (header names lower-case), the sink gets the part's data and its end."""

    def __init__(self, boundary: bytes, open_part: Callable[[dict[str, str]], PartSink], max_parts: int) -> None:
        self._open_part = open_part
        self._max_parts = max_parts
        self.parts = 0
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._sink: PartSink | None = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._on_field, "on_header_value": self._on_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done,
            "on_part_data": self._data, "on_part_end": self._end,
        })

    def feed(self, chunk: bytes) -> None:
        """Parse the body's next bytes; MalformedBody when they break the multipart syntax."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.abandon()
            raise MalformedBody(f"malformed multipart body: {exc}") from exc

    def finish(self) -> None:
        """The body ended: MalformedBody unless its closing boundary came."""
        if self._parser.state != MultipartState.END:
            self.abandon()
            raise MalformedBody("multipart body ends before its closing boundary (truncated)"
                                if self.parts else "no multipart part found (wrong boundary, or an empty body)")

    def abandon(self) -> None:
        """Let the part in progress go (the body broke off)."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.abandon()

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > self._max_parts:
            raise MultipartParseError(f"more than {self._max_parts} parts (dicomweb.stow.max_parts)")
        self._headers = {}

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _headers_done(self) -> None:
        self._sink = self._open_part(self._headers)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None and end > start:
            self._sink.data(data[start:end])

    def _end(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.end()
