"""What an attack keeps of its scored blocks, and its evaluation once the last block is in.

The strings are scored a block at a time (``mia_core.attack.run``) and each block's rows go to the results file;
:class:`Tally` keeps only what the evaluation needs of every string, in temporary files
(``mia_core.attack.outofcore.Spill``): its membership code (1 byte), one float per signal (8 bytes each) and an
8-byte hash of its text (the duplicate count); with ``--sampling`` also the suffix's probability, in memory.
:func:`evaluate` then gives the metrics of each signal (in memory up to ``outofcore.IN_MEMORY_STRINGS`` usable
strings, streamed beyond), the blind baseline (on at most ``BLIND_MAX_STRINGS`` labelled strings, a seeded sample
beyond) and the warnings.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.attack import outofcore
from mia_core.attack.blind import (
    BLIND,
    Comparison,
    Duplicates,
    blind_scores,
    blind_warning,
    duplicate_counts,
    permutation_test,
    text_keys,
)
from mia_core.attack.metrics import (
    DELONG,
    FPR_TARGETS,
    MEMBER_CODE,
    NONMEMBER_CODE,
    PLOT_GRID,
    SignalMetrics,
    below_chance,
    below_chance_warning,
    bootstrap_auc_difference,
    evaluate_signal,
    label_mask,
    labels_to_bool,
    membership_codes,
    nonmembers_needed,
)
from mia_core.attack.outofcore import Spill
from mia_core.progress import note
from mia_core.types import MEMBER, NONMEMBER

#: The blind baseline's cross-validation and its permutation test take time and memory that grow with the strings
#: (its n-gram vocabulary); above this many labelled strings it runs on a seeded sample of this many.
BLIND_MAX_STRINGS = 10_000
LABEL_NAMES = {MEMBER_CODE: MEMBER, NONMEMBER_CODE: NONMEMBER}


@dataclass
class Tally:
    """Per string what the evaluation needs (see the module's docstring), in temporary files, and the run's counts."""

    is_map: bool
    spill: Spill = field(default_factory=Spill)
    signal_names: list[str] = field(default_factory=list)
    p: list[np.ndarray] = field(default_factory=list)  # --sampling: 8 bytes a string, in memory
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # strings, tokens_scored, truncated, extracted
    elapsed: float = 0.0

    def add(self, labels: list[str], texts: list[str], signals: dict[str, np.ndarray], columns: dict[str, Any],
            n_scored: int, elapsed: float, p: np.ndarray | None = None) -> None:
        """One block: its strings' labels and texts, signals, result columns, positions scored and time taken."""
        codes = membership_codes(labels)
        self.spill.append(CODES, codes, np.int8)
        self.spill.append(KEYS, text_keys(texts), np.uint64)
        for name, values in signals.items():
            if name not in self.signal_names:
                self.signal_names.append(name)
            self.spill.append(SIGNAL + name, values, np.float64)
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
        return self.spill.read(CODES).astype(np.int8)

    def signal(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        return self.spill.read(SIGNAL + name, rows)

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

    def close(self) -> None:
        self.spill.close()


CODES, KEYS, SIGNAL = "codes", "keys", "signal/"


@dataclass
class Evaluation:
    metrics: list[SignalMetrics]
    warnings: list[str]
    blind: dict[str, Any] | None
    blind_scores: tuple[np.ndarray, np.ndarray] | None  # (rows, scores) of the strings it scored, when computed


def evaluate(tally: Tally, texts: Callable[[np.ndarray], list[str]], config: Any) -> Evaluation:
    """Each signal's metrics, then the blind baseline on the texts of the labelled strings (``texts(rows)``
    gives them), and the warnings. ``config`` is the attack's ``AttackConfig``."""
    codes = tally.label_codes()
    metrics = [m for name in tally.signal_names if (m := _tally_metrics(tally, name, codes, config)) is not None]
    blind_info, warnings, blind = _blind(tally, codes, texts, metrics, config)
    warnings += [below_chance_warning(m) for m in metrics if below_chance(m)]
    return Evaluation(metrics, warnings, blind_info, blind)


def signal_metrics(name: str, codes: np.ndarray, chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
                   read: Callable[[], np.ndarray], n_boot: int, seed: int) -> SignalMetrics | None:
    """``metrics.evaluate_signal`` of one signal, in memory (``read()``: every value) up to
    ``outofcore.IN_MEMORY_STRINGS`` usable strings; beyond, the same figures counted over ``chunks()`` ((values,
    codes) a slice of strings at a time) as they stream by in order, with DeLong's interval
    (``mia_core.attack.outofcore``)."""
    members = nonmembers = missing = 0
    for values, part in chunks():
        finite = np.isfinite(values)
        members += int((finite & (part == MEMBER_CODE)).sum())
        nonmembers += int((finite & (part == NONMEMBER_CODE)).sum())
        missing += int((~finite & (part >= NONMEMBER_CODE)).sum())
    if members + nonmembers <= outofcore.IN_MEMORY_STRINGS:
        return evaluate_signal(name, codes, read(), n_boot, seed)
    if not members or not nonmembers:
        return None

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for values, part in chunks():
            keep = np.isfinite(values) & (part >= NONMEMBER_CODE)
            yield outofcore.sort_keys(values[keep]), part[keep] == MEMBER_CODE

    figures = outofcore.streamed_metrics(pairs, members, nonmembers, FPR_TARGETS, 0.95, PLOT_GRID)
    resolvable = {t for t in FPR_TARGETS if nonmembers >= nonmembers_needed(t)}
    keys = {t: f"{t:g}" for t in FPR_TARGETS}
    return SignalMetrics(
        signal=name, n=members + nonmembers, n_members=members, n_nonmembers=nonmembers, n_missing=missing,
        auc=figures["auc"], auc_low=figures["low"], auc_high=figures["high"],
        tpr_at_fpr={keys[t]: figures["tpr"][t] if t in resolvable else None for t in FPR_TARGETS},
        tpr_at_fpr_ci={keys[t]: None for t in FPR_TARGETS},
        tpr_withheld={keys[t]: f"needs ≥ {nonmembers_needed(t)} non-members" for t in FPR_TARGETS
                      if t not in resolvable},
        interval=DELONG_INTERVAL, fpr=figures["fpr_points"], tpr=figures["tpr_points"])


def _tally_metrics(tally: Tally, name: str, codes: np.ndarray, config: Any) -> SignalMetrics | None:
    return signal_metrics(name, codes, lambda: tally.spill.chunks(SIGNAL + name, CODES), lambda: tally.signal(name),
                          config.n_boot, config.seed)


#: How the AUC interval of a signal with more than ``outofcore.IN_MEMORY_STRINGS`` strings is found.
DELONG_INTERVAL = (f"{DELONG} (normal approximation; over {outofcore.IN_MEMORY_STRINGS:,} strings no bootstrap is "
                   "run, so TPR has no interval)")


def _duplicates(tally: Tally, codes: np.ndarray) -> Duplicates:
    if len(codes) <= outofcore.IN_MEMORY_STRINGS:
        return duplicate_counts(tally.spill.read(KEYS), codes)
    within_members, within_nonmembers, across = outofcore.streamed_duplicates(lambda: tally.spill.chunks(KEYS, CODES))
    return Duplicates(within_members, within_nonmembers, across)


def _blind_rows(codes: np.ndarray, seed: int, quiet: bool) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The labelled strings the blind baseline scores: all of them, or a seeded sample of ``BLIND_MAX_STRINGS``
    (drawn as ranks among the labelled strings, then found a slice of the codes at a time: the positions of 10^7
    labelled strings would take 80 MB)."""
    labelled = int(label_mask(codes).sum())
    if labelled <= BLIND_MAX_STRINGS:
        return np.flatnonzero(label_mask(codes)), None
    ranks = np.sort(np.random.default_rng([seed, 0xB11D]).choice(labelled, BLIND_MAX_STRINGS, replace=False))
    rows, seen = [], 0
    for start in range(0, len(codes), outofcore.READ_VALUES):
        mine = np.flatnonzero(label_mask(codes[start:start + outofcore.READ_VALUES]))
        wanted = ranks[(ranks >= seen) & (ranks < seen + len(mine))] - seen
        rows.append(start + mine[wanted])
        seen += len(mine)
    note(f"blind baseline: on a sample of {BLIND_MAX_STRINGS} of the {labelled} labelled strings (seed {seed}): "
         "its cross-validation and permutation test grow with the strings", quiet)
    return np.concatenate(rows), {"strings": BLIND_MAX_STRINGS, "of": labelled, "seed": seed}


def _blind(tally: Tally, codes: np.ndarray, texts: Callable[[np.ndarray], list[str]], metrics: list[SignalMetrics],
           config: Any) -> tuple[dict[str, Any], list[str], tuple[np.ndarray, np.ndarray] | None]:
    """The blind baseline's row (added to ``metrics``), its (rows, scores) and the warnings it raises."""
    if not config.blind:
        return {"computed": False, "reason": "--no-blind"}, [], None
    duplicates = _duplicates(tally, codes)
    warnings = duplicates.warnings()
    rows, sampled = _blind_rows(codes, config.seed, config.quiet)
    sample_texts = texts(rows)
    sample_codes = codes[rows]
    sample_labels = [LABEL_NAMES[int(c)] for c in sample_codes]
    result = blind_scores(sample_texts, sample_labels, config.seed, duplicates=duplicates)
    info: dict[str, Any] = {"computed": result.skipped is None, "reason": result.skipped, "folds": result.folds,
                            "features": result.features, "duplicates": vars(result.duplicates)}
    if sampled is not None:
        info["sample"] = sampled
    if result.skipped is not None:
        return info, warnings, None
    best = max(metrics, key=lambda m: m.auc, default=None)
    m = evaluate_signal(BLIND, sample_codes, result.scores, config.n_boot, config.seed)
    if m is None:
        return info, warnings, None
    metrics.append(m)
    info["auc"] = m.auc
    test = permutation_test(sample_texts, sample_labels, config.seed, config.blind_permutations)
    info["separable"] = bool(test and test.separable)
    if test is None:
        return info, warnings, (rows, result.scores)
    info["permutation_test"] = test.to_dict()
    comparison = _compare(best, tally.signal(best.signal, rows), result.scores, sample_codes, config) \
        if best is not None else None
    if comparison is not None:
        info["best_minus_blind"] = vars(comparison)
    intervals = [x for x in metrics if x.signal != BLIND and np.isfinite(x.auc_low)]
    separate = any(x.auc_low > 0.5 or x.auc_high < 0.5 for x in intervals) if intervals else None
    warning = blind_warning(test, comparison, separate)
    if warning:
        warnings.insert(0, warning)
    return info, warnings, (rows, result.scores)


def _compare(best: SignalMetrics, a: np.ndarray, blind: np.ndarray, codes: np.ndarray,
             config: Any) -> Comparison | None:
    """The best signal's AUC minus the blind baseline's on the strings both scored (paired bootstrap); the three
    arrays are of the strings the blind baseline scored."""
    keep = label_mask(codes) & np.isfinite(a) & np.isfinite(blind)
    y = labels_to_bool(codes)[keep]
    if config.n_boot <= 0 or y.all() or not y.any():
        return None
    diff, low, high = bootstrap_auc_difference(y, a[keep], blind[keep], config.n_boot, 0.95, config.seed)
    return Comparison(best.signal, diff, low, high, 0.95)
