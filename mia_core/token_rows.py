"""Ragged rows of token ids as numpy arrays: padding them into one array, and how far two rows agree.

Pure numpy, no file format: the prefix map, runs, matching and the attack all use these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAD = -1  # padding sentinel of token arrays in files (token ids are never negative)
TOKEN_DTYPE = np.int32


def pad_rows(rows: Sequence[Sequence[Any]] | np.ndarray, width: int | None = None, fill: Any = PAD,
             dtype: Any = TOKEN_DTYPE) -> tuple[np.ndarray, np.ndarray]:
    """Ragged rows as one array of ``width`` columns (default: the longest row; at least 1),
    longer rows cut, the rest filled with ``fill``; and the length kept of each row."""
    lengths = np.array([len(r) if width is None else min(len(r), width) for r in rows], dtype=np.int64)
    out = np.full((len(rows), max(1, int(lengths.max(initial=0)) if width is None else width)), fill, dtype=dtype)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        out[i, :n] = np.asarray(row)[:n]
    return out, lengths
