"""Confidence intervals for proportions, shared by the local validation (``qoq-node evaluate``) and quality
monitoring (``qoq-node quality``): one Wilson score interval for both."""

from __future__ import annotations

import math

#: The two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def wilson(successes: int, trials: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of ``successes`` in ``trials`` (None with no trial)."""
    if trials == 0:
        return None
    p = successes / trials
    scale = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / scale
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)
