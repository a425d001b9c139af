"""Rates (count, n, Wilson interval) and how every figure is printed: one module every step may import."""

from __future__ import annotations

import math
from typing import Any


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


def format_rate(r: dict[str, Any]) -> str:
    """``count/n = p%  [95% CI lo–hi%]`` (Wilson), or why the rate is withheld: every rate mia prints."""
    if r.get("withheld"):
        return f"n/a ({r['withheld']})"
    if r["rate"] is None:
        return f"{r['count']}/{r['n']}  (n/a: no eligible row)"
    lo, hi = r["wilson95"]
    return f"{r['count']}/{r['n']} = {100 * r['rate']:.1f}%  [95% CI {100 * lo:.1f}–{100 * hi:.1f}%]"


def format_number(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


#: (JSON key and per-row column, printed name) of the per-position figure, by run kind: the two
#: are different quantities (docs/scoring.md) and never share a name.
POSITION_AGREEMENT = ("position_agreement", "position agreement (generated)")
NEXT_TOKEN_ACCURACY = ("next_token_accuracy", "next-token accuracy (teacher-forced)")


def per_position_name(method: str) -> tuple[str, str]:
    """(JSON key, printed name) of the per-position figure: a generated run's position agreement
    (the fraction of the k positions where the generated token is the true one: Biderman et al.
    2023's Pythia memorization score), or a teacher-forced run's next-token accuracy (argmax =
    truth given the true context), a different and much higher quantity."""
    return NEXT_TOKEN_ACCURACY if method == "teacher-forced" else POSITION_AGREEMENT
