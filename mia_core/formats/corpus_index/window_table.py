"""Fixed-window membership: sorted 64-bit fingerprints of every ``W``-token corpus window.

A window's fingerprint is a polynomial hash of its tokens modulo 2^64 (``sum (t_j + 1) P^(W-1-j)``,
computed over the corpus in one pass with prefix sums), passed through a bijective 64-bit
mixer. The table keeps each distinct fingerprint once, sorted, with the position of one corpus
window that has it. A query window is hashed the same way and looked up in bulk (a directory
on the top bits of the fingerprint, then a short vectorised scan); a hit is then **verified
against the corpus tokens** at the stored position. A fingerprint missing from the table
means the window is absent (equal windows have equal fingerprints); a hit whose tokens
differ is a hash collision, and only those rows go to the exact suffix-array search. So the
answers are exactly the suffix array's, and collisions only cost time.

Files (per shard): ``windows.W.hash`` (u64 fingerprints, sorted, unique), ``windows.W.pos``
(u32 or u64 positions, same order). The index also merges them into one table across shards
(global_table.py), which lookups use when it is there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so it has an inverse modulo 2^64
MULTIPLIER_INVERSE = pow(MULTIPLIER, -1, 1 << 64)
BLOCK = 1 << 22  # corpus tokens hashed per block (bounds the temporary arrays)
MASK64 = (1 << 64) - 1


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on u64 that spreads the hash over the top bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _bits_mask(bits: int) -> np.uint64:
    return np.uint64(MASK64 >> (64 - bits))


def _powers(count: int, base: int) -> np.ndarray:
    out = np.empty(count, dtype=np.uint64)
    out[0] = 1
    if count > 1:
        out[1:] = base
        np.cumprod(out, out=out)  # wraps modulo 2^64
    return out


def query_fingerprints(windows: np.ndarray, bits: int = 64) -> np.ndarray:
    """Fingerprints of the rows of a ``[B, W]`` array of (non-negative) token ids."""
    width = windows.shape[1]
    weights = _powers(width, MULTIPLIER)[::-1].copy()
    ids = windows.view(np.uint64) if windows.dtype == np.int64 else windows.astype(np.uint64)
    # sum_j (t_j + 1) w_j = sum_j t_j w_j + sum_j w_j, modulo 2^64 (einsum: one pass, no temporary)
    with np.errstate(over="ignore"):
        h = np.einsum("ij,j->i", ids, weights) + weights.sum(dtype=np.uint64)
    return _mix(h) & _bits_mask(bits)


def corpus_fingerprints(tokens: np.ndarray, width: int, separator: int, bits: int = 64
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprints, start positions) of every window of ``tokens`` that holds no separator."""
    n = len(tokens)
    hashes, starts = [], []
    pw = _powers(BLOCK + width, MULTIPLIER)
    inv = _powers(BLOCK + width, MULTIPLIER_INVERSE)
    for lo in range(0, max(n - width + 1, 0), BLOCK):
        hi = min(lo + BLOCK, n - width + 1)  # window starts lo..hi-1
        chunk = tokens[lo:hi + width - 1]
        m = len(chunk)
        with np.errstate(over="ignore"):
            prefix = np.zeros(m + 1, dtype=np.uint64)
            np.cumsum((chunk.astype(np.uint64) + np.uint64(1)) * inv[:m], out=prefix[1:])
            count = hi - lo
            # sum_j (t_{i+j}+1) P^-(i+j) * P^(i+W-1) = sum_j (t_{i+j}+1) P^(W-1-j)
            h = (prefix[width:width + count] - prefix[:count]) * pw[width - 1:width - 1 + count]
        seps = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(chunk == separator, out=seps[1:])
        clean = np.flatnonzero(seps[width:width + count] == seps[:count])
        hashes.append(_mix(h[clean]) & _bits_mask(bits))
        starts.append(clean + lo)
    if not hashes:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(hashes), np.concatenate(starts)


def table_paths(folder: Path, width: int) -> tuple[Path, Path]:
    return folder / f"windows.{width}.hash", folder / f"windows.{width}.pos"


