"""``mia attack``: score strings with a model once, derive every membership signal and (for
prefix-map windows) the teacher-forced memorization verdict from that single pass, store
one row per string, and evaluate the signals against member/nonmember labels.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import __version__
from mia_core.attack import signals as sig
from mia_core.attack.items import Item
from mia_core.attack.metrics import (
    SignalMetrics,
    below_chance,
    below_chance_warning,
    evaluate_signal,
    label_problem,
)
from mia_core.errors import BackendOutOfMemory, MiaError
from mia_core.progress import note, progress
from mia_core.token_rows import matched_lengths
from mia_core.types import Backend, TokenScores, bos_prepended, capabilities, context_length

DEFAULT_MAX_TOKENS = 512


@dataclass
class AttackConfig:
    signals: list[str] = field(default_factory=lambda: list(sig.TARGET_SIGNALS))
    k: float | list[float] = sig.DEFAULT_K  # one fraction, or several (a sweep: mink_0.1, mink_0.2, ...)
    batch_size: int = 8
    n_boot: int = 1000
    seed: int = 0
    quiet: bool = False
    blind: bool = True  # also score the strings with the model-free blind baseline
    blind_permutations: int = 99  # label permutations of its separability test (attack.blind.PERMUTATIONS)
    require_labels: bool = True  # refuse unlabelled strings before scoring (the CLI always does)
    sampling: Any = None  # map windows: also p of each suffix under this Sampling (probabilistic extraction)
    recall_prefix: str | None = None  # ReCaLL's non-member prefix; None: drawn from the data's non-members
    recall_shots: int = 1  # non-member strings drawn for the prefix (left out of the evaluation)
    neighbours: int = 10  # neighbourhood attack: neighbours per string
    max_context: int | None = None  # longest sequence the target scores (ReCaLL's prefix + string, neighbours)


@dataclass
class AttackOutcome:
    """What an attack produced: the results file, per-signal metrics (empty without labels)."""

    path: Path | None
    signals: dict[str, np.ndarray]
    metrics: list[SignalMetrics]
    label_message: str | None
    counts: dict[str, int]
    columns: dict[str, Any]
    attrs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # blind baseline, duplicates
    plot: Path | None = None
    exports: list[Path] = field(default_factory=list)



# ---------------------------------------------------------------- backends


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


def _describe(backend: Backend) -> dict[str, Any]:
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


# ---------------------------------------------------------------- the attack


def _first_token_text(tokenizer: Any, ids: Sequence[int], text: str) -> str | None:
    """The text of a sequence's first token when it is a clean prefix of ``text`` (else None)."""
    if not ids:
        return None
    first = tokenizer.decode_batch([[int(ids[0])]])[0]
    return first if first and text.startswith(first) and len(first) < len(text) else None


def _has_bos(scores: TokenScores) -> bool:
    """Whether a model scored a sequence's first token (it has a BOS to condition on)."""
    return len(scores.logprob) > 0 and bool(np.isfinite(scores.logprob[0]))


def _span_sums(backend: Backend, context: Sequence[str], spans: Sequence[str], config: AttackConfig,
               desc: str) -> tuple[list[float], list[int]]:
    """Total log-probability of each ``span`` given its ``context`` (tokenized apart, so every model
    scores exactly the span's bytes), and the token count of each scored sequence."""
    tok = backend.tokenizer
    ctx_ids, span_ids = tok.encode_batch(list(context)), tok.encode_batch(list(spans))
    seqs = [list(c) + list(s) for c, s in zip(ctx_ids, span_ids, strict=True)]
    scored = score_sequences(backend, seqs, config.batch_size, config.quiet, desc=desc, distribution=False)
    sums = []
    for sc, s in zip(scored, span_ids, strict=True):
        tail = np.asarray(sc.logprob, dtype=np.float64)[len(sc.logprob) - len(s):] if len(s) else np.array([])
        sums.append(float(np.sum(tail)) if len(s) and np.isfinite(tail).all() else float("nan"))
    return sums, [len(q) for q in seqs]


