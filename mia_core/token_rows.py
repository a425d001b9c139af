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


def leading_agreement(a: np.ndarray, b: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per row of two padded arrays, how many leading positions hold equal values, at most ``limit``
    (an array: each row's compared length). Padding must differ between ``a`` and ``b``."""
    width = min(a.shape[1], b.shape[1])
    mismatch = a[:, :width] != b[:, :width]
    first = np.where(mismatch.any(axis=1), mismatch.argmax(axis=1), width)
    return np.minimum(first, limit)


def matched_lengths(generated: Sequence[Sequence[int]], truths: Sequence[Sequence[int]],
                    k: int | None = None) -> np.ndarray:
    """The matched length of each row: how many leading tokens of ``generated[i]`` equal ``truths[i]``,
    at most the shorter of the two and at most ``k`` (int64 array).

    This is what greedy decoding reproduces of a true suffix, whether ``generated`` is a generation
    or, teacher-forced, the model's argmax at each suffix position (-1 where it had no context:
    never a match). The one definition used by ``mia check``, scoring, reports, the demo and the attack.
    """
    if len(generated) != len(truths):
        raise ValueError("one true row per generated row is needed")
    if len(generated) == 0:
        return np.zeros(0, dtype=np.int64)
    gen, gen_len = pad_rows(generated, k, -2, np.int64)  # paddings differ, so padding never matches
    ref, ref_len = pad_rows(truths, k, -3, np.int64)
    return leading_agreement(gen, ref, np.minimum(gen_len, ref_len))
