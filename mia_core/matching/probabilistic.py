"""Probabilistic extraction (Hayes et al. 2024, "Measuring memorization in language models via
probabilistic extraction").

A greedy verdict says whether one decoding reproduces a suffix. Under a sampling scheme (temperature,
top-k, top-p) the model reproduces the true suffix s_1..s_k after the prefix with probability

    p = ∏_t q(s_t | prefix, s_<t),

q being the distribution the scheme samples from. One teacher-forced pass gives every factor. A
suffix is *(n, target)-discoverable* when n independent queries reproduce it at least once with
probability 1 − (1 − p)^n ≥ target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mia_core.matching.order_stats import SpilledValues, interpolate, quantile_ranks
from mia_core.matching.tally import label_codes

DEFAULT_QUERIES = (1, 10, 100, 1000, 10000)
DEFAULT_TARGET = 0.9
P_QUANTILES = (0.5, 0.9, 0.99)


def suffix_probability(sampled_logprob: Sequence[float]) -> float:
    """p = exp(Σ log q(s_t)) over the given suffix positions; NaN when a position is unscored."""
    values = np.asarray(sampled_logprob, dtype=np.float64)
    if not len(values) or np.isnan(values).any():
        return float("nan")
    return float(np.exp(values.sum()))


def discovery_probability(p: np.ndarray | float, n: int) -> np.ndarray:
    """1 − (1 − p)^n, computed as −expm1(n·log1p(−p)) so a tiny p keeps its digits."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return -np.expm1(n * np.log1p(-p))


def queries_needed(p: float, target: float = DEFAULT_TARGET) -> float:
    """The fewest queries n with 1 − (1 − p)^n ≥ target (inf when p = 0)."""
    if not p > 0:
        return math.inf
    if p >= 1:
        return 1
    return max(1, math.ceil(math.log1p(-target) / math.log1p(-p) - 1e-12))


def probabilities(backend: Any, prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]],
                  sampling: Any, batch_size: int = 8) -> np.ndarray:
    """p for each (prefix, suffix) from teacher-forced passes of ``backend.score(..., sampling=)``;
    sequences of one prefix length share a call."""
    from mia_core.errors import MiaError
    from mia_core.types import scores_sampling

    if not scores_sampling(backend):
        raise MiaError(f"model {getattr(backend, 'name', '?')!r} cannot score under a sampling scheme "
                       "(its score() has no sampling option), so probabilistic extraction is unavailable")
    out = np.full(len(prefixes), np.nan)
    groups: dict[int, list[int]] = {}
    for i, (p, s) in enumerate(zip(prefixes, suffixes, strict=True)):
        if len(s):
            groups.setdefault(len(p), []).append(i)
    for plen, rows in groups.items():
        for a in range(0, len(rows), max(1, batch_size)):
            chunk = rows[a:a + batch_size]
            seqs = [list(map(int, prefixes[i])) + list(map(int, suffixes[i])) for i in chunk]
            for i, sc in zip(chunk, backend.score(seqs, plen, distribution=False, sampling=sampling), strict=True):
                out[i] = suffix_probability(sc.sampled_logprob)
    return out


DEFINITION = ("p = product over the suffix of the sampling distribution's probability of the true token (teacher "
              "forcing); (n, target)-discoverable: 1 - (1 - p)^n >= target (Hayes et al. 2024)")
#: Edges of the histogram of p.
EDGES = (0.0, 1e-12, 1e-6, 1e-3, 1e-2, 0.1, 0.5, 1.0)


