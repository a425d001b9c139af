"""Membership signals on hand-made token scores: definitions, sign convention, edge cases."""

import zlib

import numpy as np
import pytest

from mia_core.attack import signals as sig
from mia_core.types import TokenScores


def scores_from_distributions(logits: np.ndarray, tokens: np.ndarray) -> TokenScores:
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    p = np.exp(logp)
    mean = (p * logp).sum(1)
    std = np.sqrt((p * logp**2).sum(1) - mean**2)
    return TokenScores(logp[np.arange(len(tokens)), tokens], logp.argmax(1), mean, std)


def test_loss_is_minus_mean_nll() -> None:
    s = TokenScores(np.log([0.5, 0.25]), np.zeros(2), np.zeros(2), np.ones(2))
    assert sig.loss_signal(s) == pytest.approx(np.log([0.5, 0.25]).mean())
    assert sig.mean_nll(s.logprob) == pytest.approx(-np.log([0.5, 0.25]).mean())


def test_zlib_divides_by_compressed_utf8_length() -> None:
    text = "héllo héllo héllo"
    s = TokenScores(np.array([-1.0, -3.0]), np.zeros(2), np.zeros(2), np.ones(2))
    assert sig.zlib_length(text) == len(zlib.compress(text.encode("utf-8")))
    assert sig.zlib_signal(s, text) == pytest.approx(-2.0 / sig.zlib_length(text))


def test_mink_averages_the_lowest_fraction() -> None:
    logprob = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    s = TokenScores(logprob, np.zeros(10), np.zeros(10), np.ones(10))
    assert sig.mink_signal(s, 0.2) == pytest.approx(-4.0)  # the 2 lowest of 10
    assert sig.mink_signal(s, 0.05) == pytest.approx(-5.0)  # ⌊0.5⌋ = 0 → at least one token
    assert sig.mink_signal(s, 1.0) == pytest.approx(logprob.mean())


def test_minkpp_matches_the_papers_formula() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 30)) * 3
    tokens = rng.integers(0, 30, size=12)
    s = scores_from_distributions(logits, tokens)
    # Zhang et al. 2024 reference code: mu = sum p log p, sigma² = sum p (log p)² − mu².
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    p = np.exp(logp)
    mu = (p * logp).sum(1)
    sigma = np.sqrt((p * logp**2).sum(1) - mu**2)
    per_token = (logp[np.arange(12), tokens] - mu) / sigma
    expected = np.sort(per_token)[: int(12 * 0.25)].mean()
    assert sig.minkpp_signal(s, 0.25) == pytest.approx(expected)


def test_minkpp_one_hot_distribution_scores_zero() -> None:
    s = TokenScores(np.array([0.0, -1.0]), np.zeros(2), np.array([0.0, -1.0]), np.array([0.0, 0.5]))
    np.testing.assert_allclose(sig.minkpp_token_scores(s), [0.0, 0.0])


def test_every_signal_ranks_the_likelier_string_higher() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 50))
    tokens = rng.integers(0, 50, size=20)
    unseen = scores_from_distributions(logits, tokens)
    boosted = logits.copy()
    boosted[np.arange(20), tokens] += 4.0  # the model "saw" these tokens
    seen = scores_from_distributions(boosted, tokens)
    text = "the same text for both"
    hi = sig.target_signals(seen, text, sig.TARGET_SIGNALS)
    lo = sig.target_signals(unseen, text, sig.TARGET_SIGNALS)
    assert all(hi[name] > lo[name] for name in sig.TARGET_SIGNALS)
    # ref: the target finds the string easier than the reference does → higher score.
    assert sig.ref_signal(target_nll=1.0, reference_nll=3.0) > sig.ref_signal(target_nll=3.0, reference_nll=1.0)


def test_nothing_scored_gives_nan() -> None:
    empty = TokenScores(np.array([]), np.array([]), np.array([]), np.array([]))
    values = sig.target_signals(empty, "", sig.TARGET_SIGNALS)
    assert all(np.isnan(v) for v in values.values())


def test_parse_signals() -> None:
    assert sig.parse_signals("loss, MinK,loss") == ["loss", "mink"]
    with pytest.raises(ValueError, match="unknown signal.*bogus"):
        sig.parse_signals("loss,bogus")
    with pytest.raises(ValueError, match="no signal"):
        sig.parse_signals(" , ")


def test_unscorable_first_position_is_left_out() -> None:
    # A model without BOS cannot score a sequence's first token: backends mark it NaN.
    s = TokenScores(np.array([np.nan, -1.0, -3.0]), np.array([-1, 4, 5]), np.array([np.nan, -2.0, -2.0]),
                    np.array([np.nan, 1.0, 1.0]))
    values = sig.target_signals(s, "abc", sig.TARGET_SIGNALS, k=0.5)
    assert values["loss"] == pytest.approx(-2.0) and values["mink"] == pytest.approx(-3.0)
    assert values["minkpp"] == pytest.approx(-1.0)


def test_minkpp_is_missing_not_constant_without_distribution_statistics() -> None:
    nan = np.full(4, np.nan)
    scores = TokenScores(np.log([0.5, 0.1, 0.2, 0.9]), np.zeros(4, int), nan, nan)
    assert np.isnan(sig.minkpp_signal(scores))
