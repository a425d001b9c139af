"""What mia computes from a row of logits: the next token (greedy or sampled) and the
teacher-forced statistics of ``TokenScores``. numpy only: float32 for the statistics (as mia-hf
computes them; a 262k vocabulary makes float64 twice as slow), float64 for sampling.

Sampling follows the order of Hugging Face's ``generate`` (and ``mia_hf.backend.sampled_logprob``):
logits / temperature, then top-k, then top-p (the smallest set of most likely tokens whose mass
reaches top_p, at least one), renormalised, then one draw.
"""

from __future__ import annotations

import numpy as np

from mia_core.types import Sampling

# token_stats' workspace: this many float32 logits per pass (8 MiB: about 8 rows of a 262k vocabulary).
CACHE_ELEMENTS = 1 << 21


def log_softmax(logits: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """log p over the last axis (rows [K, V]), computed in ``dtype``."""
    x = logits.astype(dtype, copy=False)
    top = x.max(axis=-1, keepdims=True)
    shifted = x - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sampling_logprobs(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """log q per token of one row [V]: the distribution ``sampling`` draws from (−inf outside it)."""
    scaled = logits.astype(np.float64) / float(sampling.temperature)
    if sampling.top_k:
        k = min(int(sampling.top_k), scaled.shape[-1])
        kth = np.partition(scaled, -k)[-k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    if sampling.top_p is not None and float(sampling.top_p) < 1.0:
        order = np.argsort(scaled, kind="stable")  # ascending, as transformers' TopPLogitsWarper
        probs = np.exp(log_softmax(scaled[order]))
        remove = np.cumsum(probs) <= 1 - float(sampling.top_p)
        remove[-1] = False  # keep at least the most likely token
        scaled[order[remove]] = -np.inf
    return log_softmax(scaled)


def next_tokens(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator | None) -> np.ndarray:
    """One token per row of ``logits`` [K, V]: the argmax (greedy) or a draw from each row's q."""
    if sampling.greedy:
        return logits.argmax(axis=-1)
    assert rng is not None
    chosen = np.empty(len(logits), dtype=np.int64)
    for i, row in enumerate(logits):
        q = np.exp(sampling_logprobs(row, sampling))
        # q is zero outside the scheme's tokens, so the draw below only ever lands on one of them.
        # Inverse-CDF draw: one uniform number per row, so a seed fixes every row's choice.
        cdf = np.cumsum(q)
        chosen[i] = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(q) - 1)
    return chosen


def token_stats(logits: np.ndarray, targets: np.ndarray, distribution: bool) -> tuple[np.ndarray, ...]:
    """Per row of ``logits`` [K, V]: log p(target), argmax, and (``distribution``) the mean and std
    of log p(z) with z ~ p (Min-K%++), else NaN; float32 like ``HFCausalLM``'s.

    With z = x − max(x), e = exp(z), S = Σe: log p = z − log S, mean Σez/S − log S, variance
    Σez²/S − (Σez/S)². Rows go a few at a time through a workspace that stays in the cache (over
    a 262k vocabulary, whole-block temporaries cost more than the arithmetic)."""
    rows, vocab = logits.shape
    lp = np.empty(rows, dtype=np.float32)
    best = np.empty(rows, dtype=np.int64)
    mean = np.full(rows, np.nan, dtype=np.float32)
    std = np.full(rows, np.nan, dtype=np.float32)
    step = max(1, min(rows, CACHE_ELEMENTS // max(vocab, 1)))  # rows may be 0: a call without outputs
    z = np.empty((step, vocab), dtype=np.float32)
    e = np.empty_like(z)
    for a in range(0, rows, step):
        b = min(rows, a + step)
        zz, ee, index = z[:b - a], e[:b - a], np.arange(b - a)
        np.copyto(zz, logits[a:b], casting="same_kind")
        best[a:b] = zz.argmax(axis=-1)
        zz -= zz[index, best[a:b]][:, None]
        np.exp(zz, out=ee)
        total = ee.sum(axis=-1)
        log_total = np.log(total)
        lp[a:b] = zz[index, targets[a:b]] - log_total
        if not distribution:
            continue
        first = np.multiply(ee, zz, out=ee).sum(axis=-1) / total
        second = np.multiply(ee, zz, out=ee).sum(axis=-1) / total
        mean[a:b] = first - log_total
        std[a:b] = np.sqrt(np.clip(second - first * first, 0, None))
    return lp, best, mean, std
