"""Blind baseline: can members be told from nonmembers *without the model*?

Das et al. 2024 ("Blind baselines beat membership inference attacks for foundation models") and
Duan et al. 2024 show that many member/nonmember splits differ in distribution (dates, topics,
style), so an attack "succeeds" without any membership signal. mia scores the same strings with a
model-free classifier: a bag of word 1-2-grams and a logistic regression (scikit-learn), whose
scores are out-of-fold (stratified k-fold cross-validation, the vectorizer fitted inside each fold),
so every string is scored by a classifier that never saw it. Its ROC-AUC sits in the table as the
``blind`` row; when it is high, the signals' AUCs do not measure membership.

Exact duplicate strings are counted too: duplicates within a class inflate the sample size, and a
string that is both member and nonmember is a labelling error.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.types import MEMBER, NONMEMBER

BLIND = "blind"
FOLDS = 5
SEPARABLE_AUC = 0.6  # blind AUC above this: the split is separable without the model
MARGIN = 0.05  # blind AUC within this of the best signal: the model adds nothing the text does not show


@dataclass
class Duplicates:
    """Exact duplicate strings (after stripping surrounding whitespace) among labelled strings."""

    within_members: int = 0  # extra copies among members
    within_nonmembers: int = 0
    across_classes: int = 0  # distinct strings labelled both member and nonmember

    def warnings(self) -> list[str]:
        out = []
        if self.within_members or self.within_nonmembers:
            out.append(f"duplicate strings: {self.within_members} extra member copies and {self.within_nonmembers} "
                       "extra nonmember copies; each copy counts as a sample, which narrows the intervals")
        if self.across_classes:
            out.append(f"{self.across_classes} string(s) are labelled both member and nonmember: no signal can "
                       "separate them; check the labels")
        return out


def count_duplicates(texts: Sequence[str], labels: Sequence[str]) -> Duplicates:
    by_class: dict[str, Counter[str]] = {MEMBER: Counter(), NONMEMBER: Counter()}
    for text, label in zip(texts, labels, strict=True):
        if label in by_class:
            by_class[label][text.strip()] += 1
    members, nonmembers = by_class[MEMBER], by_class[NONMEMBER]
    return Duplicates(within_members=sum(c - 1 for c in members.values()),
                      within_nonmembers=sum(c - 1 for c in nonmembers.values()),
                      across_classes=len(set(members) & set(nonmembers)))


@dataclass
class BlindResult:
    """Out-of-fold member probabilities of the blind classifier (NaN for unlabelled strings)."""

    scores: np.ndarray
    folds: int
    features: str
    duplicates: Duplicates
    skipped: str | None = None  # why no classifier was fitted
    info: dict[str, Any] = field(default_factory=dict)


def blind_scores(texts: Sequence[str], labels: Sequence[str], seed: int = 0, folds: int = FOLDS) -> BlindResult:
    """Cross-validated bag-of-n-grams logistic regression on the labelled strings."""
    labelled = np.array([lab in (MEMBER, NONMEMBER) for lab in labels], dtype=bool)
    y = np.array([lab == MEMBER for lab in labels], dtype=bool)[labelled]
    x = [t for t, keep in zip(texts, labelled, strict=True) if keep]
    scores = np.full(len(texts), np.nan)
    features = ("word 1-2-grams (counts), logistic regression (C = 1), stratified k-fold, out-of-fold scores "
                "as within-fold rank percentiles")
    duplicates = count_duplicates(texts, labels)
    smallest = int(min(y.sum(), (~y).sum())) if len(y) else 0
    k = min(folds, smallest)
    if k < 2:
        return BlindResult(scores, 0, features, duplicates, "fewer than 2 strings in a class: no cross-validation")
    from scipy.stats import rankdata
    from sklearn.base import clone
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", lowercase=True),
                          LogisticRegression(C=1.0, max_iter=2000))
    oof = np.empty(len(x))
    try:
        for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
            fitted = clone(model).fit([x[i] for i in train], y[train])
            p = fitted.predict_proba([x[i] for i in test])[:, 1]
            # Ranks within the fold: each fold's classifier has its own intercept, and pooling raw
            # probabilities across folds pushes a null split's AUC below 0.5 (the held-out fold's
            # class balance is the mirror of its training folds').
            oof[test] = (rankdata(p) - 0.5) / len(p)
    except ValueError as exc:  # e.g. no word at all in the strings of a fold
        return BlindResult(scores, k, features, duplicates, f"the classifier could not be fitted ({exc})")
    scores[labelled] = oof
    return BlindResult(scores, k, features, duplicates)


def blind_warning(blind_auc: float, best_signal: str | None, best_auc: float | None) -> str | None:
    """The warning the table prints when the split is separable without the model, else None."""
    if blind_auc > SEPARABLE_AUC:
        return (f"the split is separable without the model: the blind baseline (no model, word n-grams) reaches "
                f"AUC {blind_auc:.3f} > {SEPARABLE_AUC}, so members and nonmembers differ in their text and the "
                "signals' AUCs do not measure membership")
    if best_auc is not None and blind_auc >= best_auc - MARGIN:
        return (f"the blind baseline (no model) reaches AUC {blind_auc:.3f}, within {MARGIN} of the best signal "
                f"({best_signal}, {best_auc:.3f}): the split is as separable without the model, so the signals' "
                "AUCs do not measure membership")
    return None
