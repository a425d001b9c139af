"""ROC metrics checked against scikit-learn and brute force."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mia_core.attack import metrics as mt


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.4
    scores = rng.normal(size=300) + y * 0.8
    if ties:
        scores = np.round(scores)  # many equal scores
    fpr, tpr, thr = mt.roc_curve(y, scores)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert mt.roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert mt._rank_auc(y, scores) == pytest.approx(roc_auc_score(y, scores))


def test_tpr_at_fpr_is_the_best_real_threshold() -> None:
    """MIMIR/LiRA convention: the largest TPR among thresholds with FPR strictly below the target,
    by brute force over every threshold and from scikit-learn's roc_curve (tpr[fpr < x].max())."""
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.5
    scores = rng.normal(size=500) + y
    fpr, tpr, _ = sk_roc_curve(y, scores, drop_intermediate=False)
    n_neg = int((~y).sum())
    for target in (0.001, 0.01, 0.05, 0.3):
        best = max((scores[y] >= t).mean() for t in np.r_[np.inf, scores] if (scores[~y] >= t).mean() < target)
        assert mt.tpr_at_fpr(*mt.roc_curve(y, scores)[:2], target, n_neg) == pytest.approx(best)
        assert mt.tpr_at_fpr(fpr, tpr, target) == pytest.approx(best)
        assert best == pytest.approx(tpr[fpr < target].max())  # MIMIR's line


def test_tpr_at_low_fpr_is_not_interpolated_and_strictly_below() -> None:
    # One nonmember outscores every member: any threshold below it has FPR ≥ 1/2.
    y = np.array([False, True, True, False])
    scores = np.array([10.0, 5.0, 4.0, 0.0])
    fpr, tpr, _ = mt.roc_curve(y, scores)
    assert mt.tpr_at_fpr(fpr, tpr, 0.01, 2) == 0.0
    assert mt.tpr_at_fpr(fpr, tpr, 0.5, 2) == 0.0  # FPR exactly 1/2 is not below 1/2
    assert mt.tpr_at_fpr(fpr, tpr, 0.51, 2) == 1.0
    # 100 nonmembers, one of them above every member: FPR = 1/100 is not below 1% (counted, not rounded)
    y = np.r_[np.zeros(100, bool), np.ones(10, bool)]
    scores = np.r_[100.0, np.zeros(99), np.full(10, 50.0)]
    fpr, tpr, _ = mt.roc_curve(y, scores)
    assert mt.tpr_at_fpr(fpr, tpr, 0.01, 100) == 0.0 and mt.tpr_at_fpr(fpr, tpr, 0.05, 100) == 1.0


def test_low_fpr_needs_enough_nonmembers_and_gets_bootstrap_intervals() -> None:
    """TPR at FPR x is withheld with fewer than 1/x nonmembers (10 nonmembers: no TPR@0.1% = 1.000), and
    comes with a percentile bootstrap interval where it is computed."""
    rng = np.random.default_rng(5)
    labels = ["member"] * 10 + ["nonmember"] * 10
    scores = np.r_[rng.normal(3, 1, 10), rng.normal(0, 1, 10)]
    m = mt.evaluate_signal("loss", labels, scores, n_boot=200)
    assert m.tpr_at_fpr == {"0.001": None, "0.01": None, "0.05": None}
    assert m.tpr_withheld["0.001"] == "needs ≥ 1000 non-members" and m.tpr_withheld["0.05"] == "needs ≥ 20 non-members"
    labels = ["member"] * 150 + ["nonmember"] * 150
    y = np.array([lab == "member" for lab in labels])
    scores = rng.normal(size=300) + 1.5 * y
    m = mt.evaluate_signal("loss", labels, scores, n_boot=300, seed=3)
    fpr, tpr, _ = sk_roc_curve(y, scores, drop_intermediate=False)
    assert m.tpr_at_fpr["0.001"] is None
    for key in ("0.01", "0.05"):
        assert m.tpr_at_fpr[key] == pytest.approx(tpr[fpr < float(key)].max())
        lo, hi = m.tpr_at_fpr_ci[key]
        assert lo <= m.tpr_at_fpr[key] <= hi and hi - lo < 0.6
    again = mt.evaluate_signal("loss", labels, scores, n_boot=300, seed=3)
    assert again.tpr_at_fpr_ci == m.tpr_at_fpr_ci
    d = m.to_dict()
    assert "strictly below" in d["tpr_convention"] and d["tpr_at_fpr"]["0.001"] is None
    from mia_core.attack.report import format_table

    assert "n/a (needs ≥ 1000 non-members)" in format_table([m])


def test_bootstrap_interval_brackets_the_auc_and_is_reproducible() -> None:
    rng = np.random.default_rng(4)
    y = rng.random(200) < 0.5
    scores = rng.normal(size=200) + y
    auc = roc_auc_score(y, scores)
    lo, hi = mt.bootstrap_auc(y, scores, n_boot=300, seed=7)
    assert lo < auc < hi and hi - lo < 0.3
    assert (lo, hi) == mt.bootstrap_auc(y, scores, n_boot=300, seed=7)


def test_evaluate_signal_skips_nan_and_unlabelled() -> None:
    labels = ["member", "nonmember", "", "member", "nonmember", "member"]
    scores = np.array([3.0, 1.0, 9.0, np.nan, 2.0, 0.5])
    m = mt.evaluate_signal("loss", labels, scores, n_boot=50)
    assert (m.n, m.n_members, m.n_nonmembers, m.n_missing) == (4, 2, 2, 1)
    assert m.auc == pytest.approx(roc_auc_score([1, 0, 0, 1], [3.0, 1.0, 2.0, 0.5]))
    assert set(m.tpr_at_fpr) == {"0.001", "0.01", "0.05"}
    assert "fpr" not in m.to_dict()


def test_one_class_or_no_labels() -> None:
    assert mt.evaluate_signal("loss", ["member", "member"], np.array([1.0, 2.0])) is None
    assert "all 2 labelled samples are members" in mt.label_problem(["member", "member", ""])
    assert "no member/nonmember labels" in mt.label_problem(["", ""])
    assert "--labels FILE" in mt.label_problem(["", ""])
    assert mt.label_problem(["member", "nonmember"]) is None
