"""multipart/related bodies (PS3.18 8.6.1): a STOW-RS request made of DICOM files, and a WADO-RS answer read
as a stream, each part written to its own file as it arrives (never the whole answer in memory)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from email.message import Message
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from node.durable import fsync_dir, fsync_file, write_all

DICOM = "application/dicom"


class MultipartError(Exception):
    """An answer that is not the multipart/related body it says it is."""


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


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """A Content-Type's media type (lower case) and parameters."""
    message = Message()
    message["Content-Type"] = content_type
    return message.get_content_type(), {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}


class _Parts:
    """The callbacks that write each part of a multipart answer to ``directory/NNNNN.dcm``."""

    def __init__(self, directory: Path, prefix: str, max_part_bytes: int) -> None:
        self.directory, self.prefix, self.max_part_bytes = directory, prefix, max_part_bytes
        self.written: list[Path] = []
        self._fd: int | None = None
        self._size = 0
        self._field, self._value = bytearray(), bytearray()
        self._part_type = ""
        self.finished = False

    def _partial(self) -> Path:
        return self.directory / f"{self.prefix}{len(self.written):05d}.dcm.part"

    def begin(self) -> None:
        self._size, self._part_type = 0, ""
        path = self._partial()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if self._field.strip().lower() == b"content-type":
            self._part_type = media_type(self._value.decode("latin-1"))[0]
        self._field.clear()
        self._value.clear()

    def data(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None
        self._size += end - start
        if self._size > self.max_part_bytes:
            raise MultipartError(f"a part is larger than {self.max_part_bytes} bytes")
        write_all(self._fd, data[start:end])

    def end(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        partial = self._partial()
        if self._part_type not in ("", DICOM):
            partial.unlink()  # (a bulk data or metadata part: not an instance)
            return
        fsync_file(partial)
        path = partial.with_suffix("")
        partial.rename(path)
        self.written.append(path)

    def finish(self) -> None:
        self.finished = True

    def close(self) -> None:
        """Let go of a part cut short (its file too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._partial().unlink(missing_ok=True)


def write_parts(content_type: str, chunks: Iterable[bytes], directory: Path, prefix: str,
                max_part_bytes: int) -> list[Path]:
    """Write each application/dicom part of a multipart/related answer to its own file in ``directory``
    (``{prefix}00000.dcm``, …; durably), as the ``chunks`` come; the files, in the answer's order."""
    kind, params = media_type(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/related" or not boundary:
        raise MultipartError(f"the answer is {kind}, not multipart/related with a boundary")
    directory.mkdir(parents=True, exist_ok=True)
    parts = _Parts(directory, prefix, max_part_bytes)
    parser = MultipartParser(boundary, {
        "on_part_begin": parts.begin, "on_part_data": parts.data, "on_part_end": parts.end,
        "on_header_field": parts.header_field, "on_header_value": parts.header_value,
        "on_header_end": parts.header_end, "on_end": parts.finish})
    try:
        for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(f"malformed multipart answer: {type(exc).__name__}") from None
    finally:
        parts.close()
    if not parts.finished:
        raise MultipartError("the answer ended before its closing boundary")
    fsync_dir(directory)
    return parts.written
