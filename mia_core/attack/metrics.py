"""ROC analysis for membership signals: the ROC curve and AUC (scikit-learn), bootstrap intervals, TPR at
low FPR under the strictly-below convention, withheld where the nonmembers cannot resolve it.

Positives are members. Scores must follow the "higher = more likely member" convention of
``mia_core.attack.signals``. Samples whose score is NaN are left out (and counted).
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as sk_metrics

from mia_core.types import MEMBER, NONMEMBER

FPR_TARGETS = (0.001, 0.01, 0.05)
TPR_CONVENTION = ("largest TPR among thresholds whose FPR is strictly below the target (MIMIR, LiRA), read off "
                  "the ROC points, never interpolated; withheld (None) with fewer than 1/target nonmembers")


#: Label codes: a byte a string where a run has too many strings to hold their labels as text.
MEMBER_CODE, NONMEMBER_CODE, UNLABELLED_CODE = 1, 0, -1


def membership_codes(labels: "Sequence[str | None] | np.ndarray") -> np.ndarray:
    """``member`` → 1, ``nonmember`` → 0, anything else → -1 (int8); an int8 array is taken as codes already."""
    if isinstance(labels, np.ndarray) and labels.dtype == np.int8:
        return labels
    return np.array([MEMBER_CODE if lab == MEMBER else NONMEMBER_CODE if lab == NONMEMBER else UNLABELLED_CODE
                     for lab in labels], dtype=np.int8)


def labels_to_bool(labels: "Sequence[str | None] | np.ndarray") -> np.ndarray:
    """``member`` → True, ``nonmember`` → False, anything else → masked out by ``label_mask``."""
    return membership_codes(labels) == MEMBER_CODE


def label_mask(labels: "Sequence[str | None] | np.ndarray") -> np.ndarray:
    """Which samples carry a usable label."""
    return membership_codes(labels) >= NONMEMBER_CODE


def roc_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ROC point (no point dropped): ``(fpr, tpr, thresholds)``, starting at (0, 0).

    Point i classifies ``score >= thresholds[i]`` as member; thresholds decrease, the first is +inf.
    scikit-learn's curve with ``drop_intermediate=False``: the TPR@FPR convention reads every point.
    """
    fpr, tpr, thresholds = sk_metrics.roc_curve(np.asarray(y, dtype=bool), np.asarray(scores, dtype=np.float64),
                                                drop_intermediate=False)
    return fpr, tpr, thresholds


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half, as Mann–Whitney U): scikit-learn's."""
    return float(sk_metrics.roc_auc_score(np.asarray(y, dtype=bool), np.asarray(scores, dtype=np.float64)))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float, n_nonmembers: int | None = None) -> float:
    """The largest TPR among thresholds whose FPR is strictly below ``target`` (the convention of
    MIMIR and LiRA: ``tpr[fpr < target].max()``), read off the curve's points, never interpolated
    (interpolation would credit thresholds that do not exist). With ``n_nonmembers`` the test
    ``fp < target · n`` is done on counts, so 1/100 is never taken for "below" 0.01 by rounding."""
    fpr = np.asarray(fpr, dtype=np.float64)
    if n_nonmembers:
        ok = np.rint(fpr * n_nonmembers) < target * n_nonmembers - 1e-9
    else:
        ok = fpr < target * (1 - 1e-12)
    return float(np.asarray(tpr)[ok].max()) if ok.any() else 0.0


BOOTSTRAP, DELONG = "percentile bootstrap", "DeLong"
#: A ROC curve kept for the plot has at most about this many points (4 per grid line of each axis).
PLOT_GRID = 2000


def plot_points(fpr: np.ndarray, tpr: np.ndarray, grid: int = PLOT_GRID) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points a plot needs: all of them when they are few; else, for each of ``grid`` FPRs
    (log-spaced) and TPRs (even), the points on either side of where the curve crosses it, and both ends.
    The step curve drawn through them departs from the full one by less than a grid cell, and a curve of
    millions of points is not held until the plot (it took 16 bytes a string per signal)."""
    if len(fpr) <= 4 * grid:
        return fpr, tpr
    smallest = max(float(fpr[fpr > 0].min(initial=1.0)), 1e-12)
    cuts = [np.searchsorted(fpr, np.geomspace(smallest, 1.0, grid)), np.searchsorted(tpr, np.linspace(0, 1, grid))]
    at = np.concatenate([np.concatenate([c - 1, c]) for c in cuts] + [np.array([0, len(fpr) - 1])])
    at = np.unique(np.clip(at, 0, len(fpr) - 1))
    return fpr[at], tpr[at]


def nonmembers_needed(target: float) -> int:
    """Nonmembers needed to resolve FPR ``target``: 1/target (1,000 for 0.1%)."""
    return int(math.ceil(1.0 / target - 1e-9))


def _rank_auc(y: np.ndarray, scores: np.ndarray) -> float:
    # Mann–Whitney AUC from average ranks (scipy's rankdata): equal to roc_auc, and cheaper than
    # scikit-learn's per call inside the bootstrap's thousand resamples.
    r = rankdata(scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _resamples(y: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap index sets (samples with replacement), drawn one at a time (all of them at once would take
    ``n_boot`` times the strings' memory); resamples that miss a class are drawn again (scipy.stats.bootstrap
    cannot redraw: its AUC of such a resample is undefined)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    drawn = 0
    while drawn < n_boot:
        idx = rng.integers(0, n, size=n)
        yb = y[idx]
        if yb.all() or not yb.any():
            continue
        drawn += 1
        yield idx


def _interval(values: Sequence[float], level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_auc(y: np.ndarray, scores: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (resampling samples with replacement;
    resamples that miss a class are drawn again)."""
    return _interval([_rank_auc(y[idx], scores[idx]) for idx in _resamples(y, n_boot, seed)], level)


