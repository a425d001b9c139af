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


def summarize(p: np.ndarray, labels: Sequence[str] | np.ndarray | None = None,
              queries: Sequence[int] = DEFAULT_QUERIES, target: float = DEFAULT_TARGET, scheme: str = "",
              label_names: Sequence[str] | None = None, reorder: bool = False) -> dict[str, Any]:
    """The distribution of p over the rows with a finite p, and the share that is (n, target)-
    discoverable for each n, overall and per label (``labels`` each row's label, or its index in
    ``label_names`` when given). ``reorder``: ``p`` may be reordered (its quantiles then partition it in place
    instead of a copy of every value)."""
    p = np.asarray(p, dtype=np.float64)

    def block(values: np.ndarray, mine: bool) -> dict[str, Any]:
        """The figures of ``values``; ``mine``: they may be reordered (the quantiles come last)."""
        finite = np.isfinite(values)
        if not finite.all():
            values, mine = values[finite], True
        del finite
        n = len(values)
        out: dict[str, Any] = {"rows": n}
        if not n:
            return out
        out["mean_p"] = float(values.mean())
        out["quantiles"] = None  # below: partitioning reorders the values
        out["max_p"] = float(values.max())
        out["p_zero"] = int((values == 0).sum())
        out["expected_extracted_per_query"] = float(values.sum())
        out["discoverable"] = {str(k): _discoverable(values, k, target) for k in queries}
        edges = [0.0, 1e-12, 1e-6, 1e-3, 1e-2, 0.1, 0.5, 1.0]
        hist, _ = np.histogram(values, bins=edges)
        out["histogram"] = {f"[{lo:g}, {hi:g}{']' if hi == 1 else ')'}": int(c)
                            for lo, hi, c in zip(edges[:-1], edges[1:], hist, strict=True)}
        out["quantiles"] = {f"{q:g}": float(np.quantile(values, q, overwrite_input=mine)) for q in P_QUANTILES}
        return out

    by_label = None  # first: the overall figures may reorder p
    if labels is not None and label_names is not None:
        by_label = {(name or "unlabelled"): block(p[labels == label_names.index(name)], True)
                    for name in sorted(label_names)}
    elif labels is not None:
        labels = np.asarray([str(x) for x in labels], dtype=object)
        by_label = {(lab or "unlabelled"): block(p[labels == lab], True) for lab in sorted(set(labels.tolist()))}
    summary = {"scheme": scheme, "target": target, "queries": list(queries),
               "definition": "p = product over the suffix of the sampling distribution's probability of the true "
                             "token (teacher forcing); (n, target)-discoverable: 1 - (1 - p)^n >= target "
                             "(Hayes et al. 2024)",
               **block(p, reorder)}
    if by_label is not None:
        summary["by_label"] = by_label
    return summary


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
    (:meth:`add`) for :meth:`summary`: its quantiles need every value, so each eligible row keeps its p (float64)
    and its label's code (one byte while a run has at most 256 labels): 9 bytes a row, and at most as much again
    while one label's figures are made (its values copied); the log-probabilities are read a block at a time."""

    def __init__(self, run: Any, k: int) -> None:
        self.run, self.k = run, k
        self.column, self.scheme = "logprobs", "pure sampling: temperature 1, no top-k/top-p"
        if run.has("sampled_logprobs"):
            self.column, self.scheme = "sampled_logprobs", "sampling scheme: " + describe_scheme(
                run.attrs.get("temperature"), run.attrs.get("top_k"), run.attrs.get("top_p"))
        self.p = np.empty(len(run), dtype=np.float64)
        self.codes = np.empty(len(run), dtype=np.uint8)  # widened when a run has more labels
        self.names: list[str] = []
        self.size = 0

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
        end = self.size + len(picked)
        self.p[self.size:end] = [suffix_probability(stored[i][:self.k]) for i in picked]
        codes = label_codes(labels[picked], self.names)
        if len(self.names) > np.iinfo(self.codes.dtype).max + 1:
            self.codes = self.codes.astype(np.int32)
        self.codes[self.size:end] = codes
        self.size = end

    def summary(self, queries: Sequence[int] = DEFAULT_QUERIES, target: float = DEFAULT_TARGET) -> dict[str, Any]:
        return summarize(self.p[:self.size], self.codes[:self.size], queries=queries, target=target,
                         scheme=self.scheme + f", first k = {self.k}", label_names=self.names, reorder=True)

