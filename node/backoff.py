"""Waiting out a fault that is no study's (an unreachable engine, a full disk): the first wait, doubled
after each further fault up to a cap, until something succeeds again.

A study's own failures are retried per study (``pipeline.retry_seconds``); these pause the whole path,
and cost no study an attempt.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from types import TracebackType

from node.ops.logging import get_logger

#: The first wait after such a fault, and the most it doubles to (seconds).
FIRST_WAIT_SECONDS = 5.0
WAIT_CAP_SECONDS = 60.0
#: SQLite's message for SQLITE_FULL.
SQLITE_FULL = "database or disk is full"


class Backoff:
    """A doubling wait, shared by the threads that meet the fault (thread-safe)."""

    def __init__(self, first: float = FIRST_WAIT_SECONDS, cap: float = WAIT_CAP_SECONDS) -> None:
        self._first, self._cap = first, cap
        self._lock = threading.Lock()
        self._wait = 0.0  # the last wait; 0 when nothing has failed since the last success
        self._until = 0.0

    def ready(self, now: float) -> bool:
        """Whether the wait (if any) is over at ``now``."""
        with self._lock:
            return now >= self._until

    def failed(self, now: float) -> float:
        """The fault happened again at ``now``: wait the first wait, else twice the last (up to the cap);
        returns that wait."""
        with self._lock:
            self._wait = min(self._cap, max(self._first, 2 * self._wait))
            self._until = now + self._wait
            return self._wait

    def succeeded(self) -> bool:
        """It works again: the next fault waits the first wait. Returns whether a wait was running."""
        with self._lock:
            was_waiting, self._wait = self._wait > 0, 0.0
            return was_waiting


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: ENOSPC or EDQUOT, or SQLite's "database or disk is full" (also
    as the cause of another error)."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.OperationalError) and (
                getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or str(current) == SQLITE_FULL):
            return True
        current = current.__cause__ or current.__context__
    return False


class Pause:
    """A path that stops taking work while a fault that is no work's own lasts (a full disk, a database that
    cannot write), logged as it starts and ends: a full disk without a traceback, anything else with one."""

    def __init__(self, component: str) -> None:
        self._backoff = Backoff()
        self._name, self._log = component, get_logger(component)

    def ready(self, now: float) -> bool:
        """Whether work may be taken at ``now``."""
        return self._backoff.ready(now)

    def fault(self, exc: Exception) -> None:
        """``exc`` ended a step: wait before the next (``<component>.paused``, or ``.error`` when unexpected)."""
        wait = self._backoff.failed(time.time())
        if out_of_space(exc):
            self._log.warning(f"{self._name}.paused", error="out of space", retry_in_seconds=wait)
        else:
            self._log.error(f"{self._name}.error", retry_in_seconds=wait, exc_info=exc)

    def __enter__(self) -> Pause:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 trace: TracebackType | None) -> bool:
        """A step in ``with pause:`` that raised an :class:`Exception` is a :meth:`fault` (swallowed)."""
        if isinstance(exc, Exception):
            self.fault(exc)
            return True
        return False

    def cleared(self) -> None:
        """A step went through: a pause, if one ran, is over (``<component>.resumed``)."""
        if self._backoff.succeeded():
            self._log.info(f"{self._name}.resumed")
