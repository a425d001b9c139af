"""The set-level tests on a scoring backend: their inputs computed as ``mia attack`` computes per-string
signals (dataset inference), or as log-likelihoods of orders of a benchmark (contamination), then
handed to the pure statistics of :mod:`dataset_inference` and :mod:`contamination`."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_core.attack import items as attack_items
from mia_core.attack import run as ar
from mia_core.attack import scoring
from mia_core.attack.blind import BLIND
from mia_core.errors import MiaError
from mia_core.progress import note
from mia_core.setlevel import contamination as ct
from mia_core.setlevel import dataset_inference as di
from mia_core.types import MEMBER, NONMEMBER, Backend

DEFAULT_FEATURES = ("loss", "zlib", "mink", "minkpp", "recall", "ne")
DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # the reference code's k_min_probs sweep
DEFAULT_NEIGHBOURS = 5
EXAMPLE_SEPARATOR = "\n"  # each example's text ends with one, as the reference code's lines do


# ---------------------------------------------------------------- dataset inference


@dataclass
class FeatureConfig:
    signals: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))
    neighbours: int = DEFAULT_NEIGHBOURS
    batch_size: int = 8
    seed: int = 0
    quiet: bool = False


@dataclass
class SetFeatures:
    """Feature matrices [strings, features] of both sets (strings missing a feature removed)."""

    suspect: np.ndarray
    validation: np.ndarray
    names: list[str]
    texts: tuple[list[str], list[str]]
    missing: int  # strings left out because a feature could not be computed
    blind: dict[str, Any]  # the blind baseline as mia attack reports it
    warnings: list[str]
    passes: dict[str, float]  # forward passes per string, by signal family
    counts: dict[str, int] = field(default_factory=dict)


def check_disjoint(suspect: Sequence[attack_items.Item], validation: Sequence[attack_items.Item]) -> None:
    """A string in both sets (as scored: texts that open alike are alike once truncated) is a member and a
    non-member at once: refuse it in one line."""
    shared = {it.text.strip() for it in suspect} & {it.text.strip() for it in validation}
    if shared:
        example = next(iter(sorted(shared)))
        raise MiaError(f"{len(shared)} string(s) are in both the suspect and the validation set as scored (after "
                       f"truncation to --max-tokens), e.g. {example[:40]!r}: the sets must be disjoint; remove them "
                       "from one set")


def check_sizes(n_suspect: int, n_validation: int) -> None:
    for what, n in (("suspect", n_suspect), ("validation", n_validation)):
        if n < di.MIN_PER_SET:
            raise MiaError(f"the {what} set has {n} usable string(s): dataset inference needs at least "
                           f"{di.MIN_PER_SET} per set ({di.MIN_PER_SET // 2} to fit the linear model, "
                           f"{di.MIN_PER_SET // 2} to test it)")


def set_features(backend: Backend, suspect: Sequence[attack_items.Item], validation: Sequence[attack_items.Item],
                 config: FeatureConfig, reference: Backend | None = None,
                 reference_max_tokens: int | None = None) -> SetFeatures:
    """Every requested per-string signal of both sets, from one ``mia attack`` run over them labelled
    member (suspect) and nonmember (validation); the blind baseline comes from the same run."""
    check_disjoint(suspect, validation)
    check_sizes(len(suspect), len(validation))
    items = ([dataclasses.replace(it, label=MEMBER) for it in suspect]
             + [dataclasses.replace(it, label=NONMEMBER) for it in validation])
    signals = list(config.signals) + (["ref"] if reference is not None and "ref" not in config.signals else [])
    attack_config = ar.AttackConfig(signals=signals, k=list(config.fractions) if len(config.fractions) > 1
                                    else config.fractions[0], batch_size=config.batch_size, n_boot=0,
                                    seed=config.seed, quiet=config.quiet, blind=True, neighbours=config.neighbours,
                                    max_context=scoring.context_limit(backend))
    outcome = ar.attack(backend, items, attack_config, reference, reference_max_tokens)
    return features_from_signals(outcome.signals, outcome.columns["label"], outcome.columns["text"],
                                 dict(outcome.attrs), list(outcome.warnings), dict(outcome.counts), config.quiet)


def features_from_signals(signals: dict[str, np.ndarray], labels: Sequence[str], texts: Sequence[str],
                          attrs: dict[str, Any], warnings: list[str], counts: dict[str, int] | None = None,
                          quiet: bool = False) -> SetFeatures:
    """The feature matrices of members (suspect) and non-members (validation) from per-string signals, as
    ``mia attack`` computes and stores them (a live attack or an attack results file); strings missing a
    feature are left out, sets below the minimum refused in one line."""
    names = [name for name in signals if name != BLIND]
    matrix = np.column_stack([np.asarray(signals[name], dtype=np.float64) for name in names])
    labels = np.asarray(labels)
    texts = np.asarray(texts, dtype=object)
    complete = np.isfinite(matrix).all(axis=1)
    if (~complete).any():
        note(f"{int((~complete).sum())} string(s) lack a feature (see the notes above) and are left out", quiet)
    is_suspect, is_validation = (labels == MEMBER) & complete, (labels == NONMEMBER) & complete
    check_sizes(int(is_suspect.sum()), int(is_validation.sum()))
    return SetFeatures(matrix[is_suspect], matrix[is_validation], names,
                       (list(texts[is_suspect]), list(texts[is_validation])), int((~complete).sum()),
                       dict(attrs.get("blind") or {}), list(warnings),
                       dict(attrs.get("forward_passes_per_string") or {}), dict(counts or {}))


def dataset_inference(features: SetFeatures, splits: int = di.DEFAULT_SPLITS, seed: int = 0
                      ) -> di.DatasetInferenceResult:
    try:
        return di.dataset_inference(features.suspect, features.validation, features.names, splits, seed)
    except ValueError as exc:
        raise MiaError(str(exc)) from None


# ---------------------------------------------------------------- contamination


@dataclass
class ContaminationResult:
    p_value: float  # the permutation p-value of the summed log-likelihood
    resolution: float  # 1 / (N + 1): the smallest p-value the test can give
    t_test: tuple[float, float] | None  # Oren et al.'s sharded t-test (t, p), None with < 2 shards
    canonical: np.ndarray  # [shards] log-likelihood (nats) of each shard in canonical order
    permuted: np.ndarray  # [shards, N]
    shard_sizes: list[int]
    n_examples: int
    permutations: int
    seed: int
    context: int
    stride: int
    tokens_scored: int
    sequence_passes: int  # windows scored (one forward pass each, batched)
    tokens_in_benchmark: int  # the examples' tokens, once

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": self.p_value, "resolution": self.resolution,
                "t_test": {"t": self.t_test[0], "p_value": self.t_test[1]} if self.t_test else None,
                "canonical_logprob": self.canonical.tolist(), "permuted_logprob": self.permuted.tolist(),
                "shard_sizes": self.shard_sizes, "n_examples": self.n_examples, "n_shards": len(self.shard_sizes),
                "permutations": self.permutations, "seed": self.seed, "context": self.context,
                "stride": self.stride, "tokens_scored": self.tokens_scored,
                "forward_passes": self.sequence_passes,
                "tokens_in_benchmark": self.tokens_in_benchmark,
                "scored_tokens_per_benchmark_token": self.scored_per_token()}

    def scored_per_token(self) -> float:
        """How many times each token of the benchmark went through the model: N + 1 orders, more when
        a shard exceeds the context (its windows overlap)."""
        return self.tokens_scored / max(1, self.tokens_in_benchmark)


def example_tokens(backend: Backend, texts: Sequence[str]) -> list[list[int]]:
    """Each example's tokens, its text ending with one newline (examples are joined by it)."""
    encoded = backend.tokenizer.encode_batch([t.rstrip("\n") + EXAMPLE_SEPARATOR for t in texts])
    return [list(map(int, ids)) for ids in encoded]