def _reference_signal(reference: Backend, backend: Backend, items: Sequence[Item], target_raw: Sequence[TokenScores],
                      same_tokenizer: bool, config: AttackConfig, max_tokens: int | None) -> np.ndarray:
    """``ref`` = NLL_ref − NLL_target over exactly the same text for both models.

    Same tokenizer: mean NLL per token over the positions both models scored. Different
    tokenizers: NLL per UTF-8 byte of the same span. A model without BOS cannot score its first
    token, so when either lacks BOS the text is split into a context (the first token's text of
    the model(s) without BOS) and a span (the rest); both models get context and span tokenized
    apart and are scored on the span only, so neither is credited with bytes the other skipped.
    """
    if same_tokenizer:
        ref_raw = score_sequences(reference, [it.tokens for it in items], config.batch_size, config.quiet,
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
    probe = score_sequences(reference, [encoded[0][:8] or [0]], 1, True, desc="reference", distribution=False)
    ref_bos = _has_bos(probe[0])
    contexts: list[str | None] = []
    for item, raw, ref_ids in zip(items, target_raw, encoded, strict=True):
        cut = ""
        ok = True
        for has_bos, tok, ids in ((_has_bos(raw), backend.tokenizer, item.tokens),
                                  (ref_bos, reference.tokenizer, ref_ids)):
            if not has_bos:
                first = _first_token_text(tok, ids, item.text)
                ok = ok and first is not None
                cut = max(cut, first or "", key=len)
        contexts.append(cut if ok else None)
    unusable = sum(c is None for c in contexts)
    if unusable:
        note(f"{unusable} string(s) have a first token that is not a clean text prefix: their ref signal is left "
            "out (the two models could not score the same bytes)", config.quiet)
    keep = [i for i, c in enumerate(contexts) if c is not None]
    ctx = [contexts[i] or "" for i in keep]
    spans = [texts[i][len(contexts[i] or ""):] for i in keep]
    ref_sums, ref_lens = _span_sums(reference, ctx, spans, config, "reference")
    if all(c == "" for c in ctx):  # both models have BOS: the target's own pass covered every byte
        tgt_sums = [float(np.sum(target_raw[i].logprob)) for i in keep]
    else:
        tgt_sums, _ = _span_sums(backend, ctx, spans, config, "target, same span as the reference")
    cut = [max_tokens is not None and n > max_tokens for n in ref_lens]
    if any(cut):
        note(f"{sum(cut)} string(s) are longer than the reference model's limit ({max_tokens} tokens): "
            "their ref signal is left out (per-byte NLLs of different spans are not comparable)", config.quiet)
    out = np.full(len(items), np.nan)
    for j, i in enumerate(keep):
        n_bytes = len(spans[j].encode("utf-8"))
        if cut[j] or n_bytes == 0 or not np.isfinite(ref_sums[j]) or not np.isfinite(tgt_sums[j]):
            continue
        out[i] = sig.ref_signal(-tgt_sums[j] / n_bytes, -ref_sums[j] / n_bytes)
    return out


@dataclass
class _Scored:
    """One scoring pass over the items: raw scores (aligned to the tokens), scored positions, timing."""

    raw: list[TokenScores]
    scores: list[TokenScores]
    elapsed: float

    @property
    def n_scored(self) -> int:
        return sum(len(s.logprob) for s in self.scores)


def attack(backend: Backend, items: Sequence[Item], config: AttackConfig, reference: Backend | None = None,
           reference_max_tokens: int | None = None, is_map: bool = False) -> AttackOutcome:
    """Score ``items`` once with ``backend``; compute signals, verdicts (map windows) and metrics."""
    if "ref" in config.signals and reference is None:
        raise MiaError("the ref signal needs a reference model (--reference MODEL)")
    if not items:
        raise MiaError("nothing to score: every string was empty")
    items, recall_prefix_text, recall_prefix_ids = _draw_recall_prefix(items, config)
    labels = [it.label for it in items]
    problem = label_problem(labels)
    if problem is not None and config.require_labels:
        raise MiaError(problem)
    sampling = config.sampling if is_map else None
    scored = _score_items(backend, items, config, sampling)
    signals, passes, same_tokenizer = _signals(backend, items, scored, config, recall_prefix_text, reference,
                                               reference_max_tokens)
    columns = _columns(items, scored, is_map)
    metrics: list[SignalMetrics] = []
    warnings: list[str] = []
    blind_info: dict[str, Any] | None = None
    if problem is None:
        metrics = [m for name in sig.expand_signals(config.signals, config.k)
                   if (m := evaluate_signal(name, labels, signals[name], config.n_boot, config.seed)) is not None]
        blind_info, warnings = _blind(items, labels, metrics, signals, config)
        warnings += [below_chance_warning(m) for m in metrics if below_chance(m)]
    counts = _counts(items, labels, columns, scored, len(recall_prefix_ids), is_map)
    attrs = _attrs(backend, reference, config, scored, same_tokenizer, passes)
    attrs.update({"metrics": [m.to_dict() for m in metrics], "label_message": problem, "counts": counts,
                  "blind": blind_info, "warnings": warnings})
    if sampling is not None:
        attrs["probabilistic"] = _probabilistic(scored, items, labels, sampling, columns)
    if "recall" in config.signals:
        attrs.update(recall_prefix=recall_prefix_text, recall_prefix_ids=recall_prefix_ids)
    if "ne" in config.signals:
        from mia_core.attack.neighbours import DEFAULT_FRACTION

        attrs.update(neighbours=config.neighbours, neighbour_word_fraction=DEFAULT_FRACTION)
    return AttackOutcome(None, signals, metrics, problem, counts, columns, attrs, warnings)


def _draw_recall_prefix(items: Sequence[Item], config: AttackConfig) -> tuple[Sequence[Item], str | None, list[str]]:
    """ReCaLL without a given prefix: non-member strings drawn (seeded) as the prefix, left out of the items."""
    if "recall" not in config.signals or config.recall_prefix is not None:
        return items, config.recall_prefix, []
    from mia_core.attack.recall import SEPARATOR, choose_prefix_items

    chosen = choose_prefix_items(items, config.recall_shots, config.seed)
    ids = [items[i].sample_id for i in chosen]
    text = SEPARATOR.join(items[i].text for i in chosen)
    note(f"ReCaLL prefix: {len(chosen)} non-member string(s) drawn with seed {config.seed} "
        f"({', '.join(ids)}), left out of the evaluation", config.quiet)
    return [it for i, it in enumerate(items) if i not in set(chosen)], text, ids


def _score_items(backend: Backend, items: Sequence[Item], config: AttackConfig, sampling: Any) -> _Scored:
    """The one teacher-forced pass of the target over every item (under ``sampling`` too when given)."""
    if sampling is not None:
        from mia_core.types import scores_sampling

        if not scores_sampling(backend):
            raise MiaError(f"model {getattr(backend, 'name', '?')!r} cannot score under a sampling scheme, so "
                           "probabilistic extraction (--sampling) is unavailable with it")
    started = time.perf_counter()
    raw = score_sequences(backend, [it.tokens for it in items], config.batch_size, config.quiet,
                          distribution="minkpp" in config.signals, sampling=sampling)
    elapsed = time.perf_counter() - started
    return _Scored(raw, [sig.scored_positions(s) for s in raw], elapsed)


def _signals(backend: Backend, items: Sequence[Item], scored: _Scored, config: AttackConfig,
             recall_prefix_text: str | None, reference: Backend | None, reference_max_tokens: int | None,
             ) -> tuple[dict[str, np.ndarray], dict[str, float], bool | None]:
    """Every signal per item, the forward passes per string by family, and whether the reference
    shares the target's tokenizer (None without a reference)."""
    target_names = [s for s in config.signals if s != "ref"]
    per_item = [sig.target_signals(s, it.text, target_names, config.k)
                for s, it in zip(scored.scores, items, strict=True)]
    signals = {name: np.array([row[name] for row in per_item], dtype=np.float64)
               for name in sig.expand_signals(config.signals, config.k) if name not in sig.EXTRA_PASS_SIGNALS}
    passes = {"target": 1.0}  # forward passes per string, by signal family (the cost)
    if "recall" in config.signals:
        signals["recall"], passes["recall"] = _recall(backend, items, scored.scores, recall_prefix_text, config)
    if "ne" in config.signals:
        signals["ne"], passes["ne"] = _neighbourhood(backend, items, scored.scores, config)
    same_tokenizer = None
    if "ref" in config.signals:
        same_tokenizer = reference.tokenizer.fingerprint == backend.tokenizer.fingerprint
        if not same_tokenizer:
            note("the reference model uses another tokenizer: it scores the same text retokenized, "
                "and ref compares NLL per UTF-8 byte", config.quiet)
        signals["ref"] = _reference_signal(reference, backend, items, scored.raw, same_tokenizer, config,
                                           reference_max_tokens)
        passes["ref"] = 1.0
    return signals, passes, same_tokenizer


def _columns(items: Sequence[Item], scored: _Scored, is_map: bool) -> dict[str, Any]:
    """The per-string columns of the results file; map windows add the teacher-forced verdicts."""
    columns: dict[str, Any] = {
        "sample_id": [it.sample_id for it in items],
        "label": [it.label for it in items],
        "text": [it.text for it in items],
        "n_tokens": np.array([len(it.tokens) for it in items], dtype=np.int32),
        "n_scored": np.array([len(s.logprob) for s in scored.scores], dtype=np.int32),
        "truncated": np.array([it.truncated for it in items], dtype=bool),
        "nll": np.array([sig.mean_nll(s.logprob) for s in scored.scores], dtype=np.float64),
    }
    if is_map:
        matched, accuracy = memorization_verdicts(scored.raw, items)
        suffix_lengths = np.array([it.suffix_length for it in items], dtype=np.int32)
        columns.update({
            "row": np.array([it.row for it in items], dtype=np.int64),
            "suffix_length": suffix_lengths,
            "matched_length": matched,
            "extracted": (matched == suffix_lengths) & (suffix_lengths > 0),
            "next_token_accuracy": accuracy,
        })
    return columns


def _counts(items: Sequence[Item], labels: list[str], columns: dict[str, Any], scored: _Scored,
            recall_prefix_strings: int, is_map: bool) -> dict[str, Any]:
    counts: dict[str, Any] = {"strings": len(items), "tokens_scored": scored.n_scored,
                              "truncated": int(columns["truncated"].sum())}
    if recall_prefix_strings:
        counts["recall_prefix_strings"] = recall_prefix_strings
    counts["by_label"] = _label_counts(labels, columns if is_map else None)
    if is_map:
        counts["extracted"] = int(columns["extracted"].sum())
    return counts


def _probabilistic(scored: _Scored, items: Sequence[Item], labels: list[str], sampling: Any,
                   columns: dict[str, Any]) -> dict[str, Any]:
    """p of each whole suffix under ``sampling`` (stored as the ``extraction_p`` column) and its summary."""
    from mia_core.matching.probabilistic import describe_scheme, suffix_probability, summarize

    p = np.array([suffix_probability(s.sampled_logprob[len(s.sampled_logprob) - it.suffix_length:])
                  if it.suffix_length else np.nan for s, it in zip(scored.raw, items, strict=True)])
    columns["extraction_p"] = p
    return summarize(p, labels, scheme=describe_scheme(sampling.temperature, sampling.top_k,
                                                       sampling.top_p) + ", whole suffix")


def _attrs(backend: Backend, reference: Backend | None, config: AttackConfig, scored: _Scored,
           same_tokenizer: bool | None, passes: dict[str, float]) -> dict[str, Any]:
    """What made the results: models, options, timing (the outcome's metrics and counts are added after)."""
    return {
        "mia_version": __version__, "model": getattr(backend, "name", ""), "backend": _describe(backend),
        "tokenizer": getattr(backend.tokenizer, "name", ""), "tokenizer_fingerprint": backend.tokenizer.fingerprint,
        "reference": getattr(reference, "name", None) if reference is not None else None,
        "reference_same_tokenizer": same_tokenizer, "signals": sig.expand_signals(config.signals, config.k),
        "k": config.k if isinstance(config.k, (int, float)) else list(config.k),
        "sign_convention": "higher score = more likely member", "batch_size": config.batch_size,
        "n_boot": config.n_boot, "seed": config.seed, "elapsed_s": scored.elapsed,
        "tokens_per_s": scored.n_scored / scored.elapsed if scored.elapsed > 0 else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "forward_passes_per_string": passes,
    }


def _label_counts(labels: Sequence[str], columns: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Strings per label (unlabelled apart); for a map also the windows extracted per label."""
    out: dict[str, dict[str, int]] = {}
    for i, label in enumerate(labels):
        c = out.setdefault(label or "unlabelled", {"strings": 0} if columns is None else {"strings": 0, "extracted": 0})
        c["strings"] += 1
        if columns is not None:
            c["extracted"] += int(columns["extracted"][i])
    return dict(sorted(out.items()))


def _recall(backend: Backend, items: Sequence[Item], scores: Sequence[TokenScores], prefix_text: str,
            config: AttackConfig) -> tuple[np.ndarray, float]:
    """ReCaLL for every item (mia_core.attack.recall): one more pass per string, over prefix + string."""
    from mia_core.attack.recall import prefix_tokens, recall_signal

    prefix = prefix_tokens(backend, [prefix_text])
    if config.max_context is not None and len(prefix) >= config.max_context:
        raise MiaError(f"the ReCaLL prefix has {len(prefix)} tokens, more than the {config.max_context} the model "
                       "scores at once: give a shorter one (--recall-prefix) or fewer --recall-shots")

    def score(seqs: list[list[int]]) -> list[TokenScores]:  # the prefix's positions are scored but not read
        return score_sequences(backend, seqs, config.batch_size, config.quiet, desc="ReCaLL", distribution=False)

    values, cut = recall_signal([it.tokens for it in items], scores, prefix, score, config.max_context)
    if cut:
        note(f"{cut} string(s) do not fit after the {len(prefix)}-token ReCaLL prefix in the model's context: "
            "their recall signal is left out", config.quiet)
    return values, 1.0


def _neighbourhood(backend: Backend, items: Sequence[Item], scores: Sequence[TokenScores],
                   config: AttackConfig) -> tuple[np.ndarray, float]:
    """The neighbourhood signal (mia_core.attack.neighbours): ``config.neighbours`` passes per string."""
    from mia_core.attack.neighbours import neighbour_signal, neighbours, word_pool

    pool = word_pool([it.text for it in items])
    texts = [neighbours(it.text, pool, config.neighbours, config.seed, i) for i, it in enumerate(items)]
    flat = [t for group in texts for t in group]
    encoded = backend.tokenizer.encode_batch(flat) if flat else []
    if config.max_context is not None:
        encoded = [ids[:config.max_context] for ids in encoded]
    keep = [i for i, ids in enumerate(encoded) if ids]
    scored = score_sequences(backend, [encoded[i] for i in keep], config.batch_size, config.quiet,
                             desc="neighbours", distribution=False)
    nll = np.full(len(flat), np.nan)
    for i, sc in zip(keep, scored, strict=True):
        nll[i] = sig.mean_nll(sig.scored_positions(sc).logprob)
    out, at = np.full(len(items), np.nan), 0
    for i, group in enumerate(texts):
        out[i] = neighbour_signal(sig.mean_nll(scores[i].logprob), nll[at:at + len(group)])
        at += len(group)
    return out, float(len(flat) / max(len(items), 1))


def _blind(items: Sequence[Item], labels: list[str], metrics: list[SignalMetrics], signals: dict[str, np.ndarray],
           config: AttackConfig) -> tuple[dict[str, Any], list[str]]:
    """The blind baseline's row (added to ``metrics`` and ``signals``) and the warnings it raises."""
    from mia_core.attack.blind import BLIND, blind_scores, blind_warning, permutation_test

    texts = [it.text for it in items]
    result = blind_scores(texts, labels, config.seed) if config.blind else None
    warnings = result.duplicates.warnings() if result is not None else []
    info: dict[str, Any] = {"computed": False, "reason": "--no-blind"}
    if result is None:
        return info, warnings
    info = {"computed": result.skipped is None, "reason": result.skipped, "folds": result.folds,
            "features": result.features, "duplicates": vars(result.duplicates)}
    if result.skipped is not None:
        return info, warnings
    best = max(metrics, key=lambda m: m.auc, default=None)
    m = evaluate_signal(BLIND, labels, result.scores, config.n_boot, config.seed)
    if m is None:
        return info, warnings
    metrics.append(m)
    signals[BLIND] = result.scores
    info["auc"] = m.auc
    test = permutation_test(texts, labels, config.seed, config.blind_permutations)
    info["separable"] = bool(test and test.separable)
    if test is None:
        return info, warnings
    info["permutation_test"] = test.to_dict()
    comparison = _compare(best, signals, result.scores, labels, config) if best is not None else None
    if comparison is not None:
        info["best_minus_blind"] = vars(comparison)
    intervals = [x for x in metrics if x.signal != BLIND and np.isfinite(x.auc_low)]
    separate = any(x.auc_low > 0.5 or x.auc_high < 0.5 for x in intervals) if intervals else None
    warning = blind_warning(test, comparison, separate)
    if warning:
        warnings.insert(0, warning)
    return info, warnings


def _compare(best: SignalMetrics, signals: dict[str, np.ndarray], blind: np.ndarray, labels: list[str],
             config: AttackConfig) -> Any:
    """The best signal's AUC minus the blind baseline's on the strings both scored (paired bootstrap)."""
    from mia_core.attack.blind import Comparison
    from mia_core.attack.metrics import bootstrap_auc_difference, label_mask, labels_to_bool

    a = np.asarray(signals[best.signal], dtype=np.float64)
    keep = label_mask(labels) & np.isfinite(a) & np.isfinite(blind)
    y = labels_to_bool(labels)[keep]
    if config.n_boot <= 0 or y.all() or not y.any():
        return None
    diff, low, high = bootstrap_auc_difference(y, a[keep], blind[keep], config.n_boot, 0.95, config.seed)
    return Comparison(best.signal, diff, low, high, 0.95)
