"""A mounted secret read again whenever it changes (a rotated Kubernetes Secret takes effect without a restart):
the bearer-token file a DICOMweb archive is called with, the HTTP APIs' tokens secrets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def stamp(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when the file or directory at ``path`` does: each file's name, modification time, size and
    inode (a mounted Secret's update swaps the files its visible names point at; hidden entries, the ``..data``
    links, are left out). OSError when it cannot be read."""
    files = ([entry for entry in sorted(path.iterdir()) if not entry.name.startswith(".")]
             if path.is_dir() else [path])
    return tuple((entry.name, (stat := entry.stat()).st_mtime_ns, stat.st_size, stat.st_ino) for entry in files)


class Reloading(Generic[T]):
    """What ``load`` makes of ``path``, made again when :func:`stamp` changes (thread-safe); OSError (the stamp)
    and whatever ``load`` raises go to the caller, and the next call tries again."""

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        self.path, self._load = path, load
        self._lock = threading.Lock()
        self._loaded: tuple[object, T] | None = None

    def current(self) -> T:
        """The value for the file as it is now."""
        with self._lock:
            now = stamp(self.path)
            if self._loaded is None or self._loaded[0] != now:
                self._loaded = (now, self._load(self.path))
            return self._loaded[1]
