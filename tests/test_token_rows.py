"""The one matched-length definition (mia_core.token_rows) against a plain loop, and padding."""

import numpy as np
import pytest

from mia_core.token_rows import matched_lengths, pad_rows


def reference(generated, truth, k=None):
    n = 0
    for g, t in zip(generated, truth, strict=False):
        if (k is not None and n >= k) or g != t:
            break
        n += 1
    return n


def test_matched_lengths_equal_a_plain_loop_on_random_rows():
    rng = np.random.default_rng(0)
    gens, truths = [], []
    for _ in range(500):
        truth = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        gen = truth[:rng.integers(0, len(truth) + 1)] + rng.integers(-1, 4, rng.integers(0, 6)).tolist()
        gens.append(gen)
        truths.append(truth)
    for k in (None, 1, 3, 20):
        want = [reference(g, t, k) for g, t in zip(gens, truths, strict=True)]
        assert matched_lengths(gens, truths, k).tolist() == want


def test_matched_lengths_edges():
    assert matched_lengths([], []).tolist() == []
    assert matched_lengths([[], [1, 2]], [[1], []]).tolist() == [0, 0]  # an empty row matches nothing
    assert matched_lengths([[5, 6, 7]], [[5, 6]]).tolist() == [2]  # a longer generation: the truth's length
    assert matched_lengths([[-1, 6]], [[5, 6]]).tolist() == [0]  # -1 (no context) never matches
    assert matched_lengths([np.array([1, 2, 3])], [np.array([1, 2, 3])], k=2).tolist() == [2]
    with pytest.raises(ValueError):
        matched_lengths([[1]], [])


def test_pad_rows_cuts_and_fills():
    padded, lengths = pad_rows([[1, 2, 3], [4]], 2)
    assert padded.tolist() == [[1, 2], [4, -1]] and lengths.tolist() == [2, 1]
    assert pad_rows([], None)[0].shape == (0, 1)
