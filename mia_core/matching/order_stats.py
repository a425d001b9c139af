"""Exact quantiles of more values than a command should hold in memory.

Values (non-negative floats, each with a small integer group code) are appended block by block to two
unnamed temporary files (:class:`SpilledValues`: 12 bytes a value on disk, none in memory). Their order
statistics are then found by radix selection over those files: the bits of a non-negative float64, read as
an unsigned integer, sort as the floats do, so each pass reads the files once, counts the next
``RADIX_BITS`` bits of the values still in the running, and keeps the bucket holding the wanted rank; a
bucket of at most ``GATHER_LIMIT`` values is gathered and partitioned instead. Memory: one read chunk,
one histogram per wanted rank and at most one gathered bucket per wanted rank.
:func:`quantile` then combines two order statistics exactly as ``numpy.quantile``'s default ("linear")
method does, so the figures equal those of ``np.quantile`` over all the values, bit for bit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from mia_core.errors import MiaError

#: Values read from the temporary files at a time (1.5 MB of values and codes).
READ_VALUES = 1 << 17
#: Bits of the key counted per pass (a histogram of 2^12 counts, 32 KB, per wanted rank).
RADIX_BITS = 12
#: A bucket with at most this many values is gathered and partitioned (8 MB at most per wanted rank).
GATHER_LIMIT = 1 << 20


class SpilledValues:
    """Non-negative float64 values and an int32 group code for each, kept in temporary files."""

    def __init__(self) -> None:
        try:
            self._values = tempfile.TemporaryFile(prefix="mia_values_")
            self._codes = tempfile.TemporaryFile(prefix="mia_codes_")
        except OSError as exc:
            raise _refusal(exc) from None
        self.size = 0
        self.counts: dict[int, int] = {}  # values per group code

    def add(self, values: np.ndarray, codes: np.ndarray) -> None:
        """Append ``values`` (finite, ≥ 0) with their group ``codes``."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        codes = np.ascontiguousarray(codes, dtype=np.int32)
        try:
            self._values.write(values.tobytes())
            self._codes.write(codes.tobytes())
        except OSError as exc:
            self.close()
            raise _refusal(exc) from None
        self.size += len(values)
        for code, n in zip(*np.unique(codes, return_counts=True), strict=True):
            self.counts[int(code)] = self.counts.get(int(code), 0) + int(n)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(values, codes), ``READ_VALUES`` at a time, in the order they were added."""
        try:  # the last writes reach the disk here
            for f in (self._values, self._codes):
                f.flush()
                f.seek(0)
        except OSError as exc:
            self.close()
            raise _refusal(exc) from None
        for _ in range(0, self.size, READ_VALUES):
            values = np.frombuffer(self._values.read(8 * READ_VALUES), dtype=np.float64)
            codes = np.frombuffer(self._codes.read(4 * READ_VALUES), dtype=np.int32)
            yield values, codes

    def order_statistics(self, wanted: list[tuple[int | None, int]]) -> dict[tuple[int | None, int], float]:
        """The ``rank``-th smallest value (0-based) of group ``code`` (None: of every value), for each
        ``(code, rank)`` wanted."""
        # each wanted rank: (group, bits of the key still unknown, the known high bits, rank within them, bucket size)
        state = {w: (w[0], 64, 0, w[1], self.size if w[0] is None else self.counts.get(w[0], 0)) for w in wanted}
        found: dict[tuple[int | None, int], float] = {}
        while state:
            buckets = {(g, low, high) for g, low, high, _, _ in state.values()}
            gather = {(g, low, high) for g, low, high, _, n in state.values() if n <= GATHER_LIMIT or low == 0}
            counts = {b: np.zeros(1 << RADIX_BITS, dtype=np.int64) for b in buckets - gather}
            gathered: dict[Any, list[np.ndarray]] = {b: [] for b in gather}
            for values, codes in self.chunks():
                keys = values.view(np.uint64)
                for b in buckets:
                    group, low, high = b
                    mine = keys if group is None else keys[codes == group]
                    if low < 64:
                        mine = mine[(mine >> np.uint64(low)) == np.uint64(high)]
                    if b in gather:
                        gathered[b].append(mine)
                    else:
                        step = min(RADIX_BITS, low)
                        digits = (mine >> np.uint64(low - step)) & np.uint64((1 << step) - 1)
                        counts[b] += np.bincount(digits.astype(np.intp), minlength=1 << RADIX_BITS)
            for w, (group, low, high, rank, _) in list(state.items()):
                b = (group, low, high)
                if b in gather:
                    keys = np.concatenate(gathered[b]) if gathered[b] else np.zeros(0, np.uint64)
                    found[w] = float(np.partition(keys, rank)[rank].view(np.float64))
                    del state[w]
                    continue
                cumulative = np.cumsum(counts[b])
                digit = int(np.searchsorted(cumulative, rank, side="right"))
                before = int(cumulative[digit - 1]) if digit else 0
                step = min(RADIX_BITS, low)
                state[w] = (group, low - step, (high << step) | digit, rank - before, int(counts[b][digit]))
            gathered.clear()
        return found

    def close(self) -> None:
        self._values.close()
        self._codes.close()


def _refusal(exc: OSError) -> MiaError:
    """One line for temporary files that cannot be written (a full or missing temporary folder)."""
    return MiaError(f"cannot write the temporary files of exact quantiles in {tempfile.gettempdir()} "
                    f"({exc.strerror or exc}); they take 12 bytes a row: set TMPDIR to a folder with room")


def quantile_ranks(n: int, q: float) -> tuple[int, int, np.float64]:
    """The two order statistics ``numpy.quantile``'s linear method interpolates for ``n`` values, and the weight."""
    virtual = (n - 1) * np.float64(q)
    below = np.floor(virtual)
    if virtual >= n - 1:  # the largest value (numpy takes the last element for both)
        return n - 1, n - 1, np.float64(0)
    return int(below), int(below) + 1, np.float64(virtual - below)


def interpolate(a: float, b: float, t: np.float64) -> float:
    """numpy.quantile's ``_lerp``: a + (b − a)·t, or b − (b − a)·(1 − t) when t ≥ 0.5."""
    a, b = np.float64(a), np.float64(b)
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)
