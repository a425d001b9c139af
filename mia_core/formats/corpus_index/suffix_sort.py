"""Suffix array of a token array by prefix doubling (numpy), robust to repetitive text.

tokengrams' builder compares suffixes directly, which is quadratic when the text repeats
(one word 2 M times ran for more than 12 minutes). Prefix doubling sorts suffixes by their
first 1, 2, 4, ... tokens, each round re-sorting only the suffixes still tied with another,
so a round costs at most one sort of the tied suffixes and there are at most log2(longest
repeat) + 1 rounds: O(n log n) per round on repetitive text, and on ordinary text a few
rounds over a shrinking set. The order is tokengrams' (token value, a suffix that ends
first being smaller), so the table it writes is the one tokengrams reads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _group_starts(new_group: np.ndarray) -> np.ndarray:
    """Index (into the same array) of the first element of each element's group."""
    idx = np.arange(len(new_group), dtype=np.int64)
    return np.maximum.accumulate(np.where(new_group, idx, 0))


def suffix_array(tokens: np.ndarray, on_settled: Callable[[int], None] | None = None) -> np.ndarray:
    """Positions of all suffixes of ``tokens`` in sorted order (uint64).

    ``on_settled(k)`` is called with the number of suffixes whose final place became known
    in each round (progress reporting: the calls add up to ``len(tokens)``).
    """
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    first, span = _packed_prefixes(tokens)
    sa = np.argsort(first).astype(np.int64)
    first = first[sa]
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(first[1:], first[:-1], out=boundary[1:])
    del first
    rank = np.empty(n, dtype=np.int64)
    rank[sa] = _group_starts(boundary)  # rank = where the suffix's group starts in sa
    slots = _unsettled(boundary, np.arange(n, dtype=np.int64), on_settled, n)
    while slots.size:
        pos = sa[slots]
        after = pos + span
        second = np.full(len(pos), -1, dtype=np.int64)  # past the end: smaller than every token
        inside = after < n
        second[inside] = rank[after[inside]]
        key = rank[pos] * (n + 1) + (second + 1)
        del second, after, inside
        order = np.argsort(key, kind="stable")
        pos, key = pos[order], key[order]
        del order
        sa[slots] = pos
        boundary = np.empty(len(key), dtype=bool)
        boundary[0] = True
        np.not_equal(key[1:], key[:-1], out=boundary[1:])
        del key
        rank[pos] = slots[_group_starts(boundary)]
        slots = _unsettled(boundary, slots, on_settled, n)
        span *= 2
    return sa.astype(np.uint64)


def _packed_prefixes(tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """The first ``span`` tokens of every suffix packed into one int64 (order-preserving), and ``span``.

    Each token takes ``bits`` bits as (value + 1), 0 standing for "past the end" (smaller than
    every token). The separator (the dtype's largest value, far above real ids) is first
    mapped to just above the largest real id, so more tokens fit in 63 bits.
    """
    values = tokens.astype(np.int64)
    top = int(values.max())
    rest = values[values != top]
    below = int(rest.max()) if rest.size else -1
    if top > below + 1:
        values[values == top] = below + 1
        top = below + 1
    bits = (top + 1).bit_length()
    span = max(1, 63 // bits)
    n = len(values)
    packed = np.zeros(n, dtype=np.int64)
    for j in range(min(span, n)):
        packed[:n - j] |= (values[j:] + 1) << (bits * (span - 1 - j))
    return packed, span


def _unsettled(boundary: np.ndarray, slots: np.ndarray, on_settled: Callable[[int], None] | None,
               n: int) -> np.ndarray:
    """The slots whose group still holds more than one suffix."""
    starts = np.flatnonzero(boundary)
    sizes = np.diff(np.r_[starts, len(boundary)])
    keep = np.repeat(sizes > 1, sizes)
    out = slots[keep]
    if on_settled is not None:
        on_settled(int(len(slots) - len(out)))
    return out
