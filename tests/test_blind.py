"""The blind baseline (model-free classifier) and duplicate counts, against independent computations."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mia_core.attack.blind import blind_scores, blind_warning, count_duplicates

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
    assert "separable without the model" in blind_warning(auc, "loss", 0.99)


def test_iid_split_is_not_flagged():
    rng = np.random.default_rng(1)
    texts = _texts(rng, WORDS_A + WORDS_B, 400)
    labels = list(rng.permutation(["member"] * 200 + ["nonmember"] * 200))
    result = blind_scores(texts, labels)
    auc = roc_auc_score(np.array([lab == "member" for lab in labels]), result.scores)
    assert 0.4 < auc < 0.6
    assert blind_warning(auc, "loss", 0.9) is None
    assert "within 0.05 of the best signal" in blind_warning(0.55, "loss", 0.58)  # the model adds nothing


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


@pytest.mark.parametrize("auc", [0.61, 0.9])
def test_blind_above_06_is_separable(auc):
    assert "separable without the model" in blind_warning(auc, "loss", 0.99)
