"""ROC analysis for membership signals: exact ROC curve, AUC, bootstrap interval, TPR at low FPR.

Positives are members. Scores must follow the "higher = more likely member" convention of
``mia_core.attack.signals``. Samples whose score is NaN are left out (and counted).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mia_core.types import MEMBER, NONMEMBER

FPR_TARGETS = (0.001, 0.01, 0.05)


def labels_to_bool(labels: Sequence[str | None]) -> np.ndarray:
    """``member`` → True, ``nonmember`` → False, anything else → masked out by ``label_mask``."""
    return np.array([lab == MEMBER for lab in labels], dtype=bool)


def label_mask(labels: Sequence[str | None]) -> np.ndarray:
    """Which samples carry a usable label."""
    return np.array([lab in (MEMBER, NONMEMBER) for lab in labels], dtype=bool)


def roc_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ROC point (no point dropped): ``(fpr, tpr, thresholds)``, starting at (0, 0).

    Point i classifies ``score >= thresholds[i]`` as member; thresholds decrease, the first is +inf.
    """
    y = np.asarray(y, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], y[order]
    # Last index of each run of equal scores: ties move together along the curve.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(yy)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return fpr, tpr, np.r_[np.inf, s[last]]


def _trapezoid(yv: np.ndarray, xv: np.ndarray) -> float:
    return float(np.sum((xv[1:] - xv[:-1]) * (yv[1:] + yv[:-1]) / 2.0))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half, as Mann–Whitney U)."""
    fpr, tpr, _ = roc_curve(y, scores)
    return _trapezoid(tpr, fpr)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The best TPR of a threshold whose FPR is at most ``target``: read off the curve's
    points, never interpolated (interpolation would credit thresholds that do not exist)."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _rank_auc(y: np.ndarray, scores: np.ndarray) -> float:
    # Mann–Whitney AUC from average ranks; equal to roc_auc, cheaper inside the bootstrap.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    r = (ends - (counts - 1) / 2.0)[inverse]  # average 1-based rank of each tie group
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auc(y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (resampling samples with replacement;
    resamples that miss a class are drawn again)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values: list[float] = []
    while len(values) < n_boot:
        idx = rng.integers(0, n, size=n)
        yb = y[idx]
        if yb.all() or not yb.any():
            continue
        values.append(_rank_auc(yb, scores[idx]))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass
class SignalMetrics:
    """Evaluation of one signal."""

    signal: str
    n: int
    n_members: int
    n_nonmembers: int
    n_missing: int  # NaN scores left out
    auc: float
    auc_low: float
    auc_high: float
    tpr_at_fpr: dict[str, float] = field(default_factory=dict)
    fpr: np.ndarray | None = None
    tpr: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-ready: no ROC arrays, and NaN (e.g. no bootstrap interval) as None."""
        out = asdict(self)
        out.pop("fpr")
        out.pop("tpr")
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()}


def evaluate_signal(name: str, labels: Sequence[str | None], scores: np.ndarray, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> SignalMetrics | None:
    """Metrics of one signal, or None when the labelled, scored samples lack a class."""
    scores = np.asarray(scores, dtype=np.float64)
    usable = label_mask(labels)
    finite = np.isfinite(scores)
    keep = usable & finite
    y = labels_to_bool(labels)[keep]
    s = scores[keep]
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    lo, hi = bootstrap_auc(y, s, n_boot, level, seed) if n_boot > 0 else (float("nan"), float("nan"))
    return SignalMetrics(
        signal=name, n=int(keep.sum()), n_members=int(y.sum()), n_nonmembers=int((~y).sum()),
        n_missing=int((usable & ~finite).sum()), auc=_trapezoid(tpr, fpr), auc_low=lo, auc_high=hi,
        tpr_at_fpr={f"{t:g}": tpr_at_fpr(fpr, tpr, t) for t in FPR_TARGETS}, fpr=fpr, tpr=tpr,
    )


def label_problem(labels: Sequence[str | None]) -> str | None:
    """Why no AUC can be computed from these labels, or None when both classes are present."""
    mask = label_mask(labels)
    if not mask.any():
        return "no member/nonmember labels: signals are stored, but no AUC is computed"
    y = labels_to_bool(labels)[mask]
    if y.all() or not y.any():
        only = MEMBER if y.all() else NONMEMBER
        return f"all {int(mask.sum())} labelled samples are {only}s: signals are stored, but no AUC is computed"
    return None
