"""Dataset inference (Maini, Jia, Papernot, Dziedzic, NeurIPS 2024): was a *set* of strings trained on?

Pure statistics (numpy, scipy, scikit-learn) on a feature matrix of per-string membership signals
(higher = member) for a suspect set and a validation set the model never saw, drawn from the same
distribution. As the reference code (pratyushmaini/llm_dataset_inference, ``linear_di.py``) does:

1. each feature of each set has its lowest and highest 2.5% clipped to the least extreme of them
   (``remove_outliers(..., outliers="clip")``);
2. every feature is standardised with the suspect set's mean and standard deviation
   (``normalize_and_stack(..., "train")``);
3. each set is shuffled (seeded) and cut into a fitting half and a testing half;
4. a linear model (logistic regression) is fitted on the fitting halves, suspect = 1;
5. its scores on the testing halves are compared by a one-sided Welch t-test, H1: the suspect
   strings score higher (the paper's test; the reference code calls scipy's Student test).

Steps 3-5 are repeated over ``splits`` seeded splits. The reference code writes one p-value per
seed without merging them; mia merges them into one p-value that stays valid whatever the
dependence between splits (they share the strings): twice the median (Vovk & Wang 2020,
"Combining p-values via averaging", quantile merging with r = 1/2), capped at 1.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLIP_FRACTION = 0.05  # both tails together, as the reference code's remove_frac
MIN_PER_SET = 20  # strings per set: 10 in each half, so the t-test has 10 per side
DEFAULT_SPLITS = 10


@dataclass
class DatasetInferenceResult:
    """The merged p-value and what it was computed from."""

    p_value: float  # min(1, 2 × median of the per-split p-values); the single p-value with one split
    split_p_values: list[float]
    t_statistics: list[float]
    weights: dict[str, float]  # mean over splits of each standardised feature's coefficient (suspect = 1)
    features: list[str]
    dropped_features: dict[str, str]  # name -> why it was not used
    n_suspect: int
    n_validation: int
    n_fit: tuple[int, int]  # (suspect, validation) strings per fitting half
    n_test: tuple[int, int]
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": self.p_value, "split_p_values": self.split_p_values, "t_statistics": self.t_statistics,
                "weights": self.weights, "features": self.features, "dropped_features": self.dropped_features,
                "n_suspect": self.n_suspect, "n_validation": self.n_validation, "n_fit": list(self.n_fit),
                "n_test": list(self.n_test), "splits": len(self.split_p_values), "seed": self.seed, **self.extra}


def clip_outliers(values: np.ndarray, fraction: float = CLIP_FRACTION) -> np.ndarray:
    """Each column's ⌊n·fraction/2⌋ lowest values set to the largest of them, and its highest to the
    smallest of them (the reference code's ``clip``: the strings stay, their extremes are bounded)."""
    out = np.array(values, dtype=np.float64, copy=True)
    n = out.shape[0]
    cut = int(n * fraction / 2)
    if cut == 0:
        return out
    for j in range(out.shape[1]):
        order = np.argsort(out[:, j], kind="stable")
        low, high = out[order[cut - 1], j], out[order[n - cut], j]
        out[:, j] = np.clip(out[:, j], low, high)
    return out


def standardise(suspect: np.ndarray, validation: np.ndarray, names: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, str]]:
    """Both sets standardised by the suspect set's mean and standard deviation; a feature that is
    constant over the suspect set carries nothing and is dropped (named, with the reason)."""
    mean, std = suspect.mean(axis=0), suspect.std(axis=0)
    keep = std > 0
    dropped = {name: "constant over the suspect set" for name, k in zip(names, keep, strict=True) if not k}
    kept = [name for name, k in zip(names, keep, strict=True) if k]
    return ((suspect[:, keep] - mean[keep]) / std[keep], (validation[:, keep] - mean[keep]) / std[keep],
            kept, dropped)


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of ``range(n)`` cut into a fitting half (⌊n/2⌋) and a testing half."""
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2:]


def welch_one_sided(suspect_scores: np.ndarray, validation_scores: np.ndarray) -> tuple[float, float]:
    """(t, p) of the one-sided Welch t-test, H1: the suspect strings' mean score is higher."""
    from scipy.stats import ttest_ind

    result = ttest_ind(suspect_scores, validation_scores, equal_var=False, alternative="greater")
    return float(result.statistic), float(result.pvalue)


def merge_p_values(p_values: Sequence[float]) -> float:
    """One p-value from those of several splits of the same data, valid under any dependence:
    min(1, 2 × median) (Vovk & Wang 2020); a single split's p-value is returned as it is."""
    values = np.asarray(p_values, dtype=np.float64)
    if len(values) == 1:
        return float(values[0])
    return float(min(1.0, 2.0 * np.median(values)))


def _fit_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression fitted on the fitting halves: its decision scores on the testing halves
    and its coefficients. L2 (C = 1, scikit-learn's default) keeps collinear sweeps (Min-K% at
    several fractions) stable; the reference code trains an unregularised ``nn.Linear``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=5000).fit(x_fit, y_fit)
    return model.decision_function(x_test), model.coef_[0]


def dataset_inference(suspect: np.ndarray, validation: np.ndarray, names: Sequence[str],
                      splits: int = DEFAULT_SPLITS, seed: int = 0) -> DatasetInferenceResult:
    """The dataset-inference test on feature matrices [strings, features] (rows with a missing
    value must already be removed). Raises ValueError for sets below :data:`MIN_PER_SET`."""
    suspect, validation = np.asarray(suspect, np.float64), np.asarray(validation, np.float64)
    for what, x in (("suspect", suspect), ("validation", validation)):
        if x.shape[0] < MIN_PER_SET:
            raise ValueError(f"the {what} set has {x.shape[0]} usable string(s): dataset inference needs at least "
                             f"{MIN_PER_SET} per set ({MIN_PER_SET // 2} to fit the linear model, "
                             f"{MIN_PER_SET // 2} to test it)")
    if splits < 1:
        raise ValueError("splits must be at least 1")
    s, v, kept, dropped = standardise(clip_outliers(suspect), clip_outliers(validation), names)
    if not kept:
        raise ValueError("every feature is constant over the suspect set: nothing to test")
    rng = np.random.default_rng(seed)
    p_values, t_values, coefs = [], [], []
    for _ in range(splits):
        s_fit, s_test = halves(len(s), rng)
        v_fit, v_test = halves(len(v), rng)
        x_fit = np.vstack([s[s_fit], v[v_fit]])
        y_fit = np.concatenate([np.ones(len(s_fit)), np.zeros(len(v_fit))])
        scores, coef = _fit_scores(x_fit, y_fit, np.vstack([s[s_test], v[v_test]]))
        t, p = welch_one_sided(scores[: len(s_test)], scores[len(s_test):])
        p_values.append(p)
        t_values.append(t)
        coefs.append(coef)
    weights = dict(zip(kept, (float(w) for w in np.mean(coefs, axis=0)), strict=True))
    return DatasetInferenceResult(
        p_value=merge_p_values(p_values), split_p_values=p_values, t_statistics=t_values, weights=weights,
        features=kept, dropped_features=dropped, n_suspect=len(s), n_validation=len(v),
        n_fit=(len(s) // 2, len(v) // 2), n_test=(len(s) - len(s) // 2, len(v) - len(v) // 2), seed=seed)
