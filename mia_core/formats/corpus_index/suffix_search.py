"""Vectorised searches over a sorted suffix table (numpy, memory-mapped), many queries at once.

Works for mia's shards (token-value order, tokengrams' table) and for infini-gram's shards,
whose suffixes are sorted by the bytes of little-endian tokens: comparing those bytes is
comparing the byte-swapped token values, so the same code serves both with ``swap=True``.
Each binary-search step is a few numpy operations over the whole batch; columns are compared
a chunk at a time and only for rows still tied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CHUNK = 8
ROWS = 1 << 14  # query positions searched together (matching statistics)


class SuffixSearch:
    """``tokens`` (1-D, token ids) and ``suffix_at(ranks) -> token positions`` of a sorted table."""

    def __init__(self, tokens: np.ndarray, suffix_at: Callable[[np.ndarray], np.ndarray], n_suffixes: int,
                 swap: bool = False, buckets: np.ndarray | None = None) -> None:
        self.tok, self.suffix_at, self.n_suffixes, self.swap = tokens, suffix_at, n_suffixes, swap
        self.buckets = buckets  # optional: where the suffixes starting with each token value start

    def key(self, values: np.ndarray) -> np.ndarray:
        """Token ids as the table's sort key (int64); negative values (padding) are kept."""
        values = np.asarray(values, dtype=np.int64)
        if not self.swap:
            return values
        width = self.tok.dtype.itemsize
        swapped = values.astype(f"<u{width}").byteswap().astype(np.int64)
        return np.where(values < 0, values, swapped)

    def compare(self, pos: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Sign of (suffix at token position ``pos``)[:W] against each row of ``q`` (keys): -1, 0, +1.

        A suffix that ends first is smaller; a query padded with -1 behaves as the shorter query.
        """
        width = q.shape[1]
        out = np.zeros(len(q), dtype=np.int8)
        rows = np.arange(len(q))
        for start in range(0, width, CHUNK):
            if rows.size == 0:
                break
            cols = start + np.arange(min(CHUNK, width - start))
            values, inside = self._tokens_at(pos[rows], cols)
            values[~inside] = -1
            expected = q[rows[:, None], cols[None, :]]
            differ = values != expected
            decided = differ.any(axis=1)
            at = differ.argmax(axis=1)
            d = np.flatnonzero(decided)
            out[rows[d]] = np.where(values[d, at[d]] < expected[d, at[d]], -1, 1)
            rows = rows[~decided]
        return out

    def bound(self, q: np.ndarray, upper: bool = False, lo: np.ndarray | None = None,
              hi: np.ndarray | None = None) -> np.ndarray:
        """First rank whose suffix is >= (or > with ``upper``) each row of ``q`` (keys)."""
        if lo is None:
            lo = np.zeros(len(q), dtype=np.int64)
        if hi is None:
            hi = np.full(len(q), self.n_suffixes, dtype=np.int64)
        lo, hi = lo.copy(), hi.copy()
        active = np.flatnonzero(lo < hi)
        while active.size:
            mid = (lo[active] + hi[active]) // 2
            c = self.compare(self.suffix_at(mid), q[active])
            go_right = c <= 0 if upper else c < 0
            lo[active[go_right]] = mid[go_right] + 1
            hi[active[~go_right]] = mid[~go_right]
            active = active[lo[active] < hi[active]]
        return lo

    def _start_range(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.buckets is None:
            return np.zeros(len(q), dtype=np.int64), np.full(len(q), self.n_suffixes, dtype=np.int64)
        first = np.clip(q[:, 0], 0, len(self.buckets) - 2)
        return self.buckets[first], self.buckets[first + 1]

    def ranges(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[first, last) ranks of the suffixes starting with each row of ``queries`` (token ids, no padding)."""
        q = self.key(queries)
        lo, hi = self._start_range(q)
        return self.bound(q, False, lo, hi), self.bound(q, True, lo, hi)

    def contains(self, queries: np.ndarray) -> np.ndarray:
        q = self.key(queries)
        lo, hi = self._start_range(q)
        first = self.bound(q, False, lo, hi)
        found = np.zeros(len(q), dtype=bool)
        check = np.flatnonzero(first < self.n_suffixes)
        if check.size:
            found[check] = self.compare(self.suffix_at(first[check]), q[check]) == 0
        return found

    def longest_prefixes(self, queries: np.ndarray) -> np.ndarray:
        """Length of the longest prefix of each row (ids padded with -1) that occurs in the text.

        The longest prefix of a query found in the text is shared with one of the two suffixes
        beside the query's place in the sorted table.
        """
        q = self.key(queries)
        best = np.zeros(len(q), dtype=np.int64)
        rows = np.flatnonzero(q[:, 0] >= 0)  # a row starting with an impossible id matches nothing
        if rows.size < len(q):
            best[rows] = self.longest_prefixes(queries[rows])
            return best
        lo, hi = self._start_range(q)
        first = self.bound(q, False, lo, hi)
        for rank in (first - 1, first):
            ok = np.flatnonzero((rank >= 0) & (rank < self.n_suffixes))
            if ok.size:
                best[ok] = np.maximum(best[ok], self._common(self.suffix_at(rank[ok]), q[ok]))
        return best

    def _tokens_at(self, starts: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort keys of the tokens at ``starts + cols`` (one row per start) and where they lie inside
        the token array (outside: key of token 0, to be masked by the caller)."""
        tok, n = self.tok, len(self.tok)
        idx = starts[:, None] + cols[None, :]
        inside = idx < n
        return self.key(np.where(inside, tok[np.minimum(idx, n - 1)], 0)), inside

    def _common(self, pos: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Length of the common prefix of each suffix and query row (padding never matches)."""
        out = np.zeros(len(q), dtype=np.int64)
        rows = np.arange(len(q))
        width = q.shape[1]
        for start in range(0, width, CHUNK):
            if rows.size == 0:
                break
            cols = start + np.arange(min(CHUNK, width - start))
            values, inside = self._tokens_at(pos[rows], cols)
            same = (values == q[rows[:, None], cols[None, :]]) & inside & (q[rows[:, None], cols[None, :]] >= 0)
            full = same.all(axis=1)
            out[rows] += np.where(full, len(cols), same.argmin(axis=1))
            rows = rows[full]
        return out

    def matching_statistics_many(self, gens: Sequence[list[int]], oks: Sequence[list[bool]]) -> list[np.ndarray]:
        """For every position i of every generation, the longest prefix of ``gen[i:]`` in the text.

        All positions of all generations are searched in bulk (``longest_prefixes``); an id the
        text cannot hold (``ok`` false) ends a match.
        """
        rows: list[np.ndarray] = []
        for g, ok in zip(gens, oks, strict=True):
            arr = np.array(g, dtype=np.int64)
            arr[~np.array(ok, dtype=bool)] = -1
            rows.extend(arr[i:] for i in range(len(arr)))
        width = max((len(r) for r in rows), default=1)
        out = np.zeros(len(rows), dtype=np.int32)
        for lo in range(0, len(rows), ROWS):
            block = rows[lo:lo + ROWS]
            q = np.full((len(block), width), -1, dtype=np.int64)
            for i, r in enumerate(block):
                q[i, :len(r)] = r
            # a -1 inside a row (an impossible id) ends the match there, as padding does
            cut = np.where((q < 0).any(axis=1), (q < 0).argmax(axis=1), width)
            q[np.arange(width)[None, :] >= cut[:, None]] = -1
            out[lo:lo + len(block)] = self.longest_prefixes(q)
        result, at = [], 0
        for g in gens:
            result.append(out[at:at + len(g)])
            at += len(g)
        return result

    def verify(self) -> bool:
        """Whether the table is the sorted order of all suffixes, in O(n) (Burkhardt and Kärkkäinen's check).

        Suffix a sorts before suffix b iff a's first token is smaller, or equal and the suffix at
        a + 1 sorts before the one at b + 1 (a suffix that ends is smaller): checking this for
        neighbours, with the table's own ranks, proves the whole order.
        """
        n = self.n_suffixes
        if n != len(self.tok):
            return False
        block = 1 << 20
        inverse = np.full(n + 1, -1, dtype=np.int64)  # inverse[n] = -1: past the end ranks first
        for lo in range(0, n, block):
            ranks = np.arange(lo, min(lo + block, n))
            pos = self.suffix_at(ranks)
            if (pos < 0).any() or (pos >= n).any():
                return False
            inverse[pos] = ranks
        if (inverse[:n] < 0).any():
            return False  # not a permutation
        for lo in range(0, n - 1, block):
            ranks = np.arange(lo, min(lo + block, n - 1))
            a, b = self.suffix_at(ranks), self.suffix_at(ranks + 1)
            ta, tb = self.key(self.tok[a]), self.key(self.tok[b])
            ok = (ta < tb) | ((ta == tb) & (inverse[a + 1] < inverse[b + 1]))
            if not ok.all():
                return False
        return True
