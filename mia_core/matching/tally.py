"""The figures of a run's match scores, accumulated one block of rows at a time (issue #27: memory independent
of the run's size).

Every figure `mia score` and the check print is a count, a sum of small integers or an order statistic of the
matched lengths, so a few integers per group (every row, each label, each prefix-start bucket) and a histogram of
the matched lengths (k + 1 counts) give them exactly, whatever the number of rows and however they are sliced:

- a group's rates: counts of its rows, failed, eligible, exact and approximate rows;
- its mean matched length: the sum of the eligible rows' matched lengths over their number;
- its mean per-position figure (position agreement or next-token accuracy): the positions that agree, summed over
  the eligible rows (each row's agreement times its k, an integer), over k times their number: the exact mean
  (a float32 mean over every row gave it to about 7 digits before);
- the matched lengths' mean, median and maximum: from their histogram (they are integers from 0 to k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.formatting import per_position_name, rate
from mia_core.matching.tokens import MatchScores

#: Buckets of the map's ``prefix_start`` (token offset of the prefix in its document): (first, last, name).
START_BUCKETS = ((0, 0, "0 (document start)"), (1, 99, "1-99"), (100, 999, "100-999"), (1000, None, "1000+"))


@dataclass
class GroupTally:
    """Counts and sums over one group of rows; ``eligible`` rows: true suffix of at least k tokens and request
    not failed (the scores' ``eligible`` must already exclude the failed rows)."""

    rows: int = 0
    failed: int = 0
    eligible: int = 0
    exact: int = 0
    approximate: int = 0
    matched_length: int = 0  # summed over the eligible rows
    agreeing_positions: int = 0  # agreement x k, summed over the eligible rows

    def add(self, mask: np.ndarray, scores: MatchScores, failed: np.ndarray) -> None:
        """Count the rows of one block that ``mask`` selects."""
        el = mask & scores.eligible
        self.rows += int(mask.sum())
        self.failed += int((mask & failed).sum())
        self.eligible += int(el.sum())
        self.exact += int((scores.exact & el).sum())
        self.approximate += int((scores.approximate & el).sum())
        self.matched_length += int(scores.matched_length[el].sum(dtype=np.int64))
        self.agreeing_positions += int(np.rint(scores.agreement[el].astype(np.float64) * scores.k[el]).sum())

    def figures(self, method: str, k: int) -> dict[str, Any]:
        """Every figure of the group over the same rows: those of the group that are eligible."""
        n = self.eligible
        key, _ = per_position_name(method)
        approximate = rate(self.approximate, n)
        if method == "teacher-forced":
            approximate = {"count": None, "n": n, "rate": None, "wilson95": None,
                           "withheld": "teacher-forced runs have no generated text to compare"}
        return {"rows": self.rows, "failed": self.failed, "eligible": n, "extraction": rate(self.exact, n),
                "approximate": approximate,
                "mean_matched_length": self.matched_length / n if n else None,
                key: self.agreeing_positions / (n * k) if n else None}


@dataclass
class MatchTally:
    """The figures of a whole run, from its blocks (:meth:`add`): every row, each label, each prefix-start bucket
    (when the blocks give the starts), the matched lengths' histogram and the fully agreeing rows."""

    k: int
    every: GroupTally = field(default_factory=GroupTally)
    by_label: dict[str, GroupTally] = field(default_factory=dict)
    by_start: dict[str, GroupTally] = field(default_factory=lambda: {name: GroupTally() for *_, name in START_BUCKETS})
    short_suffix: int = 0  # not eligible although not failed
    fully_agreeing: int = 0  # eligible rows whose agreement is 1 (Pythia's memorized)
    histogram: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.histogram = np.zeros(self.k + 1, dtype=np.int64)

    def add(self, scores: MatchScores, failed: np.ndarray, labels: np.ndarray,
            starts: np.ndarray | None = None) -> None:
        """One block's scores (``eligible`` excluding its failed rows), failed rows, labels and prefix starts."""
        every = np.ones(len(failed), dtype=bool)
        el = scores.eligible
        self.every.add(every, scores, failed)
        self.short_suffix += int((~el & ~failed).sum())
        self.fully_agreeing += int((scores.agreement[el] == 1).sum())
        self.histogram += np.bincount(scores.matched_length[el], minlength=self.k + 1)[:self.k + 1]
        for label in np.unique(labels).tolist():
            self.by_label.setdefault(str(label), GroupTally()).add(labels == label, scores, failed)
        if starts is not None:
            for lo, hi, name in START_BUCKETS:
                mask = (starts >= lo) & ((starts <= hi) if hi is not None else True)
                self.by_start[name].add(mask, scores, failed)

    def label_figures(self, method: str) -> dict[str, dict[str, Any]]:
        """Each label's figures, labels sorted, "" named "unlabelled"."""
        return {(label or "unlabelled"): self.by_label[label].figures(method, self.k)
                for label in sorted(self.by_label)}

    def start_figures(self, method: str) -> dict[str, dict[str, Any]]:
        """Each prefix-start bucket's figures (the buckets with rows)."""
        return {name: g.figures(method, self.k) for name, g in self.by_start.items() if g.rows}

    def matched_length_summary(self) -> dict[str, Any]:
        """Mean, median (numpy's: the mean of the two middle values), maximum and histogram of the eligible rows'
        matched lengths."""
        return matched_length_summary(self.histogram)


def matched_length_summary(histogram: np.ndarray) -> dict[str, Any]:
    """The figures of integers 0..k given as a histogram of k + 1 counts."""
    n = int(histogram.sum())
    out: dict[str, Any] = {"mean": None, "median": None, "max": None}
    if n:
        cumulative = np.cumsum(histogram)
        lower, upper = (int(np.searchsorted(cumulative, rank, side="right")) for rank in ((n - 1) // 2, n // 2))
        out = {"mean": int(np.dot(np.arange(len(histogram)), histogram)) / n, "median": (lower + upper) / 2,
               "max": int(np.flatnonzero(histogram)[-1])}
    out["histogram"] = {str(i): int(c) for i, c in enumerate(histogram)}
    return out


def label_codes(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Each label's index in ``names`` (new labels appended to it): a small integer a row instead of a string."""
    distinct, inverse = np.unique(labels, return_inverse=True)
    codes = []
    for label in distinct.tolist():
        if label not in names:
            names.append(label)
        codes.append(names.index(label))
    return np.asarray(codes, dtype=np.int32)[inverse.reshape(-1)] if len(distinct) else np.zeros(0, np.int32)
