"""Blind baseline: can members be told from nonmembers *without the model*?

Das et al. 2024 ("Blind baselines beat membership inference attacks for foundation models") and
Duan et al. 2024 show that many member/nonmember splits differ in distribution (dates, topics,
style), so an attack "succeeds" without any membership signal. mia scores the same strings with a
model-free classifier: a bag of word 1-2-grams and a multinomial naive Bayes classifier
(scikit-learn), whose scores are out-of-fold (stratified k-fold cross-validation), so every string is scored by a
classifier that never saw it. Its ROC-AUC sits in the table as the ``blind`` row.

Whether the split is separable without the model is a **permutation test** (:func:`permutation_test`):
the whole cross-validation is refitted on ``PERMUTATIONS`` random relabellings of the same strings,
and the split is called separable when the observed AUC is reached by at most ``LEVEL`` of them
(p = (1 + #{permuted AUC ≥ observed}) / (1 + permutations)). This controls the false-warning rate
at ``LEVEL`` whatever the sample size, which a fixed AUC threshold does not (its rate depends on n),
and it includes the classifier's own variance, which a bootstrap of out-of-fold scores ignores.

Exact duplicate strings are counted too: duplicates within a class inflate the sample size, and a
string that is both member and nonmember is a labelling error.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.types import MEMBER, NONMEMBER

BLIND = "blind"
FOLDS = 5
PERMUTATIONS = 99  # label permutations of the separability test: p-values in steps of 1/100
LEVEL = 0.05  # the test's level: the share of truly random splits it calls separable


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


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """An 8-byte hash (BLAKE2b) of each string, surrounding whitespace stripped: what the duplicate count compares,
    so that it keeps 8 bytes a string, not the strings (two different strings share a hash with probability
    about n²/2^65: 3·10^-6 for 10^7 strings)."""
    return np.array([int.from_bytes(hashlib.blake2b(t.strip().encode("utf-8"), digest_size=8).digest(), "little")
                     for t in texts], dtype=np.uint64)


def duplicate_counts(keys: np.ndarray, codes: np.ndarray) -> Duplicates:
    """:class:`Duplicates` from each string's :func:`text_keys` and membership code (``metrics.membership_codes``)."""
    members, nonmembers = np.unique(keys[codes == 1]), np.unique(keys[codes == 0])
    return Duplicates(within_members=int((codes == 1).sum()) - len(members),
                      within_nonmembers=int((codes == 0).sum()) - len(nonmembers),
                      across_classes=len(np.intersect1d(members, nonmembers, assume_unique=True)))


def count_duplicates(texts: Sequence[str], labels: Sequence[str]) -> Duplicates:
    from mia_core.attack.metrics import membership_codes

    return duplicate_counts(text_keys(texts), membership_codes(labels))


@dataclass
class BlindResult:
    """Out-of-fold member probabilities of the blind classifier (NaN for unlabelled strings)."""

    scores: np.ndarray
    folds: int
    features: str
    duplicates: Duplicates
    skipped: str | None = None  # why no classifier was fitted
    info: dict[str, Any] = field(default_factory=dict)


FEATURES = "word 1-2-grams (counts), multinomial naive Bayes (Laplace smoothing), stratified k-fold, " \
           "out-of-fold log-odds as within-fold rank percentiles"


def blind_scores(texts: Sequence[str], labels: Sequence[str], seed: int = 0, folds: int = FOLDS,
                 duplicates: Duplicates | None = None) -> BlindResult:
    """Cross-validated bag-of-n-grams naive Bayes classifier on the labelled strings (``duplicates``: counted
    already, over more strings than these)."""
    labelled = _labelled(labels)
    y = np.array([lab == MEMBER for lab in labels], dtype=bool)[labelled]
    scores = np.full(len(texts), np.nan)
    duplicates = duplicates if duplicates is not None else count_duplicates(texts, labels)
    k = _fold_count(y, folds)
    if k < 2:
        return BlindResult(scores, 0, FEATURES, duplicates, "fewer than 2 strings in a class: no cross-validation")
    try:
        x = _features([t for t, keep in zip(texts, labelled, strict=True) if keep])
        scores[labelled] = _out_of_fold(x, y, k, seed)
    except ValueError as exc:  # e.g. no word at all in the strings of a fold
        return BlindResult(scores, k, FEATURES, duplicates, f"the classifier could not be fitted ({exc})")
    return BlindResult(scores, k, FEATURES, duplicates)


def _labelled(labels: Sequence[str]) -> np.ndarray:
    return np.array([lab in (MEMBER, NONMEMBER) for lab in labels], dtype=bool)


def _fold_count(y: np.ndarray, folds: int) -> int:
    smallest = int(min(y.sum(), (~y).sum())) if len(y) else 0
    return min(folds, smallest)


