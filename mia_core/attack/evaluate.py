"""What an attack keeps of its scored blocks, and its evaluation once the last block is in.

The strings are scored a block at a time (``mia_core.attack.run``) and each block's rows go to the results file;
:class:`Tally` keeps only what the evaluation needs of every string: its membership code (1 byte), one float per
signal (8 bytes each), an 8-byte hash of its text (the duplicate count) and, with ``--sampling``, the suffix's
probability. :func:`evaluate` then gives the metrics of each signal, the blind baseline (on at most
``BLIND_MAX_STRINGS`` labelled strings, a seeded sample beyond) and the warnings.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.attack.blind import (
    BLIND,
    Comparison,
    blind_scores,
    blind_warning,
    duplicate_counts,
    permutation_test,
    text_keys,
)
from mia_core.attack.metrics import (
    MEMBER_CODE,
    NONMEMBER_CODE,
    SignalMetrics,
    below_chance,
    below_chance_warning,
    bootstrap_auc_difference,
    evaluate_signal,
    label_mask,
    labels_to_bool,
    membership_codes,
)
from mia_core.progress import note
from mia_core.types import MEMBER, NONMEMBER

#: The blind baseline's cross-validation and its permutation test take time and memory that grow with the strings
#: (its n-gram vocabulary); above this many labelled strings it runs on a seeded sample of this many.
BLIND_MAX_STRINGS = 20_000
LABEL_NAMES = {MEMBER_CODE: MEMBER, NONMEMBER_CODE: NONMEMBER}


@dataclass
class Tally:
    """Per string what the evaluation needs (see the module's docstring), and the run's counts."""

    is_map: bool
    codes: list[np.ndarray] = field(default_factory=list)
    signals: dict[str, list[np.ndarray]] = field(default_factory=dict)
    keys: list[np.ndarray] = field(default_factory=list)
    p: list[np.ndarray] = field(default_factory=list)
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # strings, tokens_scored, truncated, extracted
    elapsed: float = 0.0

    def add(self, labels: list[str], texts: list[str], signals: dict[str, np.ndarray], columns: dict[str, Any],
            n_scored: int, elapsed: float, p: np.ndarray | None = None) -> None:
        """One block: its strings' labels and texts, signals, result columns, positions scored and time taken."""
        codes = membership_codes(labels)
        self.codes.append(codes)
        self.keys.append(text_keys(texts))
        for name, values in signals.items():
            self.signals.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
        if p is not None:
            self.p.append(p)
        extracted = columns.get("extracted")
        for code in np.unique(codes).tolist():
            mine = codes == code
            c = self.by_label.setdefault(LABEL_NAMES.get(code, "unlabelled"),
                                         {"strings": 0} if extracted is None else {"strings": 0, "extracted": 0})
            c["strings"] += int(mine.sum())
            if extracted is not None:
                c["extracted"] += int(np.asarray(extracted)[mine].sum())
        for name, value in (("strings", len(codes)), ("tokens_scored", n_scored),
                            ("truncated", int(np.asarray(columns["truncated"]).sum())),
                            ("extracted", None if extracted is None else int(np.asarray(extracted).sum()))):
            if value is not None:
                self.counts[name] = self.counts.get(name, 0) + value
        self.elapsed += elapsed

    def label_codes(self) -> np.ndarray:
        return np.concatenate(self.codes) if self.codes else np.zeros(0, np.int8)

    def signal_values(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.signals.items()}

    def probabilities(self) -> np.ndarray:
        return np.concatenate(self.p) if self.p else np.zeros(0)

    def summary_counts(self, recall_prefix_strings: int) -> dict[str, Any]:
        """The results file's ``counts``: strings, tokens scored, truncated, per label (and extracted, for maps)."""
        counts: dict[str, Any] = {"strings": self.counts.get("strings", 0),
                                  "tokens_scored": self.counts.get("tokens_scored", 0),
                                  "truncated": self.counts.get("truncated", 0)}
        if recall_prefix_strings:
            counts["recall_prefix_strings"] = recall_prefix_strings
        counts["by_label"] = dict(sorted(self.by_label.items()))
        if self.is_map:
            counts["extracted"] = self.counts.get("extracted", 0)
        return counts


@dataclass
class Evaluation:
    metrics: list[SignalMetrics]
    warnings: list[str]
    blind: dict[str, Any] | None
    blind_scores: np.ndarray | None  # one per string (NaN where not scored), when computed


def evaluate(codes: np.ndarray, signals: dict[str, np.ndarray], keys: np.ndarray,
             texts: Callable[[np.ndarray], list[str]], config: Any) -> Evaluation:
    """Each signal's metrics, then the blind baseline on the texts of the labelled strings (``texts(rows)``
    gives them), and the warnings. ``config`` is the attack's ``AttackConfig``."""
    metrics = [m for name, values in signals.items()
               if (m := evaluate_signal(name, codes, values, config.n_boot, config.seed)) is not None]
    blind_info, warnings, blind = _blind(codes, keys, texts, metrics, signals, config)
    warnings += [below_chance_warning(m) for m in metrics if below_chance(m)]
    return Evaluation(metrics, warnings, blind_info, blind)


def _blind_rows(codes: np.ndarray, seed: int, quiet: bool) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The labelled strings the blind baseline scores: all of them, or a seeded sample of ``BLIND_MAX_STRINGS``."""
    labelled = np.flatnonzero(label_mask(codes))
    if len(labelled) <= BLIND_MAX_STRINGS:
        return labelled, None
    chosen = np.sort(np.random.default_rng([seed, 0xB11D]).choice(labelled, BLIND_MAX_STRINGS, replace=False))
    note(f"blind baseline: on a sample of {BLIND_MAX_STRINGS} of the {len(labelled)} labelled strings (seed {seed}): "
         "its cross-validation and permutation test grow with the strings", quiet)
    return chosen, {"strings": BLIND_MAX_STRINGS, "of": int(len(labelled)), "seed": seed}


def _blind(codes: np.ndarray, keys: np.ndarray, texts: Callable[[np.ndarray], list[str]],
           metrics: list[SignalMetrics], signals: dict[str, np.ndarray], config: Any,
           ) -> tuple[dict[str, Any], list[str], np.ndarray | None]:
    """The blind baseline's row (added to ``metrics``), its scores and the warnings it raises."""
    if not config.blind:
        return {"computed": False, "reason": "--no-blind"}, [], None
    duplicates = duplicate_counts(keys, codes)
    warnings = duplicates.warnings()
    rows, sampled = _blind_rows(codes, config.seed, config.quiet)
    sample_texts = texts(rows)
    sample_labels = [LABEL_NAMES[int(c)] for c in codes[rows]]
    result = blind_scores(sample_texts, sample_labels, config.seed, duplicates=duplicates)
    info: dict[str, Any] = {"computed": result.skipped is None, "reason": result.skipped, "folds": result.folds,
                            "features": result.features, "duplicates": vars(result.duplicates)}
    if sampled is not None:
        info["sample"] = sampled
    if result.skipped is not None:
        return info, warnings, None
    scores = np.full(len(codes), np.nan)
    scores[rows] = result.scores
    best = max(metrics, key=lambda m: m.auc, default=None)
    m = evaluate_signal(BLIND, codes, scores, config.n_boot, config.seed)
    if m is None:
        return info, warnings, None
    metrics.append(m)
    info["auc"] = m.auc
    test = permutation_test(sample_texts, sample_labels, config.seed, config.blind_permutations)
    info["separable"] = bool(test and test.separable)
    if test is None:
        return info, warnings, scores
    info["permutation_test"] = test.to_dict()
    comparison = _compare(best, signals, scores, codes, config) if best is not None else None
    if comparison is not None:
        info["best_minus_blind"] = vars(comparison)
    intervals = [x for x in metrics if x.signal != BLIND and np.isfinite(x.auc_low)]
    separate = any(x.auc_low > 0.5 or x.auc_high < 0.5 for x in intervals) if intervals else None
    warning = blind_warning(test, comparison, separate)
    if warning:
        warnings.insert(0, warning)
    return info, warnings, scores


def _compare(best: SignalMetrics, signals: dict[str, np.ndarray], blind: np.ndarray, codes: np.ndarray,
             config: Any) -> Comparison | None:
    """The best signal's AUC minus the blind baseline's on the strings both scored (paired bootstrap)."""
    a = np.asarray(signals[best.signal], dtype=np.float64)
    keep = label_mask(codes) & np.isfinite(a) & np.isfinite(blind)
    y = labels_to_bool(codes)[keep]
    if config.n_boot <= 0 or y.all() or not y.any():
        return None
    diff, low, high = bootstrap_auc_difference(y, a[keep], blind[keep], config.n_boot, 0.95, config.seed)
    return Comparison(best.signal, diff, low, high, 0.95)
