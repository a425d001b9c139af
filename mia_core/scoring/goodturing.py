"""Simple Good-Turing (Gale & Sampson 1995) and species-richness extrapolation.

``simple_good_turing`` follows Sampson's C implementation step by step (docs/architecture.md).
Good-Turing estimates the probability *mass* of unseen items (P0); the *number* of
memorized strings not yet extracted needs a richness estimator. The curve of new items
after t× more sampling units is Chao et al. (2014)'s extrapolation, which is continuous,
never decreases in t and tends to the Chao1 bound; Good–Toulmin (t ≤ 1, where it is
unbiased) is reported beside it as a cross-check, and Chao1 as a lower bound on the total.
Degenerate tables never give NaN: they fall back to documented estimates and say so in
``warnings``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONFIDENCE = 1.96  # Sampson's C code; the paper's own experiments used 1.65
MIN_DISTINCT_COUNTS = 5  # fewer distinct r values make the log-log fit meaningless


def freq_of_freqs(counts: Iterable[int]) -> dict[int, int]:
    """Item counts (one per distinct item) → ``{r: n_r}`` (zero counts dropped)."""
    table = Counter(int(c) for c in counts if int(c) > 0)
    return dict(sorted(table.items()))


def _clean_table(table: Mapping[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r, n in table.items():
        r, n = int(r), int(n)
        if r < 0 or n < 0:
            raise ValueError(f"frequency table entries must be non-negative, got {r}: {n}")
        if r > 0 and n > 0:
            out[r] = n
    return dict(sorted(out.items()))


@dataclass
class SGTResult:
    """Simple Good-Turing estimates for one frequency-of-frequencies table."""

    table: dict[int, int]
    N: int  # total observations, sum r n_r
    P0: float  # probability that the next observation is a not-yet-seen item
    r_star: dict[int, float]  # smoothed counts r* before renormalisation
    p: dict[int, float]  # probability of one item seen r times, (1 - P0) r*/N'
    slope: float | None
    intercept: float | None
    confidence: float
    method: str  # "sgt" or the fallback used
    warnings: list[str] = field(default_factory=list)

    @property
    def r_star_renormalized(self) -> dict[int, float]:
        """N·p_r: r* rescaled so that seen items share 1 − P0 (the r* column Gale & Sampson publish)."""
        return {r: self.N * p for r, p in self.p.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"N": self.N, "distinct": sum(self.table.values()), "P0": self.P0,
                "r_star": {str(r): v for r, v in self.r_star.items()},
                "r_star_renormalized": {str(r): v for r, v in self.r_star_renormalized.items()},
                "p": {str(r): v for r, v in self.p.items()}, "slope": self.slope,
                "intercept": self.intercept, "confidence": self.confidence, "method": self.method,
                "warnings": list(self.warnings),
                "label": "estimate: assumes generations are independent draws from a fixed distribution"}


def _fit_loglog(rs: list[int], ns: list[int]) -> tuple[float, float]:
    # Z_r = 2 n_r / (t - q): spread n_r over the gap of unobserved counts around r.
    zs = []
    for j, (r, n) in enumerate(zip(rs, ns, strict=True)):
        q = rs[j - 1] if j > 0 else 0
        t = rs[j + 1] if j < len(rs) - 1 else 2 * r - q
        zs.append(2.0 * n / (t - q))
    xs = [math.log(r) for r in rs]
    ys = [math.log(z) for z in zs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx > 0 else 0.0
    return slope, my - slope * mx


def simple_good_turing(table: Mapping[int, int], confidence: float = DEFAULT_CONFIDENCE) -> SGTResult:
    """Simple Good-Turing on ``{r: n_r}``.

    Fallbacks (each adds a warning): an empty table gives P0 = 1 and no r*; fewer than
    5 distinct counts, a fitted slope ≥ −1, or only singletons use the unsmoothed Turing
    estimate r* = (r+1) n_{r+1}/n_r where n_{r+1} > 0 and r* = r (maximum likelihood)
    elsewhere — r* never exceeds what the data support and nothing is NaN.
    """
    if confidence <= 0:
        raise ValueError("the confidence factor must be positive")
    t = _clean_table(table)
    rs, ns = list(t), list(t.values())
    N = sum(r * n for r, n in t.items())
    if N == 0:
        return SGTResult(t, 0, 1.0, {}, {}, None, None, confidence, "empty",
                         ["empty frequency table: nothing observed, P0 = 1 by convention"])
    n1 = t.get(1, 0)
    P0 = n1 / N
    warnings: list[str] = []
    slope = intercept = None
    if len(rs) >= 2:
        slope, intercept = _fit_loglog(rs, ns)
    degenerate = None
    if rs == [1]:
        degenerate = "every item was seen once (all singletons): P0 = 1, no smoothing possible"
    elif len(rs) < MIN_DISTINCT_COUNTS:
        degenerate = f"only {len(rs)} distinct counts (< {MIN_DISTINCT_COUNTS}): log-log fit unreliable"
    elif slope is not None and slope >= -1:
        degenerate = f"fitted slope {slope:.3f} ≥ -1: the Good-Turing fit is invalid"
    r_star: dict[int, float] = {}
    if degenerate:
        warnings.append(degenerate + "; fallback: Turing estimate where r+1 is observed, else r* = r")
        for r, n in t.items():
            r_star[r] = (r + 1) * t[r + 1] / n if r + 1 in t else float(r)
        method = "turing-fallback"
    else:
        assert slope is not None and intercept is not None
        use_smoothed = False
        for r, n in t.items():
            y = r * (1.0 + 1.0 / r) ** (slope + 1.0)  # (r+1) S(r+1)/S(r) with S = exp(a + b log r)
            if not use_smoothed:
                if r + 1 not in t:
                    use_smoothed = True
                else:
                    n_next = t[r + 1]
                    x = (r + 1) * n_next / n
                    bound = confidence * math.sqrt((r + 1) ** 2 * (n_next / n ** 2) * (1.0 + n_next / n))
                    if abs(x - y) <= bound:
                        use_smoothed = True
                    else:
                        r_star[r] = x
                        continue
            r_star[r] = y
        method = "sgt"
    n_prime = sum(t[r] * r_star[r] for r in t)
    if n_prime <= 0:  # only when every r* is 0 (all-singleton fallback)
        p = {r: 0.0 for r in t}
        P0 = 1.0
    else:
        p = {r: (1.0 - P0) * r_star[r] / n_prime for r in t}
    return SGTResult(t, N, P0, r_star, p, slope, intercept, confidence, method, warnings)


def good_toulmin(table: Mapping[int, int], t: float) -> dict[str, Any]:
    """Expected number of *new* distinct items in ``t`` × more observations.

    t ≤ 1: Good–Toulmin U = −Σ (−t)^r n_r (unbiased under Poisson sampling). t > 1: the
    plain series diverges, so Efron–Thisted smoothing multiplies term r by
    P(Binomial(k, 1/(1+t)) ≥ r), with k = ⌈½ log₂(N t²/(t−1))⌉ (Orlitsky, Suresh & Wu 2016).
    Negative values (possible with the alternating series) are clipped to 0 with a warning.
    """
    if t < 0:
        raise ValueError("t must be non-negative")
    tab = _clean_table(table)
    N = sum(r * n for r, n in tab.items())
    warnings: list[str] = []
    if N == 0 or t == 0:
        return {"t": t, "new": 0.0, "method": "none", "warnings": warnings}
    if t <= 1:
        u = -sum((-t) ** r * n for r, n in tab.items())
        method = "good-toulmin"
    else:
        k = max(1, math.ceil(0.5 * math.log2(N * t * t / (t - 1))))
        q = 1.0 / (1.0 + t)
        tail = [0.0] * (k + 2)  # tail[r] = P(Bin(k, q) >= r)
        pmf = [math.comb(k, i) * q ** i * (1 - q) ** (k - i) for i in range(k + 1)]
        for r in range(k, -1, -1):
            tail[r] = tail[r + 1] + pmf[r]
        u = -sum((-t) ** r * tail[r] * n for r, n in tab.items() if r <= k)
        method = f"efron-thisted (k={k}, q=1/(1+t))"
    if u < 0:
        warnings.append(f"extrapolation gave {u:.3g} < 0 new items (too few data); clipped to 0")
        u = 0.0
    return {"t": t, "new": u, "method": method, "warnings": warnings}


def _chao_f0(f1: int, f2: int, T: int) -> tuple[float, str]:
    """Chao et al. (2014)'s estimate of the items not yet seen, with the (T − 1)/T correction:
    (T − 1)/T · f1²/(2 f2) when f2 > 0, else the bias-corrected (T − 1)/T · f1 (f1 − 1)/2."""
    factor = (T - 1) / T if T > 0 else 0.0
    if f2 > 0:
        return factor * f1 * f1 / (2.0 * f2), "(T-1)/T * f1^2/(2 f2)"
    return factor * f1 * (f1 - 1) / 2.0, "(T-1)/T * f1(f1-1)/2 (bias-corrected, f2 = 0)"


def chao1(table: Mapping[int, int], units: int | None = None) -> dict[str, Any]:
    """Chao1 lower bound on the total number of distinct items (seen + unseen): S_obs + f0, with
    f0 as in :func:`chao_extrapolation` (T = ``units``, or N = Σ r f_r without it), so the bound is
    the limit of the extrapolation curve as t → ∞.
    """
    tab = _clean_table(table)
    s_obs = sum(tab.values())
    T = int(units) if units else sum(r * n for r, n in tab.items())
    unseen, form = _chao_f0(tab.get(1, 0), tab.get(2, 0), T)
    return {"observed": s_obs, "unseen_lower_bound": unseen, "total_lower_bound": s_obs + unseen,
            "formula": form, "units": T,
            "label": "estimate (lower bound): assumes independent draws; heterogeneous detectability "
                     "makes the true number larger"}


def chao_extrapolation(table: Mapping[int, int], t: float, units: int | None = None) -> dict[str, Any]:
    """Expected number of *new* distinct items after ``t`` × more sampling units (Chao et al. 2014,
    Ecological Monographs 84:45, eqs. 9 and 14):

        new(t) = f0 · [1 − (1 − f1 / (T f0 + f1))^(t T)],
        f0 = (T − 1)/T · f1²/(2 f2)   (f2 > 0),   (T − 1)/T · f1 (f1 − 1)/2   (f2 = 0),

    where f_r = items found in exactly r units and T = sampling units (prompts or generations,
    those that found nothing included); without ``units``, T = N = Σ r f_r (abundance data).
    new(0) = 0, it never decreases in t, and it tends to f0 (:func:`chao1`'s unseen part) as t → ∞.
    """
    if t < 0:
        raise ValueError("t must be non-negative")
    tab = _clean_table(table)
    n_obs = sum(r * n for r, n in tab.items())
    T = int(units) if units else n_obs
    f1, f2 = tab.get(1, 0), tab.get(2, 0)
    if T <= 1 or f1 == 0 or t == 0:
        return {"t": t, "new": 0.0, "f0": 0.0, "units": T, "method": "chao-2014", "warnings": []}
    f0, _ = _chao_f0(f1, f2, T)
    if f0 <= 0:
        return {"t": t, "new": 0.0, "f0": 0.0, "units": T, "method": "chao-2014", "warnings": []}
    new = f0 * (1.0 - (1.0 - f1 / (T * f0 + f1)) ** (t * T))
    return {"t": t, "new": new, "f0": f0, "units": T, "method": "chao-2014", "warnings": []}


def estimate(table: Mapping[int, int], ts: Iterable[float] = (1, 2, 5, 10),
             confidence: float = DEFAULT_CONFIDENCE, units: int | None = None,
             unit: str = "observation") -> dict[str, Any]:
    """Everything ``mia estimate`` reports for one table, as a JSON-ready dict.

    ``units`` is the number of sampling units behind the table (``unit`` names them: prompt,
    generation); the curve is :func:`chao_extrapolation`, with Good–Toulmin beside it for t ≤ 1.
    """
    tab = _clean_table(table)
    sgt = simple_good_turing(tab, confidence)
    distinct = sum(tab.values())
    curve = []
    for t in ts:
        point = chao_extrapolation(tab, float(t), units)
        point["total"] = distinct + point["new"]
        point["good_toulmin"] = good_toulmin(tab, float(t))["new"] if float(t) <= 1 else None
        curve.append(point)
    return {
        "table": {str(r): n for r, n in tab.items()},
        "observations": sgt.N, "distinct": distinct, "unit": unit,
        "units": units if units else sgt.N,
        "good_turing": sgt.to_dict(),
        "extrapolation": {"points": curve,
                          "label": f"estimate: distinct items expected after t× more {unit}s, i.e. (1 + t)× those "
                                   "made (Chao et al. 2014 extrapolation: continuous, never decreasing in t, "
                                   "bounded by its f0; Good–Toulmin beside it for t ≤ 1); assumes the "
                                   f"{unit}s are independent draws from one fixed distribution"},
        "chao1": chao1(tab, units),
        "warnings": sgt.warnings + [w for c in curve for w in c["warnings"]],
    }
