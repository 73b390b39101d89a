"""A progress bar with its ETA, on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class Progress:
    """``done`` of ``total`` studies as a bar, the rate so far giving the time left."""

    def __init__(self, total: int, what: str = "studies", stream: TextIO = sys.stderr) -> None:
        self._total, self._what, self._stream = total, what, stream
        self._done, self._started = 0, time.monotonic()
        self._draw()

    def advance(self, count: int = 1) -> None:
        """``count`` more done; redraw."""
        self._done = min(self._total, self._done + count)
        self._draw()

    def close(self) -> None:
        """End the bar's line."""
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self._started
        share = self._done / self._total if self._total else 1.0
        eta = _clock(elapsed / self._done * (self._total - self._done)) if self._done else "?"
        filled = round(BAR_WIDTH * share)
        self._stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self._done}/{self._total} {self._what} "
                           f"{share:4.0%} elapsed {_clock(elapsed)} ETA {eta}")
        self._stream.flush()
