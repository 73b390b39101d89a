"""Blocking work of the HTTP routes run off the event loop: :func:`off_loop` runs a function on a worker thread
and awaits it, at most :attr:`Pool.threads` at once per event loop (each :class:`~node.ops.http.WebServer` has
its own loop, so one server's work never waits for another's). The function runs to its end even when the
request is cancelled (the caller awaits it), so a request's steps stay in order.

Two pools: :data:`OPS` for the operators' answers (a scrape renders every metric) and :data:`REQUESTS` for the
requests' own work (reading a tokens secret, a part of a body written to disk, a verdict stored, ``engine
serve``'s bodies parsed), so that busy uploads never keep a probe waiting for a thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, TypeVarTuple

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")
Args = TypeVarTuple("Args")


@dataclass(frozen=True)
class Pool:
    """Worker threads for blocking work, at most ``threads`` of them busy at once on one event loop."""

    name: str
    threads: int
    _limiter: RunVar[CapacityLimiter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_limiter", RunVar(f"node.ops.offload.{self.name}"))

    def limiter(self) -> CapacityLimiter:
        """This pool's limiter on the running event loop (made on first use)."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = CapacityLimiter(self.threads)
            self._limiter.set(limiter)
            return limiter


#: The ops probes' answers (metrics, readiness, start-up).
OPS = Pool("ops", 4)
#: The work of the API requests (STOW-RS, the feedback API, ``engine serve``).
REQUESTS = Pool("requests", 16)


async def off_loop(function: Callable[[*Args], T], *args: *Args, pool: Pool = REQUESTS) -> T:
    """``function(*args)`` on one of ``pool``'s threads; its result, or its exception."""
    return await anyio.to_thread.run_sync(function, *args, limiter=pool.limiter())
