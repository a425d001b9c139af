"""Small statistics helpers shared by the summaries."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int) -> dict[str, float | int | list[float] | None]:
    """``{"count", "n", "rate", "wilson95"}`` (rate None when n = 0)."""
    lo, hi = wilson_interval(successes, n)
    return {"count": int(successes), "n": int(n), "rate": (successes / n) if n else None, "wilson95": [lo, hi]}