def _features(texts: Sequence[str]) -> Any:
    """Word 1-2-gram counts over the vocabulary of all strings, counted once so that the permutation
    test refits only the classifier; each fold keeps the columns its training strings use
    (:func:`_out_of_fold`), which is a vocabulary fitted inside the fold."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", lowercase=True).fit_transform(texts)


def _out_of_fold(x: Any, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    from scipy.stats import rankdata
    from sklearn.model_selection import StratifiedKFold
    from sklearn.naive_bayes import MultinomialNB

    oof = np.empty(len(y))
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        # Naive Bayes: fitted by counting (a logistic regression took ~4 s CPU per cross-validation at
        # 1,000 strings, too slow to refit on 99 permutations); log-odds, not probabilities, which
        # saturate at 0 and 1 on long strings and would tie
        # the training strings' n-grams only: an n-gram seen only in held-out strings would otherwise
        # add a term set by the training classes' sizes, ranking held-out strings by their unseen n-grams
        seen = np.flatnonzero(np.asarray(x[train].sum(axis=0)).ravel())
        log_p = MultinomialNB(alpha=1.0).fit(x[train][:, seen], y[train]).predict_log_proba(x[test][:, seen])
        p = log_p[:, 1] - log_p[:, 0]
        # Ranks within the fold: each fold's classifier has its own intercept, and pooling raw
        # probabilities across folds pushes a null split's AUC below 0.5 (the held-out fold's
        # class balance is the mirror of its training folds').
        oof[test] = (rankdata(p) - 0.5) / len(p)
    return oof


@dataclass
class PermutationTest:
    """Is the blind AUC higher than relabelling the same strings at random gives?"""

    auc: float  # the blind baseline's out-of-fold AUC on the true labels
    p_value: float  # (1 + #{permuted AUC >= auc}) / (1 + permutations); a lower bound when stopped early
    permutations: int  # planned
    run: int  # done: fewer when the answer was already "not separable"
    level: float
    null_mean: float  # mean AUC over the permutations run (about 0.5)

    @property
    def separable(self) -> bool:
        return self.p_value <= self.level

    def describe(self) -> str:
        if self.run < self.permutations:
            return (f"permutation test: p ≥ {self.p_value:.3f} > level {self.level:g}, stopped after {self.run} of "
                    f"{self.permutations} label permutations")
        return (f"permutation test: p = {self.p_value:.3f} over {self.permutations} label permutations, "
                f"level {self.level:g}")

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self), separable=self.separable)


def permutation_test(texts: Sequence[str], labels: Sequence[str], seed: int = 0,
                     permutations: int = PERMUTATIONS, level: float = LEVEL,
                     folds: int = FOLDS) -> PermutationTest | None:
    """Refit the cross-validated classifier on ``permutations`` seeded shuffles of the labels
    (the same strings, folds drawn the same way) and compare the observed AUC with theirs.

    Stops as soon as enough permuted AUCs reach the observed one for p to exceed ``level`` whatever
    the rest give (the verdict of the full test, so the error rate is the same); on a null split
    that is after about a dozen permutations. None when no classifier can be fitted (a class with
    fewer than 2 strings, no words)."""
    from mia_core.attack.metrics import roc_auc

    labelled = _labelled(labels)
    y = np.array([lab == MEMBER for lab in labels], dtype=bool)[labelled]
    k = _fold_count(y, folds)
    if k < 2 or permutations < 1:
        return None
    try:
        x = _features([t for t, keep in zip(texts, labelled, strict=True) if keep])
        observed = roc_auc(y, _out_of_fold(x, y, k, seed))
        rng = np.random.default_rng([seed, 0x5EED])
        enough = math.floor(level * (1 + permutations) + 1e-9)  # this many reaching it: p > level
        null: list[float] = []
        reached = 0
        while len(null) < permutations and reached < enough:
            yp = rng.permutation(y)
            null.append(roc_auc(yp, _out_of_fold(x, yp, k, seed)))
            reached += null[-1] >= observed - 1e-12  # ties count against separability
    except ValueError:
        return None
    return PermutationTest(auc=observed, p_value=(1 + reached) / (1 + permutations), permutations=permutations,
                           run=len(null), level=level, null_mean=float(np.mean(null)))


@dataclass
class Comparison:
    """The best signal's AUC minus the blind baseline's, with a paired bootstrap interval."""

    signal: str
    difference: float
    low: float
    high: float
    level: float

    def describe(self) -> str:
        return (f"{self.signal} − blind = {self.difference:+.3f} [{self.level * 100:g}% paired bootstrap interval "
                f"{self.low:+.3f}, {self.high:+.3f}]")


def blind_warning(test: PermutationTest, comparison: Comparison | None, signals_separate: bool | None) -> str | None:
    """What the summary says about the blind baseline, or None when there is nothing to warn of.

    ``signals_separate``: whether any signal's AUC interval excludes 0.5 (None: no intervals)."""
    blind = f"the blind baseline (no model, word n-grams) reaches AUC {test.auc:.3f} ({test.describe()})"
    if not test.separable:
        if signals_separate is False:
            return (f"neither the blind baseline nor any signal separates the halves: {blind}, and every "
                    "signal's AUC interval contains 0.5")
        return None
    if comparison is not None and comparison.low > 0:
        return (f"the split is separable without the model: {blind}; the best signal exceeds it "
                f"({comparison.describe()}), so only that excess can measure membership")
    beaten = f" ({comparison.describe()}: not above 0)" if comparison is not None else ""
    return (f"the split is separable without the model: {blind}, so members and nonmembers differ in their "
            f"text and the signals' AUCs do not measure membership{beaten}")
