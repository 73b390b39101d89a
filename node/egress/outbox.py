"""The outbox's retry policy: exponential backoff with jitter and a cap, per destination."""

from __future__ import annotations

import random

from node.egress.mllp import Delivery
from node.store import DEAD, PENDING, SENT, OutboxState


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before attempt ``attempts + 1``: base·2^(attempts-1), capped, with "equal jitter"
    (between half and all of it) so that many messages to one recovering destination spread out."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * rng.uniform(0.5, 1.0)


def next_state(delivery: Delivery, attempts: int, now: float, base: float, cap: float,
               rng: random.Random) -> tuple[OutboxState, float]:
    """(state, next attempt time) after an attempt that ended with ``delivery`` (``attempts`` made)."""
    if delivery is Delivery.ACCEPTED:
        return SENT, now
    if delivery is Delivery.REJECTED:
        return DEAD, now
    return PENDING, now + backoff_seconds(attempts, base, cap, rng)
