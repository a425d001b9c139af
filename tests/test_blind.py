"""The blind baseline (model-free classifier) and duplicate counts, against independent computations."""

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from mia_core.attack.blind import (
    LEVEL,
    Comparison,
    PermutationTest,
    blind_scores,
    blind_warning,
    count_duplicates,
    permutation_test,
)
from mia_core.attack.metrics import bootstrap_auc_difference

WORDS_A = [f"alpha{i}" for i in range(40)]
WORDS_B = [f"beta{i}" for i in range(40)]


def _texts(rng, vocab, n, length=20):
    return [" ".join(rng.choice(vocab, length)) for _ in range(n)]


def test_split_separable_by_vocabulary_is_flagged():
    rng = np.random.default_rng(0)
    members = _texts(rng, WORDS_A + WORDS_B[:5], 60)
    nonmembers = _texts(rng, WORDS_B + WORDS_A[:5], 60)
    labels = ["member"] * 60 + ["nonmember"] * 60
    result = blind_scores(members + nonmembers, labels)
    y = np.array([lab == "member" for lab in labels])
    auc = roc_auc_score(y, result.scores)
    assert result.folds == 5 and auc > 0.95
    test = permutation_test(members + nonmembers, labels, permutations=19)
    # no permutation reaches the observed AUC: the smallest p 19 permutations can give
    assert test.auc == pytest.approx(auc) and test.p_value == pytest.approx(1 / 20) and test.separable
    assert "separable without the model" in blind_warning(test, None, True)


def test_a_modest_vocabulary_shift_is_detected_at_a_larger_n():
    """Members' texts carry 1 word in 10 from words nonmembers never use: a small gap, found at n = 300."""
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(300)]
    members = [" ".join(w if j % 10 else str(rng.choice(WORDS_A)) for j, w in enumerate(rng.choice(vocab, 20)))
               for _ in range(150)]
    nonmembers = _texts(rng, vocab, 150)
    test = permutation_test(members + nonmembers, ["member"] * 150 + ["nonmember"] * 150, permutations=19)
    assert test.separable and test.null_mean == pytest.approx(0.5, abs=0.05)


def test_iid_split_is_not_flagged():
    rng = np.random.default_rng(1)
    texts = _texts(rng, WORDS_A + WORDS_B, 400)
    labels = list(rng.permutation(["member"] * 200 + ["nonmember"] * 200))
    result = blind_scores(texts, labels)
    auc = roc_auc_score(np.array([lab == "member" for lab in labels]), result.scores)
    assert 0.4 < auc < 0.6
    test = permutation_test(texts, labels, permutations=19)
    assert not test.separable and blind_warning(test, None, True) is None
    # stopping early gives the full test's verdict: the first permuted AUC reaching the observed one
    # already makes p ≥ 2/20 > 0.05 with 19 permutations
    assert test.run < 19 and test.p_value == pytest.approx(2 / 20) and "stopped after" in test.describe()


def test_false_warning_rate_under_the_null_is_within_a_binomial_bound():
    """60 random halves of one homogeneous set (n = 20): a level-0.05 test warns on about 3 of them;
    more than the Bin(60, 0.05) 0.999 quantile (9) would mean the level is not held. (The bench,
    bench/blind_null_check.py, measures 200 splits at n = 20, 100, 1000: docs/attack.md.)"""
    splits, warned = 60, 0
    for split in range(splits):
        rng = np.random.default_rng([7, split])
        texts = _texts(rng, WORDS_A + WORDS_B, 20, length=15)
        labels = list(rng.permutation(["member"] * 10 + ["nonmember"] * 10))
        warned += permutation_test(texts, labels, seed=split, permutations=19).separable
    assert warned <= binom.ppf(0.999, splits, LEVEL)


def _test(auc, p):
    return PermutationTest(auc=auc, p_value=p, permutations=99, run=99, level=0.05, null_mean=0.5)


def test_warning_texts_follow_the_test_and_the_difference():
    # calibrate's base model in the issue: blind 0.546 not significant, no signal's interval excludes 0.5
    said = blind_warning(_test(0.546, 0.3), None, False)
    assert said.startswith("neither the blind baseline nor any signal separates the halves")
    assert "p = 0.300 over 99 label permutations, level 0.05" in said
    early = PermutationTest(auc=0.5, p_value=0.06, permutations=99, run=12, level=0.05, null_mean=0.5)
    assert not early.separable and "p ≥ 0.060 > level 0.05, stopped after 12 of 99" in early.describe()
    assert blind_warning(_test(0.546, 0.3), None, True) is None  # a signal separates, the text does not
    beaten = Comparison("loss", 0.2, 0.1, 0.3, 0.95)
    assert "only that excess can measure membership" in blind_warning(_test(0.7, 0.01), beaten, True)
    level = Comparison("loss", 0.02, -0.05, 0.09, 0.95)
    said = blind_warning(_test(0.7, 0.01), level, True)
    assert "do not measure membership" in said and "loss − blind = +0.020" in said


def test_auc_difference_interval_is_paired():
    """Two scores that differ by a constant order rank the same: difference 0, interval [0, 0];
    against an independent one the difference is the AUCs' difference, computed by scikit-learn."""
    rng = np.random.default_rng(5)
    y = rng.random(200) < 0.5
    a = y + rng.normal(0, 1, 200)
    diff, low, high = bootstrap_auc_difference(y, a, a + 3.0, n_boot=200)
    assert diff == 0 and low == 0 and high == 0
    b = rng.normal(0, 1, 200)
    diff, low, high = bootstrap_auc_difference(y, a, b, n_boot=200)
    assert diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b)) and low < diff < high


def test_scores_are_out_of_fold_and_unlabelled_strings_get_none():
    rng = np.random.default_rng(2)
    texts = _texts(rng, WORDS_A, 30) + _texts(rng, WORDS_B, 30) + ["alpha1 beta1"]
    labels = ["member"] * 30 + ["nonmember"] * 30 + [""]
    result = blind_scores(texts, labels, seed=4)
    assert np.isnan(result.scores[-1]) and np.isfinite(result.scores[:-1]).all()
    again = blind_scores(texts, labels, seed=4)
    np.testing.assert_array_equal(result.scores, again.scores)
    tiny = blind_scores(["a b", "c d", "e f"], ["member", "member", "nonmember"])
    assert tiny.skipped and np.isnan(tiny.scores).all()


def test_duplicates_brute_force():
    texts = ["x", "x ", "y", "y", "y", "z", "z", "w"]
    labels = ["member", "member", "member", "nonmember", "nonmember", "nonmember", "member", ""]
    d = count_duplicates(texts, labels)
    members = [t.strip() for t, lab in zip(texts, labels, strict=True) if lab == "member"]
    nonmembers = [t.strip() for t, lab in zip(texts, labels, strict=True) if lab == "nonmember"]
    assert d.within_members == len(members) - len(set(members)) == 1
    assert d.within_nonmembers == len(nonmembers) - len(set(nonmembers)) == 1
    assert d.across_classes == len(set(members) & set(nonmembers)) == 2
    assert any("both member and nonmember" in w for w in d.warnings())
