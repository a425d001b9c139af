"""The test suite's notion of "the same result" (tests/run_equality.py) on hand-made cases: a
greedy difference is excused only at a near-tie, and float columns only within the tolerance."""

from types import SimpleNamespace

import numpy as np
import pytest
from run_equality import NEAR_TIE_LOGIT_GAP, assert_same_rows, greedy_mismatches

from mia_core.types import TokenScores

EOS = 2


class LogitTable:
    """A scoring backend whose next-token log-prob depends only on the token: 5 and 6 are a
    near-tie (1e-5 apart), 7 is far below them, EOS ties with 5."""

    tokenizer = SimpleNamespace(eos_id=EOS)
    eos_id = EOS
    table = {5: -1.0, 6: -1.00001, 7: -4.0, EOS: -1.0}

    def score(self, sequences, start, distribution=True):
        out = []
        for seq in sequences:
            lp = np.array([self.table.get(t, -9.0) for t in seq[start:]], dtype=np.float32)
            out.append(TokenScores(logprob=lp, argmax=np.full(len(lp), 5), mean=lp * np.nan, std=lp * np.nan))
        return out


def test_only_near_ties_excuse_a_greedy_difference():
    backend, prompts = LogitTable(), [[1, 3], [1, 4], [1, 3], [1, 4]]
    a = [[5, 5, 5], [9, 5], [5, 7], [5]]
    b = [[5, 6, 9], [9, 5], [5, 5], [5, 5]]  # near-tie; equal; 7 vs 5 is not a tie; EOS (ties with 5)
    bad = greedy_mismatches(backend, prompts, a, b)
    assert len(bad) == 1 and bad[0].startswith("row 2: part at token 1 (7 vs 5)"), bad
    assert greedy_mismatches(backend, prompts, a, b, gap=4.0) == []
    assert abs(LogitTable.table[5] - LogitTable.table[6]) < NEAR_TIE_LOGIT_GAP


def test_float_columns_within_the_tolerance_and_the_rest_exact():
    a = {"logprobs": np.array([[-1.0, np.nan]], np.float32), "tokens": np.array([[3, 4]])}
    assert_same_rows(a, {"logprobs": np.array([[-1.00005, np.nan]], np.float32), "tokens": np.array([[3, 4]])})
    with pytest.raises(AssertionError):
        assert_same_rows(a, {"logprobs": np.array([[-1.001, np.nan]], np.float32), "tokens": np.array([[3, 4]])})
    with pytest.raises(AssertionError):
        assert_same_rows(a, {"logprobs": np.array([[-1.0, -2.0]], np.float32), "tokens": np.array([[3, 4]])})
    with pytest.raises(AssertionError):
        assert_same_rows(a, {"logprobs": a["logprobs"], "tokens": np.array([[3, 5]])})
