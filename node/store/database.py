"""One SQLite connection shared by every part of the state database, behind one lock.

WAL mode with ``synchronous=FULL`` (every commit is on disk before it returns). The threads of one
process share the connection behind the lock; other processes (the CLI) open their own and read
concurrently. Each concern (instances, studies, outbox, quarantine, retention, clinical context) keeps
its queries in its own module and talks to SQLite through this one :class:`Database`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """The connection, its lock and the transaction helper."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """Open (or create) the database at ``path``; ``read_only`` opens an existing one for reading only
        (another process may be writing it)."""
        self.root = path.parent  # stored file paths are kept relative to it (the storage root)
        if read_only:
            self.connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                              check_same_thread=False, timeout=30)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
        self.lock = threading.Lock()
        self.connection.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back when the block raises)."""
        with self.lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads outside a transaction."""
        with self.lock:
            yield self.connection
