"""The reference-model signal ``ref``: the same text's NLL under a reference model minus under the target."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from mia_core.attack import signals as sig
from mia_core.attack.items import Item
from mia_core.attack.scoring import score_sequences
from mia_core.types import Backend, TokenScores


def _first_token_text(tokenizer: Any, ids: Sequence[int], text: str) -> str | None:
    """The text of a sequence's first token when it is a clean prefix of ``text`` (else None)."""
    if not ids:
        return None
    first = tokenizer.decode_batch([[int(ids[0])]])[0]
    return first if first and text.startswith(first) and len(first) < len(text) else None


def _has_bos(scores: TokenScores) -> bool:
    """Whether a model scored a sequence's first token (it has a BOS to condition on)."""
    return len(scores.logprob) > 0 and bool(np.isfinite(scores.logprob[0]))


def _span_sums(backend: Backend, context: Sequence[str], spans: Sequence[str], config: Any,
               desc: str, quiet: bool) -> tuple[list[float], list[int]]:
    """Total log-probability of each ``span`` given its ``context`` (tokenized apart, so every model
    scores exactly the span's bytes), and the token count of each scored sequence."""
    tok = backend.tokenizer
    ctx_ids, span_ids = tok.encode_batch(list(context)), tok.encode_batch(list(spans))
    seqs = [list(c) + list(s) for c, s in zip(ctx_ids, span_ids, strict=True)]
    scored = score_sequences(backend, seqs, config.batch_size, quiet, desc=desc, distribution=False)
    sums = []
    for sc, s in zip(scored, span_ids, strict=True):
        tail = np.asarray(sc.logprob, dtype=np.float64)[len(sc.logprob) - len(s):] if len(s) else np.array([])
        sums.append(float(np.sum(tail)) if len(s) and np.isfinite(tail).all() else float("nan"))
    return sums, [len(q) for q in seqs]


def reference_signal(reference: Backend, backend: Backend, items: Sequence[Item], target_raw: Sequence[TokenScores],
                      shared: Any, config: Any, max_tokens: int | None) -> np.ndarray:
    """``ref`` = NLL_ref − NLL_target over exactly the same text for both models.

    Same tokenizer: mean NLL per token over the positions both models scored. Different
    tokenizers: NLL per UTF-8 byte of the same span. A model without BOS cannot score its first
    token, so when either lacks BOS the text is split into a context (the first token's text of
    the model(s) without BOS) and a span (the rest); both models get context and span tokenized
    apart and are scored on the span only, so neither is credited with bytes the other skipped.
    Strings left out are counted in ``shared.skipped``.
    """
    if shared.same_tokenizer:
        ref_raw = score_sequences(reference, [it.tokens for it in items], config.batch_size, shared.quiet_bars,
                                  desc="reference", distribution=False)
        out = []
        for t, r in zip(target_raw, ref_raw, strict=True):
            tl, rl = np.asarray(t.logprob, np.float64), np.asarray(r.logprob, np.float64)
            n = min(len(tl), len(rl))
            both = np.isfinite(tl[len(tl) - n:]) & np.isfinite(rl[len(rl) - n:])  # aligned from the end
            out.append(sig.ref_signal(sig.mean_nll(tl[len(tl) - n:][both]), sig.mean_nll(rl[len(rl) - n:][both]))
                       if both.any() else float("nan"))
        return np.array(out, dtype=np.float64)
    texts = [it.text for it in items]
    encoded = reference.tokenizer.encode_batch(texts)
    if shared.reference_bos is None:  # a property of the model: probed once, on the first string
        probe = score_sequences(reference, [encoded[0][:8] or [0]], 1, True, desc="reference", distribution=False)
        shared.reference_bos = _has_bos(probe[0])
    contexts: list[str | None] = []
    for item, raw, ref_ids in zip(items, target_raw, encoded, strict=True):
        cut = ""
        ok = True
        for has_bos, tok, ids in ((_has_bos(raw), backend.tokenizer, item.tokens),
                                  (shared.reference_bos, reference.tokenizer, ref_ids)):
            if not has_bos:
                first = _first_token_text(tok, ids, item.text)
                ok = ok and first is not None
                cut = max(cut, first or "", key=len)
        contexts.append(cut if ok else None)
    shared.skipped["ref_unusable"] += sum(c is None for c in contexts)
    keep = [i for i, c in enumerate(contexts) if c is not None]
    ctx = [contexts[i] or "" for i in keep]
    spans = [texts[i][len(contexts[i] or ""):] for i in keep]
    ref_sums, ref_lens = _span_sums(reference, ctx, spans, config, "reference", shared.quiet_bars)
    if all(c == "" for c in ctx):  # both models have BOS: the target's own pass covered every byte
        tgt_sums = [float(np.sum(target_raw[i].logprob)) for i in keep]
    else:
        tgt_sums, _ = _span_sums(backend, ctx, spans, config, "target, same span as the reference", shared.quiet_bars)
    cut = [max_tokens is not None and n > max_tokens for n in ref_lens]
    shared.skipped["ref_too_long"] += sum(cut)
    out = np.full(len(items), np.nan)
    for j, i in enumerate(keep):
        n_bytes = len(spans[j].encode("utf-8"))
        if cut[j] or n_bytes == 0 or not np.isfinite(ref_sums[j]) or not np.isfinite(tgt_sums[j]):
            continue
        out[i] = sig.ref_signal(-tgt_sums[j] / n_bytes, -ref_sums[j] / n_bytes)
    return out