class _Figures:
    """The figures of a set of finite p, counted chunk by chunk (:meth:`add`): all but the quantiles."""

    def __init__(self, queries: Sequence[int], target: float) -> None:
        self.queries, self.target = list(queries), target
        self.rows, self.total, self.max, self.zero = 0, np.float64(0), -math.inf, 0
        self.discoverable = dict.fromkeys(self.queries, 0)
        self.histogram = np.zeros(len(EDGES) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self.rows += len(values)
        self.total += values.sum()
        self.max = max(self.max, float(values.max()))
        self.zero += int((values == 0).sum())
        for n in self.queries:
            self.discoverable[n] += _discoverable(values, n, self.target)
        self.histogram += np.histogram(values, bins=EDGES)[0]

    def block(self, quantiles: dict[str, float] | None) -> dict[str, Any]:
        """The figures, with ``quantiles`` (by ``f"{q:g}"`` of :data:`P_QUANTILES`) when there are rows."""
        out: dict[str, Any] = {"rows": self.rows}
        if not self.rows:
            return out
        out["mean_p"] = float(self.total / self.rows)
        out["quantiles"] = quantiles
        out["max_p"] = self.max
        out["p_zero"] = self.zero
        out["expected_extracted_per_query"] = float(self.total)
        out["discoverable"] = {str(n): c for n, c in self.discoverable.items()}
        out["histogram"] = {f"[{lo:g}, {hi:g}{']' if hi == 1 else ')'}": int(c)
                            for lo, hi, c in zip(EDGES[:-1], EDGES[1:], self.histogram, strict=True)}
        return out


def _assemble(scheme: str, target: float, queries: Sequence[int], overall: dict[str, Any],
              by_label: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    summary = {"scheme": scheme, "target": target, "queries": list(queries), "definition": DEFINITION, **overall}
    if by_label is not None:
        summary["by_label"] = by_label
    return summary


def summarize(p: np.ndarray, labels: Sequence[str] | np.ndarray | None = None,
              queries: Sequence[int] = DEFAULT_QUERIES, target: float = DEFAULT_TARGET,
              scheme: str = "") -> dict[str, Any]:
    """The distribution of p over the rows with a finite p, and the share that is (n, target)-
    discoverable for each n, overall and per label (``labels``: each row's label), from values in memory
    (:class:`ProbabilityTally` gives the same figures for a run of any size)."""
    p = np.asarray(p, dtype=np.float64)

    def block(values: np.ndarray) -> dict[str, Any]:
        values = values[np.isfinite(values)]
        figures = _Figures(queries, target)
        figures.add(values)
        quantiles = {f"{q:g}": float(np.quantile(values, q)) for q in P_QUANTILES} if len(values) else None
        return figures.block(quantiles)

    by_label = None
    if labels is not None:
        labels = np.asarray([str(x) for x in labels], dtype=object)
        by_label = {(lab or "unlabelled"): block(p[labels == lab]) for lab in sorted(set(labels.tolist()))}
    return _assemble(scheme, target, queries, block(p), by_label)


#: Values of p whose discovery probability is computed at once (its temporaries: a few float64 per value).
DISCOVERY_CHUNK = 65_536


def _discoverable(p: np.ndarray, n: int, target: float) -> int:
    """How many of ``p`` are (n, target)-discoverable, counted ``DISCOVERY_CHUNK`` values at a time."""
    return sum(int((discovery_probability(p[i:i + DISCOVERY_CHUNK], n) >= target).sum())
               for i in range(0, len(p), DISCOVERY_CHUNK))


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines: the distribution of p, then the discoverable share at each n."""
    n = summary.get("rows", 0)
    head = f"probabilistic extraction ({summary['scheme']}; Hayes et al. 2024), over {n} rows with a finite p"
    if not n:
        return head + ": none"
    q = summary["quantiles"]
    lines = [head + ":",
             f"  p: mean {summary['mean_p']:.3g}, median {q['0.5']:.3g}, 90th pct {q['0.9']:.3g}, "
             f"99th pct {q['0.99']:.3g}, max {summary['max_p']:.3g}; p = 0 (a token outside the scheme) "
             f"{summary['p_zero']}",
             "  (n, p)-discoverable, 1 - (1 - p)^n >= " + f"{summary['target']:g}: " + ", ".join(
                 f"n={k}: {c} ({c / n:.1%})" for k, c in summary["discoverable"].items())]
    for label, b in (summary.get("by_label") or {}).items():
        if b.get("rows"):
            lines.append(f"  {label}: mean p {b['mean_p']:.3g}; discoverable " + ", ".join(
                f"n={k}: {c}/{b['rows']}" for k, c in b["discoverable"].items()))
    return "\n".join(lines)


def describe_scheme(temperature: float | None, top_k: int | None, top_p: float | None) -> str:
    """A sampling scheme in words, as every probabilistic-extraction summary names it."""
    parts = [f"temperature {float(temperature or 0):g}"]
    parts.append(f"top-k {top_k}" if top_k else "no top-k")
    parts.append(f"top-p {float(top_p):g}" if top_p else "no top-p")
    return ", ".join(parts)


class ProbabilityTally:
    """p of each eligible row of a run that stores the true tokens' log-probabilities, gathered block by block
    (:meth:`add`) for :meth:`summary`. The quantiles need every value: each finite p and its label's code go to
    temporary files (:class:`~mia_core.matching.order_stats.SpilledValues`, 12 bytes a row on disk), and
    :meth:`summary` reads them back a chunk at a time, so memory does not grow with the run's rows. The figures
    equal :func:`summarize` over the same values (its quantiles bit for bit; sums to the last bits)."""

    def __init__(self, run: Any, k: int) -> None:
        self.run, self.k = run, k
        self.column, self.scheme = "logprobs", "pure sampling: temperature 1, no top-k/top-p"
        if run.has("sampled_logprobs"):
            self.column, self.scheme = "sampled_logprobs", "sampling scheme: " + describe_scheme(
                run.attrs.get("temperature"), run.attrs.get("top_k"), run.attrs.get("top_p"))
        self.values = SpilledValues()
        self.names: list[str] = []

    @staticmethod
    def applies(run: Any) -> bool:
        """Whether the run stores the true tokens' log-probabilities (a teacher-forced run)."""
        return bool(run.has("sampled_logprobs") or run.has("logprobs"))

    def add(self, rows: slice, eligible: np.ndarray, labels: np.ndarray) -> None:
        """The eligible rows of one block (``rows`` of the run; ``eligible`` and ``labels`` of those rows)."""
        picked = np.flatnonzero(eligible)
        if not len(picked):
            return
        stored = self.run.read(self.column, rows)
        p = np.array([suffix_probability(stored[i][:self.k]) for i in picked], dtype=np.float64)
        codes = label_codes(labels[picked], self.names)
        finite = np.isfinite(p)
        self.values.add(p[finite], codes[finite])

    def summary(self, queries: Sequence[int] = DEFAULT_QUERIES, target: float = DEFAULT_TARGET) -> dict[str, Any]:
        """:func:`summarize`'s figures, overall and by label (every label seen, with or without a finite p)."""
        overall = _Figures(queries, target)
        by_code = {code: _Figures(queries, target) for code in range(len(self.names))}
        for values, codes in self.values.chunks():
            overall.add(values)
            for code in np.unique(codes).tolist():
                by_code[code].add(values[codes == code])
        groups = [(None, overall)] + list(by_code.items())
        wanted = {(code, q): quantile_ranks(figures.rows, q) for code, figures in groups if figures.rows
                  for q in P_QUANTILES}
        found = self.values.order_statistics(sorted({(code, rank) for (code, _), (lo, hi, _) in wanted.items()
                                                     for rank in (lo, hi)}, key=lambda w: (w[0] is not None, w)))
        self.values.close()

        def block(code: int | None, figures: _Figures) -> dict[str, Any]:
            quantiles = {f"{q:g}": interpolate(found[(code, wanted[(code, q)][0])], found[(code, wanted[(code, q)][1])],
                                               wanted[(code, q)][2]) for q in P_QUANTILES} if figures.rows else None
            return figures.block(quantiles)

        by_label = {(self.names[code] or "unlabelled"): block(code, by_code[code])
                    for code in sorted(range(len(self.names)), key=lambda c: self.names[c])}
        return _assemble(self.scheme + f", first k = {self.k}", target, queries, block(None, overall),
                         by_label)
