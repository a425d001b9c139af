"""Scoring strings with a model: which backends can (refused before loading), how long a string each takes,
the batched teacher-forced pass every signal family uses, and the memorization verdict it gives a map's suffix."""

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mia_core.attack.items import Item
from mia_core.errors import BackendOutOfMemory, MiaError
from mia_core.progress import note, progress
from mia_core.token_rows import matched_lengths
from mia_core.types import Backend, TokenScores, bos_prepended, capabilities, context_length

DEFAULT_MAX_TOKENS = 512


def _cannot_score(name: str, caps: Iterable[str]) -> MiaError:
    offers = ", ".join(sorted(caps)) or "nothing"
    return MiaError(f"model {name!r} cannot score token sequences (it offers: {offers}); "
                    "membership signals need per-token log-probabilities, which text-only API models do not return")


def check_registered_scoring(name: str) -> None:
    """Refuse, before loading anything (or asking for an API key), a model whose registration
    declares capabilities without ``score``; unknown names fail here with "Did you mean"."""
    from mia_core import registry

    caps = registry.backends.get(name).capabilities
    if caps is not None and "score" not in caps:
        raise _cannot_score(name, caps)


def require_scoring(backend: Backend, name: str) -> None:
    """Membership signals need per-token log-probabilities: refuse backends that lack them."""
    caps = capabilities(backend)
    if "score" not in caps:
        raise _cannot_score(name, caps)
    if getattr(backend, "tokenizer", None) is None:
        raise MiaError(f"model {name!r} has no tokenizer, so its strings cannot be scored")


def context_limit(backend: Backend) -> int | None:
    """The longest sequence the backend scores (its context less the BOS it prepends), if known."""
    context = context_length(backend)
    return None if context is None else context - (0 if bos_prepended(backend) is False else 1)


def describe_backend(backend: Backend) -> dict[str, Any]:
    try:
        described = backend.describe()
    except Exception:  # describe() is informative only; never fail a run on it
        return {}
    return described if isinstance(described, dict) else {}


def effective_max_tokens(backend: Backend, max_tokens: int | None) -> int | None:
    limit = context_limit(backend)
    if max_tokens is None:
        return limit
    return min(max_tokens, limit) if limit else max_tokens


def load_scoring_models(model: str, model_options: dict[str, str], reference: str | None = None,
                        reference_options: dict[str, str] | None = None, max_tokens: int | None = None,
                        ) -> tuple[Backend, Backend | None, int | None, int | None]:
    """The target backend and the optional reference, both refused before loading unless they score,
    and the longest string each may be given: ``max_tokens`` capped by the model's context. The target's
    limit is also capped by the reference's, so both see the same text (and a shorter reference context
    fails here, not after the whole target pass). Returns (backend, reference backend, limit, reference limit)."""
    from mia_core import registry

    check_registered_scoring(model)
    if reference:
        check_registered_scoring(reference)
    backend = registry.backends.create(model, model_options)
    require_scoring(backend, model)
    ref_backend = None
    if reference:
        ref_backend = registry.backends.create(reference, reference_options or {})
        require_scoring(ref_backend, reference)
    limit = effective_max_tokens(backend, max_tokens)
    ref_limit = effective_max_tokens(ref_backend, max_tokens) if ref_backend is not None else None
    if ref_limit is not None and limit is not None:
        limit = min(limit, ref_limit)
    return backend, ref_backend, limit, ref_limit


def score_sequences(backend: Backend, sequences: Sequence[Sequence[int]], batch_size: int, quiet: bool = False,
                    desc: str = "scoring", distribution: bool = True, sampling: Any = None) -> list[TokenScores]:
    """Teacher-forced scores of every sequence from its first token, in input order.

    Longest first, so each batch pads little; a batch that does not fit in memory is halved.
    ``distribution`` asks for the mean/std of log p that only Min-K%++ needs.
    """
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: list[TokenScores | None] = [None] * len(sequences)
    size = max(1, batch_size)
    done = 0
    with progress(total=sum(len(s) for s in sequences), desc=desc, unit="tok", quiet=quiet) as bar:
        while done < len(order):
            idx = order[done:done + size]
            batch = [list(sequences[i]) for i in idx]
            try:
                extra = {"sampling": sampling} if sampling is not None else {}  # optional contract keyword
                scored = backend.score(batch, 0, distribution=distribution, **extra)
            except BackendOutOfMemory:
                if size == 1:
                    raise
                size //= 2
                note(f"out of memory: retrying with batch size {size}", quiet)
                continue
            if len(scored) != len(idx):
                raise MiaError(f"the backend returned {len(scored)} scores for {len(idx)} sequences")
            for i, s in zip(idx, scored, strict=True):
                if len(s.logprob) > len(sequences[i]):
                    raise MiaError("the backend returned more scores than tokens")
                out[i] = s
            done += len(idx)
            bar.update(sum(len(b) for b in batch))
    return out  # type: ignore[return-value]


def memorization_verdicts(scores: Sequence[TokenScores], items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced check on each item's trailing ``suffix_length`` tokens: the matched length (leading
    suffix positions where the argmax is the true token: greedy decoding reproduces exactly that
    many) and the next-token accuracy (teacher-forced: fraction of suffix positions where the argmax
    is the true token given the true context; not a generation's position agreement, which stops
    helping itself after its first wrong token; NaN without suffix).

    Scores are aligned from the end: they cover the last ``len(scores.logprob)`` tokens.
    """
    argmax_tails, true_tails = [], []
    for s, it in zip(scores, items, strict=True):
        n = max(0, min(it.suffix_length, len(s.argmax)))
        argmax_tails.append(np.asarray(s.argmax[len(s.argmax) - n:]))
        true_tails.append(np.asarray(it.tokens[len(it.tokens) - n:]))
    matched = matched_lengths(argmax_tails, true_tails).astype(np.int32)
    accuracy = np.array([float(np.mean(a == b)) if len(a) else float("nan")
                         for a, b in zip(argmax_tails, true_tails, strict=True)], dtype=np.float64)
    return matched, accuracy