def build_window_table(folder: Path, tokens: np.ndarray, width: int, separator: int, bits: int = 64) -> int:
    """Write the sorted unique fingerprints of ``tokens``' windows and one position each; returns their count."""
    h, pos = corpus_fingerprints(tokens, width, separator, bits)
    order = np.argsort(h)
    h = h[order]
    pos = pos[order]
    del order
    first = np.ones(len(h), dtype=bool)
    np.not_equal(h[1:], h[:-1], out=first[1:])
    h, pos = h[first], pos[first]
    pos_dtype = np.dtype("<u4") if len(tokens) < 2**32 else np.dtype("<u8")
    hash_path, pos_path = table_paths(folder, width)
    _write(hash_path, h.astype("<u8"))
    _write(pos_path, pos.astype(pos_dtype))
    return len(h)


def _write(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        array.tofile(f)
        f.flush()
        os.fsync(f.fileno())


class SortedFingerprints:
    """Bulk lookup in a sorted array of distinct fingerprints, each with one value (a position)."""

    def __init__(self, hashes: np.ndarray, values: np.ndarray, bits: int) -> None:
        self.hashes, self.values, self.bits = hashes, values, bits
        self._directory: np.ndarray | None = None
        self._longest = 0

    def _dir(self) -> tuple[np.ndarray, int, int]:
        """Where each value of the fingerprint's top ``shift`` bits starts (about 4 entries per bucket)."""
        n = len(self.hashes)
        top = max(1, min(self.bits, int(np.log2(max(n, 1))) - 2))
        if self._directory is None:
            counts = np.zeros(1 << top, dtype=np.int64)
            for lo in range(0, n, BLOCK):  # in blocks: no temporary the size of the table
                buckets = (self.hashes[lo:lo + BLOCK] >> np.uint64(self.bits - top)).astype(np.int64)
                counts += np.bincount(buckets, minlength=1 << top)
            self._directory = np.r_[0, np.cumsum(counts)].astype(np.int64)
            self._longest = int(counts.max()) if n else 0
        return self._directory, top, self._longest

    def candidates(self, windows: np.ndarray, fingerprints: np.ndarray | None = None) -> np.ndarray:
        """For each row, the value (position) stored with the row's fingerprint, or -1.

        ``fingerprints`` (``query_fingerprints(windows, bits)``) may be given, computed once for all shards.
        """
        out = np.full(len(windows), -1, dtype=np.int64)
        if len(self.hashes) == 0 or len(windows) == 0:
            return out
        h = query_fingerprints(windows, self.bits) if fingerprints is None else fingerprints
        directory, top, longest = self._dir()
        bucket = (h >> np.uint64(self.bits - top)).astype(np.int64)
        at, end = directory[bucket], directory[bucket + 1]
        rows = np.flatnonzero(at < end)
        hashes = self.hashes
        for _ in range(longest):  # scan each bucket (sorted) until the fingerprint is reached
            if rows.size == 0:
                break
            smaller = hashes[at[rows]] < h[rows]
            at[rows[smaller]] += 1
            rows = rows[smaller & (at[rows] < end[rows])]
        valid = at < end
        hit = np.zeros(len(windows), dtype=bool)
        hit[valid] = hashes[at[valid]] == h[valid]
        out[hit] = self.values[at[hit]]
        return out


def read_array(path: Path, dtype: str) -> np.ndarray:
    """A file as a read-only array: a plain ndarray view of its map (indexing a np.memmap costs more per call)."""
    return np.asarray(np.memmap(path, dtype=dtype, mode="r")) if path.stat().st_size else np.zeros(0, dtype=dtype)


class WindowTable(SortedFingerprints):
    """An opened fingerprint table of one shard (memory-mapped)."""

    def __init__(self, folder: Path, width: int, n_tokens: int, bits: int = 64) -> None:
        hash_path, pos_path = table_paths(folder, width)
        self.width = width
        positions = read_array(pos_path, "<u4" if n_tokens < 2**32 else "<u8")
        super().__init__(read_array(hash_path, "<u8"), positions, bits)
        if len(positions) != len(self.hashes):
            raise ValueError(f"{pos_path.name} holds {len(positions)} positions for {len(self.hashes)} "
                             "fingerprints")

    @property
    def positions(self) -> np.ndarray:
        return self.values

    @staticmethod
    def exists(folder: Path, width: int) -> bool:
        return all(p.is_file() for p in table_paths(folder, width))
