"""Test-set contamination (Oren, Meister, Chatterji, Ladhak, Hashimoto, ICLR 2024, "Proving Test Set
Contamination in Black Box Language Models"; code tatsu-lab/test_set_contamination,
``compute_sharded_comparison_test.py``). Pure statistics (numpy, scipy).

A benchmark's examples are exchangeable: if the model never saw them, the order they are published in
is as likely to it as any other. A model that saw the benchmark in its canonical order gives that
order a higher log-likelihood than shuffled orders. The examples are cut into shards of consecutive
examples (Oren et al.'s ``shard_counts``: sizes differ by at most one), and each shard is scored in
its canonical order and in N seeded permutations of it. Two p-values come from those scores:

- the **permutation p-value**: the statistic is the canonical log-likelihood summed over shards; the
  j-th permutation of every shard together make the j-th permutation of the benchmark, and
  p = (1 + #{j : T_j ≥ T_canonical}) / (N + 1). Exact (P(p ≤ α) ≤ α) whenever the canonical order
  is exchangeable, whatever the model; it cannot go below 1/(N + 1), its resolution. With one
  shard it is Oren et al.'s permutation test.
- the **sharded t-test p-value** (Oren et al.'s sharded likelihood comparison test): per shard, the
  canonical log-likelihood minus the mean over its permutations, and a one-sided one-sample t-test
  over the shards (H1: mean difference > 0). Asymptotic (normal approximation over shards) but more
  powerful. The reference code divides by the population standard deviation (ddof 0); mia uses
  scipy's ``ttest_1samp`` (ddof 1), slightly more conservative.
"""

from collections.abc import Sequence

import numpy as np

MIN_EXAMPLES_PER_SHARD = 2  # a shard of one example has a single order
MIN_SHARDS_T_TEST = 2


def shard_sizes(n_examples: int, n_shards: int) -> list[int]:
    """Examples per shard, in order: the first ``n_examples mod n_shards`` shards get one more
    (Oren et al.'s ``shard_counts``)."""
    if n_shards < 1 or n_examples < n_shards * MIN_EXAMPLES_PER_SHARD:
        raise ValueError(f"{n_examples} example(s) cannot make {n_shards} shard(s) of at least "
                         f"{MIN_EXAMPLES_PER_SHARD} examples (a shard of one example has only one order)")
    base, extra = divmod(n_examples, n_shards)
    return [base + 1 if i < extra else base for i in range(n_shards)]


def shard_bounds(n_examples: int, n_shards: int) -> list[tuple[int, int]]:
    """[start, end) of each shard's examples."""
    ends = np.cumsum(shard_sizes(n_examples, n_shards)).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def shard_permutations(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` orders of a shard's ``size`` examples, each uniform over all orders (independent draws, so
    one may repeat the canonical order: a tie, counted against contamination)."""
    return np.array([rng.permutation(size) for _ in range(n)], dtype=np.int64).reshape(n, size)


def permutation_p_value(observed: float, permuted: Sequence[float]) -> float:
    """Monte Carlo permutation p-value (1 + #{permuted ≥ observed}) / (N + 1): exact under
    exchangeability (the observed order is one more draw), resolution 1/(N + 1)."""
    values = np.asarray(permuted, dtype=np.float64)
    return float((1 + np.count_nonzero(values >= observed)) / (len(values) + 1))


def enumerated_p_value(observed: float, all_orders: Sequence[float]) -> float:
    """The p-value over *every* order (the observed one among them): #{T ≥ observed} / #orders."""
    values = np.asarray(all_orders, dtype=np.float64)
    return float(np.count_nonzero(values >= observed) / len(values))


def sharded_t_test(canonical: Sequence[float], permuted: np.ndarray) -> tuple[float, float] | None:
    """(t, p) of Oren et al.'s sharded test: per-shard canonical − mean permuted log-likelihood,
    one-sided one-sample t-test over shards; None with fewer than 2 shards."""
    from scipy.stats import ttest_1samp

    canonical = np.asarray(canonical, dtype=np.float64)
    if len(canonical) < MIN_SHARDS_T_TEST:
        return None
    diffs = canonical - np.asarray(permuted, dtype=np.float64).mean(axis=1)
    if np.all(diffs == diffs[0]):
        return None  # no variance: the t statistic is undefined
    result = ttest_1samp(diffs, 0.0, alternative="greater")
    return float(result.statistic), float(result.pvalue)


def summed_permutation_p_value(canonical: Sequence[float], permuted: np.ndarray) -> float:
    """The permutation p-value of the log-likelihood summed over shards: ``canonical`` [shards],
    ``permuted`` [shards, N] (column j: every shard's j-th permutation)."""
    return permutation_p_value(float(np.sum(canonical)), np.asarray(permuted, dtype=np.float64).sum(axis=0))


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """How a sequence longer than the model's context is scored (Oren et al.'s sliding window):
    windows [start, end) of ``context`` tokens every ``stride`` tokens; each window's tokens from
    relative position ``first_new`` on are counted, so every token is counted exactly once and,
    past the first window, with at least ``context − stride`` tokens before it."""
    if context < 1 or not 0 < stride <= context:
        raise ValueError(f"need 0 < stride ({stride}) ≤ context ({context})")
    count = -(-max(0, length - context) // stride) + 1
    return [(stride * j, min(stride * j + context, length), 0 if j == 0 else context - stride)
            for j in range(count)]
