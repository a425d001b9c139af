"""ReCaLL (Xie et al. 2024, "ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods").

    recall(x) = LL(x | P) / LL(x)

with LL the mean log-likelihood per token of x's tokens and P a non-member prefix prepended to x.
Conditioning on non-member text lowers a member's likelihood more than a non-member's, so the
ratio (of two negative numbers) is larger for members: higher = member, as every mia signal.
Cost: one more forward pass per string, over the prefix and the string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mia_core.errors import MiaError
from mia_core.types import Backend, TokenScores

SEPARATOR = "\n\n"


def choose_prefix_items(codes: np.ndarray, shots: int, seed: int) -> list[int]:
    """Positions of ``shots`` non-member strings (seeded draw; ``codes``: each string's
    ``metrics.membership_codes``) whose texts make the prefix; they are left out of the evaluation, since the
    model is then shown them as context."""
    nonmembers = np.flatnonzero(np.asarray(codes) == 0)
    if len(nonmembers) <= shots:
        raise MiaError(f"ReCaLL needs {shots} non-member string(s) for its prefix and at least one more to "
                       f"evaluate, but the data has {len(nonmembers)}; give the prefix with --recall-prefix TEXT")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(nonmembers, size=shots, replace=False))


def prefix_tokens(backend: Backend, texts: Sequence[str]) -> list[int]:
    """The prefix P as the target's tokens: the texts joined by blank lines, ending with one."""
    text = SEPARATOR.join(t.strip() for t in texts) + SEPARATOR
    ids = backend.tokenizer.encode_batch([text])[0]
    if not ids:
        raise MiaError("the ReCaLL prefix is empty")
    return list(ids)


def recall_signal(token_lists: Sequence[Sequence[int]], scores: Sequence[TokenScores], prefix: Sequence[int],
                  score: Callable[[list[list[int]]], list[TokenScores]],
                  max_context: int | None) -> tuple[np.ndarray, int]:
    """LL(x | P) / LL(x) per string over the positions the unconditioned pass scored (aligned from the
    end, so a model without BOS compares the same tokens); NaN where prefix + string exceed
    ``max_context`` or LL(x) = 0. ``score`` scores whole sequences (the run's batched
    ``score_sequences``). Returns the values and how many strings did not fit."""
    out = np.full(len(token_lists), np.nan)
    fits = [i for i, t in enumerate(token_lists) if max_context is None or len(prefix) + len(t) <= max_context]
    conditioned = score([list(prefix) + list(token_lists[i]) for i in fits])
    for i, cond in zip(fits, conditioned, strict=True):
        plain = np.asarray(scores[i].logprob, dtype=np.float64)
        plain = plain[np.isfinite(plain)]
        n = len(plain)
        if n == 0:
            continue
        with_prefix = np.asarray(cond.logprob, dtype=np.float64)[-n:]
        ll, ll_p = plain.mean(), with_prefix.mean()
        if ll != 0 and np.isfinite(ll_p):
            out[i] = ll_p / ll
    return out, len(token_lists) - len(fits)
