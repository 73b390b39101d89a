"""Durable files: a file written whole or not at all, all of a buffer written, a file's data and a
directory's entries committed to disk. The ground floor every part that keeps files builds on."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Commit a directory's entries (new, renamed or removed files) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Commit a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write ``path`` whole or not at all: a temporary name beside it (made with ``mode``, less the umask),
    fsynced, renamed over it. The directory entry is durable once the caller has fsynced the directory
    (:func:`fsync_dir`)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its mode
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd`` (a write may take less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
