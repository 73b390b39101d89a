"""multipart/related bodies (RFC 2387, PS3.18 8.6.1), for both directions of DICOMweb: a STOW-RS request built
from DICOM files (:func:`stow_body`), and one streaming reader (:class:`MultipartReader`, on python-multipart's
parser) that hands each part's headers and then its data, chunk by chunk, to the part's sink — never a whole part
or body in memory. The STOW-RS receiver's sinks store instances; :func:`write_parts` (a WADO-RS answer) writes
each part to its own file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from node.durable import fsync_dir, fsync_file, write_all
from node.errors import DataError

#: The media type of a part holding a DICOM Part 10 file (PS3.18 8.7.3.1).
DICOM = "application/dicom"


class MultipartError(DataError):
    """A body that is not the multipart/related body it says it is; the message says why (quoting no data)."""


def stow_body(parts: Sequence[bytes]) -> tuple[str, bytes]:
    """The Content-Type and body of a STOW-RS request carrying ``parts`` (Part 10 files)."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode()
        body += part
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f'multipart/related; type="{DICOM}"; boundary={boundary}', bytes(body)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """A Content-Type's media type (lower case; empty when there is none) and its parameters (names lower case,
    quotes taken off)."""
    kind, params = parse_options_header(content_type)
    return kind.decode("latin-1"), {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()}


class PartSink(Protocol):
    """Where one part's data goes as it arrives."""

    def data(self, chunk: bytes) -> None:
        """Take the part's next bytes."""

    def end(self) -> None:
        """The part ended (its closing boundary arrived)."""

    def abandon(self) -> None:
        """The body broke off or turned out malformed in this part: let go of what was kept."""


class MultipartReader:
    """Feeds a multipart body to one sink per part: ``open_part(headers)`` is called as each part's headers end
    (header names lower case), the sink gets the part's data and its end. More than ``max_parts`` parts (None:
    no limit) is a malformed body."""

    def __init__(self, boundary: bytes | str, open_part: Callable[[dict[str, str]], PartSink],
                 max_parts: int | None = None, limit_name: str = "max_parts") -> None:
        self._open_part = open_part
        self._max_parts, self._limit_name = max_parts, limit_name
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
        """Parse the body's next bytes; MultipartError when they break the multipart syntax (the part in progress
        let go)."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.abandon()
            raise MultipartError(f"malformed multipart body: {exc}") from exc

    def finish(self) -> None:
        """The body ended: MultipartError unless its closing boundary came."""
        if self._parser.state != MultipartState.END:
            self.abandon()
            raise MultipartError("the multipart body ended before its closing boundary (truncated)"
                                 if self.parts else "no multipart part found (wrong boundary, or an empty body)")

    def abandon(self) -> None:
        """Let the part in progress go (the body broke off)."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.abandon()

    def _begin(self) -> None:
        self.parts += 1
        if self._max_parts is not None and self.parts > self._max_parts:
            raise MultipartParseError(f"more than {self._max_parts} parts ({self._limit_name})")
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


class _PartFile:
    """A part of a WADO-RS answer written to ``path`` (through ``path.part``, durably); a part that is not
    application/dicom (bulk data, metadata) is counted but not kept."""

    def __init__(self, path: Path, keep: bool, max_bytes: int, written: list[Path]) -> None:
        self._path, self._partial = path, path.with_name(path.name + ".part")
        self._max_bytes, self._written, self._size = max_bytes, written, 0
        self._fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if keep else None

    def data(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise MultipartError(f"a part is larger than {self._max_bytes} bytes")
        if self._fd is not None:
            write_all(self._fd, chunk)

    def end(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        fsync_file(self._partial)
        self._partial.rename(self._path)
        self._written.append(self._path)

    def abandon(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._partial.unlink(missing_ok=True)


def write_parts(content_type: str, chunks: Iterable[bytes], directory: Path, prefix: str,
                max_part_bytes: int) -> list[Path]:
    """Write each application/dicom part of a multipart/related answer to its own file in ``directory``
    (``{prefix}00000.dcm``, …; durably), as the ``chunks`` come; the files, in the answer's order."""
    kind, params = media_type(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/related" or not boundary:
        raise MultipartError(f"the answer is {kind}, not multipart/related with a boundary")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def open_part(headers: dict[str, str]) -> PartSink:
        keep = media_type(headers.get("content-type"))[0] in ("", DICOM)
        return _PartFile(directory / f"{prefix}{len(written):05d}.dcm", keep, max_part_bytes, written)

    reader = MultipartReader(boundary, open_part)
    try:
        for chunk in chunks:
            reader.feed(chunk)
        reader.finish()
    finally:  # a part cut short (the answer broke off, a part too large) is let go, its file too
        reader.abandon()
    fsync_dir(directory)
    return written