def bootstrap_auc_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                             seed: int = 0) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) on the same strings, with a paired percentile bootstrap interval (each
    resample scores both on the same strings, so what they share cancels)."""
    diffs = [_rank_auc(y[idx], a[idx]) - _rank_auc(y[idx], b[idx]) for idx in _resamples(y, n_boot, seed)]
    return _rank_auc(y, a) - _rank_auc(y, b), *_interval(diffs, level)


def below_chance(m: "SignalMetrics") -> bool:
    """The signal's AUC interval lies wholly below 0.5: it ranks nonmembers above members."""
    return bool(np.isfinite(m.auc_high) and m.auc_high < 0.5)


def below_chance_warning(m: "SignalMetrics", level: float = 0.95) -> str:
    return (f"{m.signal} is below chance: AUC {m.auc:.3f}, its {level * 100:g}% interval [{m.auc_low:.3f}, "
            f"{m.auc_high:.3f}] lies wholly below 0.5 (over {m.n_members} members and {m.n_nonmembers} nonmembers): "
            "it ranks nonmembers above members, an inverted direction (the convention is higher = member) or a "
            "real effect of the split; it is no evidence of membership as listed")


def bootstrap_tpr(y: np.ndarray, scores: np.ndarray, targets: Sequence[float], n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> dict[float, tuple[float, float]]:
    """Percentile bootstrap intervals of TPR at each FPR target (same resamples as the AUC's for one seed)."""
    values: dict[float, list[float]] = {t: [] for t in targets}
    for idx in _resamples(y, n_boot, seed):
        yb = y[idx]
        fpr, tpr, _ = roc_curve(yb, scores[idx])
        for t in targets:
            values[t].append(tpr_at_fpr(fpr, tpr, t, int((~yb).sum())))
    return {t: _interval(v, level) for t, v in values.items()}


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
    tpr_at_fpr: dict[str, float | None] = field(default_factory=dict)  # None: too few nonmembers
    tpr_at_fpr_ci: dict[str, list[float] | None] = field(default_factory=dict)
    tpr_withheld: dict[str, str] = field(default_factory=dict)  # why a TPR is None
    tpr_convention: str = TPR_CONVENTION
    interval: str = ""  # how auc_low/auc_high (and the TPR intervals) were found
    fpr: np.ndarray | None = None  # the ROC points a plot needs (plot_points)
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
    n_neg = int((~y).sum())
    resolvable = [t for t in FPR_TARGETS if n_neg >= nonmembers_needed(t)]
    cis = bootstrap_tpr(y, s, resolvable, n_boot, level, seed) if n_boot > 0 and resolvable else {}
    tprs: dict[str, float | None] = {}
    tpr_cis: dict[str, list[float] | None] = {}
    withheld: dict[str, str] = {}
    for t in FPR_TARGETS:
        key = f"{t:g}"
        if t in resolvable:
            tprs[key] = tpr_at_fpr(fpr, tpr, t, n_neg)
            tpr_cis[key] = list(cis[t]) if t in cis else None
        else:
            tprs[key], tpr_cis[key] = None, None
            withheld[key] = f"needs ≥ {nonmembers_needed(t)} non-members"
    shown_fpr, shown_tpr = plot_points(fpr, tpr)
    return SignalMetrics(
        signal=name, n=int(keep.sum()), n_members=int(y.sum()), n_nonmembers=n_neg,
        n_missing=int((usable & ~finite).sum()), auc=roc_auc(y, s), auc_low=lo, auc_high=hi,
        tpr_at_fpr=tprs, tpr_at_fpr_ci=tpr_cis, tpr_withheld=withheld,
        interval=f"{BOOTSTRAP}, {n_boot} resamples" if n_boot > 0 else "none (no bootstrap resamples)",
        fpr=shown_fpr, tpr=shown_tpr,
    )


HOW_TO_LABEL = ("give labels with --labels FILE (id,label columns) or --dataset-option label_field=FIELD for "
                "--dataset, or rebuild the map with `mia prefix` from a labelled dataset")


def label_problem(labels: Sequence[str | None], task: str = "mia attack", needs: str = "an AUC",
                  how_to: str = HOW_TO_LABEL) -> str | None:
    """Why ``task`` cannot use these labels (with how to fix it), or None when both classes are present."""
    mask = label_mask(labels)
    if not mask.any():
        return (f"no member/nonmember labels on the {len(labels)} strings: {task} cannot evaluate membership "
                f"without them; {how_to}")
    y = labels_to_bool(labels)[mask]
    if y.all() or not y.any():
        only, other = (MEMBER, NONMEMBER) if y.all() else (NONMEMBER, MEMBER)
        return f"all {int(mask.sum())} labelled samples are {only}s: {needs} needs {other}s too; {how_to}"
    return None
