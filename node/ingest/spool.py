"""The spool: received instances as Part 10 files, durably on disk, and the quarantine.

Layout under ``storage.root``::

    spool/<study UID>/<SOP instance UID>.dcm   accepted instances, as received (a deflated dataset inflated)
    quarantine/<time>-<n>.dcm (+ .json)         refused objects and why
    tmp/                                        large instances being received, partial replacements
                                                (never read; swept at start)

An instance is received in memory, or — a large one — into a file under ``tmp/`` (:mod:`node.ingest.incoming`),
and, once accepted, stored in the spool (:meth:`Spool.keep`): a new file is created in place (``O_EXCL``) and
written, a received file renamed there. A file already there (a partial file from a crash before the instance
was acknowledged, or a concurrent writer) is replaced only by a file already on disk (written through ``tmp/``
and fsynced, or the received file fsynced) and an atomic rename, so a whole file is never replaced by a partial
one. On ext4 and XFS the file's fsync also commits its directory entry, so the directory's fsync is nearly
free. The state database, not the folder, says which files are acknowledged instances. The receiver commits
the instance's row while :meth:`Spool.sync` commits the file and its directory entry; it answers only once
both are done. Callers pass only validated UIDs as names.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

from node.durable import fsync_dir, fsync_file, write_all


def _write_new_file(path: Path, data: bytes | bytearray, sync: bool = True) -> None:
    """Create ``path`` (it must not exist) and write ``data``; fsync it when ``sync``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:  # a full disk, an I/O error: what was written of it goes
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


class Spool:
    """Durable file storage for received objects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool_dir = root / "spool"
        self.quarantine_dir = root / "quarantine"
        self._tmp_dir = root / "tmp"
        for directory in (self.spool_dir, self.quarantine_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(root)
        self.partial_writes_removed = self._remove_partial_writes()
        self._names = itertools.count()
        self._known_dirs: set[Path] = set()
        self._dir_lock = threading.Lock()

    def _remove_partial_writes(self) -> int:
        """Delete what a crash left half-written in ``tmp/``: it was never acknowledged."""
        leftovers = list(self._tmp_dir.iterdir())
        for leftover in leftovers:
            leftover.unlink()
        return len(leftovers)

    def temporary_path(self) -> Path:
        """A new name under ``tmp/`` to receive a file into (swept at start: never read there)."""
        return self._tmp_dir / self.unique_name()

    def _put(self, received: Path | bytearray, target: Path) -> None:
        """Put a received instance at ``target`` — held in memory: written there; in a file: renamed there. Over
        a file already there (a partial file from a crash before its instance was acknowledged, or a twin's)
        only once it is on disk itself, so that a whole file is never replaced by a partial one."""
        if isinstance(received, Path):
            if target.exists():
                fsync_file(received)
            os.replace(received, target)
            return
        try:
            _write_new_file(target, received, sync=False)  # synced by :meth:`sync`, with its row's commit
        except FileExistsError:
            tmp = self.temporary_path()
            _write_new_file(tmp, received)
            try:
                os.replace(tmp, target)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise

    def _study_dir(self, study_uid: str) -> Path:
        directory = self.spool_dir / study_uid
        if directory not in self._known_dirs:
            with self._dir_lock:
                if not directory.is_dir():
                    directory.mkdir()
                    fsync_dir(self.spool_dir)
                self._known_dirs.add(directory)
        return directory

    def keep(self, received: Path | bytearray, study_uid: str, sop_instance_uid: str) -> Path:
        """Store a received instance — a Part 10 file held in memory, or written under :meth:`temporary_path` —
        in the spool; returns its path. The file is on disk once :meth:`sync` has returned."""
        target = self._study_dir(study_uid) / f"{sop_instance_uid}.dcm"
        try:
            self._put(received, target)
        except FileNotFoundError:  # retention removed the study's folder just now: make it again
            self._forget_dir(target.parent)
            target = self._study_dir(study_uid) / f"{sop_instance_uid}.dcm"
            self._put(received, target)
        return target

    def sync(self, path: Path) -> None:
        """Commit a written file and its directory entry to disk."""
        fsync_file(path)
        fsync_dir(path.parent)

    def _forget_dir(self, directory: Path) -> None:
        with self._dir_lock:
            self._known_dirs.discard(directory)

    def remove(self, paths: list[Path]) -> int:
        """Delete stored files (retention) and their study folders once empty; returns the bytes freed."""
        freed = 0
        for path in paths:
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
        for directory in {path.parent for path in paths}:
            with self._dir_lock:
                try:
                    directory.rmdir()
                except OSError:  # not empty (an instance of a new version) or already gone
                    continue
                self._known_dirs.discard(directory)
        return freed

    def unique_name(self) -> str:
        """A file name stem no other write of this process or another shares: time, process, counter."""
        return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(self._names)}"

    def quarantine(self, received: Path | bytes | bytearray, reason: str, details: dict[str, str],
                   suffix: str = ".dcm") -> Path:
        """Keep a refused object (a DICOM instance, an HL7 message: ``suffix``) with a JSON note of why: its bytes,
        written, or a file written under :meth:`temporary_path`, moved; returns the object's path."""
        target = self._quarantine_note(reason, details, suffix)
        if isinstance(received, Path):
            fsync_file(received)
            os.replace(received, target)
        else:
            _write_new_file(target, received)
        fsync_dir(self.quarantine_dir)
        return target

    def _quarantine_note(self, reason: str, details: dict[str, str], suffix: str) -> Path:
        """Write the JSON note of a refused object durably; returns the path the object is to take."""
        stem = self.unique_name()
        note = json.dumps({"reason": reason, **details}, indent=2).encode()
        _write_new_file(self.quarantine_dir / f"{stem}.json", note)
        return self.quarantine_dir / f"{stem}{suffix}"
