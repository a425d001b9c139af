"""An attack's per-string values on disk, and the figures of more strings than a command should hold in memory.

:class:`Spill` keeps each column (membership codes, text hashes, one per signal) in an unnamed temporary file in
``TMPDIR``, so an attack's memory does not grow with its strings. Up to ``IN_MEMORY_STRINGS`` usable strings a
signal is evaluated in memory (scikit-learn's ROC, the percentile bootstrap: ``metrics.evaluate_signal``). Beyond,
:func:`streamed_metrics` reads the values in ascending order, ``SORT_VALUES`` at a time (an external sort: a
histogram of the keys' leading bits splits them into ranges of at most ``SORT_VALUES`` values, each gathered in one
pass over the file and sorted), and counts on the way:

- the AUC as Mann–Whitney's U, ties counting one half (scikit-learn's value, to the last bits of the sum);
- TPR at each FPR target under the same strictly-below convention, on counts;
- the AUC's interval by DeLong et al. (1988): the variance of the AUC from each string's placement among the other
  class (its structural components), with the normal quantile. The bootstrap's thousand resamples of millions of
  strings would each take the memory this avoids, and at that size the two agree: on 2·10^5 strings (AUC 0.50 and
  0.59) DeLong's intervals were 0.00506 and 0.00497 wide, 300 bootstrap resamples' 0.00514 and 0.00507, their
  centres 0.0003 apart. The TPR intervals, which only a bootstrap gives, are withheld with that reason;
- the ROC points a plot needs (``metrics.plot_points``' rule, applied as the points stream by).

:func:`streamed_duplicates` counts duplicate text hashes in the same way (ranges of the hash's leading bits).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np
from scipy.stats import norm

from mia_core.errors import MiaError

#: Usable strings up to which a signal is evaluated in memory (about 70 bytes a string while it is).
IN_MEMORY_STRINGS = 200_000
#: Values read from a temporary file at a time.
READ_VALUES = 1 << 17
#: Values sorted in memory at a time by the external sort (about 17 bytes each while they are).
SORT_VALUES = 1 << 19
#: Leading key bits a histogram pass splits a range by.
HISTOGRAM_BITS = 16


class Spill:
    """Named columns of one value per string, appended block by block to temporary files."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[IO[bytes], np.dtype]] = {}
        self.sizes: dict[str, int] = {}

    def append(self, name: str, values: np.ndarray, dtype: Any) -> None:
        values = np.ascontiguousarray(values, dtype=dtype)
        if name not in self._files:
            self._files[name] = (_temporary(), np.dtype(dtype))
            self.sizes[name] = 0
        f, _ = self._files[name]
        try:
            f.write(values.tobytes())
        except OSError as exc:
            self.close()
            raise _refusal(exc) from None
        self.sizes[name] += len(values)

    def names(self) -> list[str]:
        return list(self._files)

    def read(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The whole column (or its values at ``rows``), in memory."""
        if name not in self._files:
            return np.zeros(0)
        f, dtype = self._files[name]
        self._flush(f)
        if not self.sizes[name]:
            return np.zeros(0, dtype)
        column = np.memmap(f, dtype=dtype, mode="r", shape=(self.sizes[name],))
        return np.array(column if rows is None else column[rows])

    def chunks(self, *names: str) -> Iterator[tuple[np.ndarray, ...]]:
        """The columns ``names`` side by side, ``READ_VALUES`` rows at a time, in the order they were appended."""
        files = [self._files[n] for n in names]
        for f, _ in files:
            self._flush(f)
            f.seek(0)
        for _ in range(0, self.sizes[names[0]], READ_VALUES):
            yield tuple(np.frombuffer(f.read(dtype.itemsize * READ_VALUES), dtype=dtype) for f, dtype in files)

    def _flush(self, f: IO[bytes]) -> None:
        try:
            f.flush()
        except OSError as exc:
            self.close()
            raise _refusal(exc) from None

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()


def _temporary() -> IO[bytes]:
    try:
        return tempfile.TemporaryFile(prefix="mia_attack_")
    except OSError as exc:
        raise _refusal(exc) from None


def _refusal(exc: OSError) -> MiaError:
    """One line for temporary files that cannot be written (a full or missing temporary folder)."""
    return MiaError(f"cannot write an attack's temporary files in {tempfile.gettempdir()} ({exc.strerror or exc}); "
                    "they take 9 bytes a string and 8 more per signal: set TMPDIR to a folder with room")


def sort_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned integers that sort as the finite floats ``values`` do (-0.0 and 0.0 alike)."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


Pairs = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # (keys, flags) chunks, read again at each call


def sorted_runs(pairs: Pairs, limit: int = SORT_VALUES) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (key, flag) of ``pairs`` in ascending key order, as sorted runs of at most ``limit`` values (or of one
    key repeated); equal keys never straddle two runs."""
    for ranges in _batches(_ranges(pairs, 0, 64, limit), limit):
        lo, hi = ranges[0][0], ranges[-1][1]
        keys, flags = [], []
        for k, f in pairs():
            inside = _within(k, lo, hi)
            keys.append(k[inside])
            flags.append(f[inside])
        k, f = np.concatenate(keys), np.concatenate(flags)
        order = np.argsort(k, kind="stable")
        yield k[order], f[order]


def _within(keys: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Which keys lie in [lo, hi) (``hi`` up to 2^64)."""
    inside = keys >= np.uint64(lo)
    if hi < 1 << 64:
        inside &= keys < np.uint64(hi)
    return inside


def _ranges(pairs: Pairs, lo: int, width: int, limit: int) -> Iterator[tuple[int, int, int]]:
    """Consecutive key ranges (lo, hi, count) covering [lo, lo + 2^width), each with at most ``limit`` keys or one
    key: one histogram pass over the keys in the range by their next ``HISTOGRAM_BITS`` bits, then the same for any
    bucket above ``limit``."""
    step = max(width - HISTOGRAM_BITS, 0)
    buckets = 1 << (width - step)
    counts = np.zeros(buckets, dtype=np.int64)
    for k, _ in pairs():
        mine = k[_within(k, lo, lo + (1 << width))]
        counts += np.bincount(((mine - np.uint64(lo)) >> np.uint64(step)).astype(np.intp), minlength=buckets)
    for b in np.flatnonzero(counts).tolist():
        start = lo + (b << step)
        if counts[b] > limit and step > 0:
            yield from _ranges(pairs, start, step, limit)
        else:
            yield start, start + (1 << step), int(counts[b])


def _batches(ranges: Iterator[tuple[int, int, int]], limit: int) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive ranges grouped so that each group holds at most ``limit`` keys (or is one range)."""
    group: list[tuple[int, int, int]] = []
    total = 0
    for r in ranges:
        if group and total + r[2] > limit:
            yield group
            group, total = [], 0
        group.append(r)
        total += r[2]
    if group:
        yield group


class _Curve:
    """Keeps the ROC points a plot needs as they stream by (``metrics.plot_points``' rule: a point and the one
    before it wherever the curve enters another cell of a log-FPR × TPR grid)."""

    def __init__(self, grid: int, smallest_fpr: float) -> None:
        self.fpr_edges = np.geomspace(max(smallest_fpr, 1e-12), 1.0, grid)
        self.tpr_edges = np.linspace(0.0, 1.0, grid)
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: tuple[float, float, int] | None = None  # the last point seen and its cell

    def add(self, fpr: np.ndarray, tpr: np.ndarray) -> None:
        if not len(fpr):
            return
        cells = np.searchsorted(self.fpr_edges, fpr) * (len(self.tpr_edges) + 1) + np.searchsorted(self.tpr_edges,
                                                                                                       tpr)
        previous = np.concatenate([[-1 if self.last is None else self.last[2]], cells[:-1]])
        change = np.flatnonzero(cells != previous)
        take = np.unique(np.concatenate([change, np.maximum(change - 1, 0), [len(fpr) - 1]]))
        if self.last is not None and len(change) and change[0] == 0:
            self.kept.append((np.array([self.last[0]]), np.array([self.last[1]])))
        self.kept.append((fpr[take], tpr[take]))
        self.last = (float(fpr[-1]), float(tpr[-1]), int(cells[-1]))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        fpr = np.concatenate([f for f, _ in self.kept])
        tpr = np.concatenate([t for _, t in self.kept])
        order = np.lexsort((tpr, fpr))
        fpr, tpr = fpr[order], tpr[order]
        keep = np.concatenate([[True], (np.diff(fpr) != 0) | (np.diff(tpr) != 0)])
        return fpr[keep], tpr[keep]


def streamed_metrics(pairs: Pairs, n_members: int, n_nonmembers: int, targets: tuple[float, ...], level: float,
                     grid: int) -> dict[str, Any]:
    """AUC, its DeLong interval, TPR at each FPR target and the plot's ROC points of the (key, is-member) ``pairs``
    (keys from :func:`sort_keys`), read in ascending order; see the module's docstring."""
    p, n = n_members, n_nonmembers
    neg_below = pos_below = 0
    u = sum_v10 = sum_v01 = 0.0
    tp_at = {t: 0 for t in targets}  # TP at the lowest threshold whose FP < t·n (threshold +inf: TP 0)
    found = {t: False for t in targets}
    curve = _Curve(grid, 1.0 / max(n, 1))
    for keys, members in sorted_runs(pairs):
        starts = np.concatenate([[0], np.flatnonzero(np.diff(keys)) + 1])
        pos = np.add.reduceat(members.astype(np.int64), starts)
        neg = np.add.reduceat((~members).astype(np.int64), starts)
        neg_before = neg_below + np.concatenate([[0], np.cumsum(neg)[:-1]])
        pos_before = pos_below + np.concatenate([[0], np.cumsum(pos)[:-1]])
        v10 = (neg_before + neg / 2.0) / n  # each member's share of nonmembers below it (ties half)
        v01 = (p - pos_before - pos + pos / 2.0) / p  # each nonmember's share of members above it
        u += float(np.sum(pos * (neg_before + neg / 2.0)))
        sum_v10 += float(np.sum(pos * v10 * v10))
        sum_v01 += float(np.sum(neg * v01 * v01))
        fp, tp = n - neg_before, p - pos_before  # calling members the scores ≥ each distinct value
        for t in targets:
            below = np.flatnonzero(fp < t * n - 1e-9)
            if not found[t] and len(below):
                tp_at[t], found[t] = int(tp[below[0]]), True
        curve.add(fp / n, tp / p)  # one ROC point per distinct score, from (1, 1) down
        neg_below += int(neg.sum())
        pos_below += int(pos.sum())
    curve.add(np.array([0.0]), np.array([0.0]))  # threshold +inf: nothing called a member
    auc = u / (p * n)
    var = ((sum_v10 - p * auc * auc) / (p - 1) / p if p > 1 else math.inf) + \
          ((sum_v01 - n * auc * auc) / (n - 1) / n if n > 1 else math.inf)
    half = float(norm.ppf(0.5 + level / 2.0)) * math.sqrt(max(var, 0.0))
    fpr, tpr = curve.points()
    return {"auc": auc, "low": max(0.0, auc - half), "high": min(1.0, auc + half),
            "tpr": {t: tp_at[t] / p for t in targets}, "fpr_points": fpr, "tpr_points": tpr}


def streamed_duplicates(keys: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]) -> tuple[int, int, int]:
    """(extra member copies, extra nonmember copies, hashes labelled both) of (text hash, membership code) chunks,
    labelled strings only, counted ``SORT_VALUES`` hashes at a time."""
    within_members = within_nonmembers = across = 0

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k, codes in keys():
            labelled = codes >= 0
            yield k[labelled], codes[labelled] == 1

    for k, members in sorted_runs(pairs):
        m, nm = np.unique(k[members]), np.unique(k[~members])
        within_members += int(members.sum()) - len(m)
        within_nonmembers += int((~members).sum()) - len(nm)
        across += len(np.intersect1d(m, nm, assume_unique=True))
    return within_members, within_nonmembers, across
