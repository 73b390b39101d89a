"""What a STOW-RS request's body must be: multipart/related of application/dicom with a boundary (else HTTP 415).
The body itself is read by the shared streaming reader, :class:`node.dicomweb.multipart.MultipartReader`."""

from __future__ import annotations

from python_multipart.multipart import MAX_BOUNDARY_LENGTH

from node.dicomweb.multipart import DICOM, media_type
from node.errors import DataError


class UnsupportedMediaType(DataError):
    """The request's Content-Type is not multipart/related of application/dicom (HTTP 415)."""


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a STOW-RS request's ``Content-Type``; UnsupportedMediaType when it is not
    ``multipart/related`` with ``type`` application/dicom (or no type) and a boundary."""
    if not content_type:
        raise UnsupportedMediaType(f"no Content-Type; expected multipart/related; type=\"{DICOM}\"")
    kind, params = media_type(content_type)
    if kind != "multipart/related":
        raise UnsupportedMediaType(f"Content-Type {kind[:64]!r} is not multipart/related")
    part_type = params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(f"multipart/related of {part_type[:64]!r}; only {DICOM} is stored")
    boundary = params.get("boundary", "").encode("latin-1")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:  # (RFC 2046 says 70; Orthanc's client sends 73)
        raise UnsupportedMediaType("multipart/related without a valid boundary parameter")
    return boundary
