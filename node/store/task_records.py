"""What the quality record's tables (answers, verdicts) have in common: rows per task in time order, read as
one dataclass each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from node.store.database import Database

Row = TypeVar("Row")


class TaskRecords(Generic[Row]):
    """Rows of one table, each of a task and at a time, read by ``row`` from ``columns``."""

    def __init__(self, database: Database, table: str, columns: str, time_column: str,
                 row: Callable[[tuple], Row]) -> None:
        self._database = database
        self._table, self._columns, self._time, self._row = table, columns, time_column, row

    def _select(self, where: str, parameters: tuple, order: str | None = None) -> list[Row]:
        """The rows ``where`` says, in ``order`` (oldest first by default)."""
        with self._database.reading() as db:
            rows = db.execute(f"SELECT {self._columns} FROM {self._table} WHERE {where}"  # noqa: S608
                              f" ORDER BY {order or f'{self._time}, rowid'}", parameters)
            return [self._row(row) for row in rows.fetchall()]

    def since(self, t: float, task: str | None = None) -> list[Row]:
        """The rows at or after ``t`` (of ``task`` only, when given), oldest first."""
        if task is None:
            return self._select(f"{self._time} >= ?", (t,))
        return self._select(f"{self._time} >= ? AND task = ?", (t, task))

    def latest(self, n: int, task: str) -> list[Row]:
        """The last ``n`` rows of ``task``, newest first."""
        return self._select("task = ?", (task,), f"{self._time} DESC, rowid DESC LIMIT {int(n)}")

    def first(self, n: int, task: str) -> list[Row]:
        """The first ``n`` rows of ``task`` (the answers': the baseline when no evaluation has been run), oldest
        first."""
        return self._select("task = ?", (task,), f"{self._time}, rowid LIMIT {int(n)}")

    def tasks(self) -> list[str]:
        """Every task there is a row of, by name."""
        with self._database.reading() as db:
            return [task for (task,) in db.execute(
                f"SELECT DISTINCT task FROM {self._table} ORDER BY task").fetchall()]  # noqa: S608