def order_log_likelihoods(backend: Backend, sequences: Sequence[Sequence[int]], context: int, stride: int,
                          batch_size: int, quiet: bool = False) -> tuple[np.ndarray, int, int]:
    """Log-likelihood (nats) of each whole sequence, long ones through sliding windows; also the
    positions scored and the windows (forward passes). A model without BOS cannot score a
    sequence's first token: it is left out (the same position in every order). Also returns the
    tokens put through the model (overlapping windows count their overlap again) and the windows."""
    spans: list[tuple[int, int]] = []  # per sequence: its windows' range in ``flat``
    flat: list[list[int]] = []
    firsts: list[int] = []
    for seq in sequences:
        start = len(flat)
        for a, b, first_new in ct.windows(len(seq), context, stride):
            flat.append(list(seq[a:b]))
            firsts.append(first_new)
        spans.append((start, len(flat)))
    scored = scoring.score_sequences(backend, flat, batch_size, quiet, desc="orders", distribution=False)
    per_window = np.array([float(np.nansum(np.asarray(s.logprob, np.float64)[first:]))
                           for s, first in zip(scored, firsts, strict=True)])
    positions = sum(len(window) for window in flat)  # the cost: overlapping context is computed again
    totals = np.array([per_window[a:b].sum() for a, b in spans])
    return totals, positions, len(flat)


def contamination(backend: Backend, texts: Sequence[str], shards: int, permutations: int, seed: int = 0,
                  batch_size: int = 8, context: int | None = None, quiet: bool = False) -> ContaminationResult:
    """Oren et al.'s test of the benchmark ``texts`` in their canonical order (see :mod:`contamination`)."""
    if permutations < 1:
        raise MiaError("--permutations must be at least 1")
    try:
        bounds = ct.shard_bounds(len(texts), shards)
    except ValueError as exc:
        raise MiaError(f"{exc}; use fewer --shards or a larger dataset") from None
    limit = scoring.context_limit(backend)
    context = min(context, limit) if context and limit else (context or limit or 2048)
    if context < 2:
        raise MiaError(f"a context of {context} token(s) cannot score a sequence")
    stride = max(1, context // 2)  # Oren et al.: 2048-token windows every 1024
    tokens = example_tokens(backend, texts)
    rng = np.random.default_rng(seed)
    orders = [ct.shard_permutations(b - a, permutations, rng) for a, b in bounds]
    sequences: list[list[int]] = []
    for (a, b), shard_orders in zip(bounds, orders, strict=True):
        shard = tokens[a:b]
        sequences.append([t for ex in shard for t in ex])
        sequences.extend([t for i in order for t in shard[i]] for order in shard_orders)
    note(f"{len(texts)} examples in {len(bounds)} shard(s), each scored in its canonical order and "
         f"{permutations} seeded permutation(s): {len(sequences)} sequences", quiet)
    totals, positions, passes = order_log_likelihoods(backend, sequences, context, stride, batch_size, quiet)
    per_shard = totals.reshape(len(bounds), permutations + 1)
    canonical, permuted = per_shard[:, 0], per_shard[:, 1:]
    return ContaminationResult(
        p_value=ct.summed_permutation_p_value(canonical, permuted), resolution=1.0 / (permutations + 1),
        t_test=ct.sharded_t_test(canonical, permuted), canonical=canonical, permuted=permuted,
        shard_sizes=[b - a for a, b in bounds], n_examples=len(texts), permutations=permutations, seed=seed,
        context=context, stride=stride, tokens_scored=positions, sequence_passes=passes,
        tokens_in_benchmark=sum(len(t) for t in tokens))
