"""``mia attack``: score strings with a model once, derive every membership signal and (for
prefix-map windows) the teacher-forced memorization verdict from that single pass, store
one row per string, and evaluate the signals against member/nonmember labels.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import __version__
from mia_core.attack import signals as sig
from mia_core.attack.items import Item
from mia_core.attack.metrics import SignalMetrics, label_problem
from mia_core.attack.reference import reference_signal
from mia_core.attack.scoring import describe_backend, memorization_verdicts, score_sequences
from mia_core.errors import MiaError
from mia_core.progress import note, progress
from mia_core.types import Backend, TokenScores


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
    late_signals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name: (rows, values)



# ---------------------------------------------------------------- the attack


@dataclass
class _Scored:
    """One scoring pass over the items: raw scores (aligned to the tokens), scored positions, timing."""

    raw: list[TokenScores]
    scores: list[TokenScores]
    elapsed: float

    @property
    def n_scored(self) -> int:
        return sum(len(s.logprob) for s in self.scores)


@dataclass
class _Shared:
    """What every block of one attack shares, fixed before the first block (the reference's BOS at the first)."""

    backend: Backend
    reference: Backend | None
    reference_max_tokens: int | None
    sampling: Any  # map windows with --sampling: p of each suffix under it
    quiet_bars: bool  # no bar per block and pass when the blocks have one bar of their own
    recall_prefix_text: str | None = None
    recall_prefix_ids: list[str] = field(default_factory=list)
    recall_prefix_tokens: list[int] = field(default_factory=list)
    pool: list[str] | None = None  # the neighbourhood's word pool
    same_tokenizer: bool | None = None  # the reference's tokenizer is the target's (None: no reference)
    reference_bos: bool | None = None
    position: int = 0  # of the block's first string among all strings scored (the neighbours' seed)
    skipped: dict[str, int] = field(default_factory=lambda: {"recall_too_long": 0, "ref_unusable": 0,
                                                              "ref_too_long": 0})


def attack(backend: Backend, items: Sequence[Item], config: AttackConfig, reference: Backend | None = None,
           reference_max_tokens: int | None = None, is_map: bool = False) -> AttackOutcome:
    """Score ``items`` (in memory) once with ``backend``; compute signals, verdicts (map windows) and metrics.
    The outcome holds every column and signal (:func:`attack_blocks` writes them as it goes instead)."""
    from mia_core.attack.items import ListSource

    if not items:
        raise MiaError("nothing to score: every string was empty")
    kept: dict[str, Any] = {}

    def keep(columns: dict[str, Any], signals: dict[str, np.ndarray]) -> None:
        kept["columns"], kept["signals"] = columns, dict(signals)

    outcome = attack_blocks(backend, ListSource(items), config, keep, lambda rows: [kept["columns"]["text"][i]
                                                                                  for i in rows],
                            reference, reference_max_tokens, is_map)
    outcome.columns = kept["columns"]
    outcome.signals = dict(kept["signals"])
    for name, (rows, values) in outcome.late_signals.items():
        outcome.signals[name] = np.full(len(outcome.columns["text"]), np.nan)
        outcome.signals[name][rows] = values
    return outcome


def attack_blocks(backend: Backend, source: Any, config: AttackConfig,
                  write: Callable[[dict[str, Any], dict[str, np.ndarray]], None],
                  texts: Callable[[np.ndarray], list[str]], reference: Backend | None = None,
                  reference_max_tokens: int | None = None, is_map: bool = False) -> AttackOutcome:
    """Score the strings of ``source`` (an ``items.ItemSource``) a block at a time: each block's columns and
    signals go to ``write`` as it is done, and only what the evaluation needs is kept (``evaluate.Tally``).
    ``texts(rows)`` reads back written strings by row (the blind baseline's). The outcome's ``signals`` holds only
    the signals computed after the last block (the blind baseline's), its ``columns`` nothing."""
    from mia_core.attack.evaluate import Tally

    if "ref" in config.signals and reference is None:
        raise MiaError("the ref signal needs a reference model (--reference MODEL)")
    if not len(source):
        raise MiaError("nothing to score: every string was empty")
    shared = _Shared(backend, reference, reference_max_tokens, config.sampling if is_map else None,
                     quiet_bars=config.quiet or source.many_blocks)
    skip = _draw_recall_prefix(source, config, shared)
    problem = label_problem(np.delete(source.codes, sorted(skip)))
    if problem is not None and config.require_labels:
        raise MiaError(problem)
    if "ne" in config.signals:
        from mia_core.attack.neighbours import word_pool

        shared.pool = word_pool([it.text for block in source.blocks(skip) for it in block])
    if "ref" in config.signals:
        shared.same_tokenizer = reference.tokenizer.fingerprint == backend.tokenizer.fingerprint
        if not shared.same_tokenizer:
            note("the reference model uses another tokenizer: it scores the same text retokenized, "
                 "and ref compares NLL per UTF-8 byte", config.quiet)
    tally = Tally(is_map)
    try:
        passes = _score_blocks(source, skip, config, shared, tally, write, is_map)
        return _outcome(tally, shared, config, problem, passes, texts)
    finally:
        tally.close()


def _score_blocks(source: Any, skip: frozenset[int], config: AttackConfig, shared: _Shared, tally: Any,
                  write: Callable[[dict[str, Any], dict[str, np.ndarray]], None], is_map: bool) -> dict[str, float]:
    """Every block scored, written and tallied in turn; returns the forward passes per string by signal family."""
    passes: dict[str, float] = {}  # summed over the strings
    with progress(total=len(source) - len(skip), desc="attack", unit="string",
                  quiet=config.quiet or not shared.quiet_bars) as bar:
        for items in source.blocks(skip):
            if not items:
                continue
            block = _score_block(items, config, shared, is_map)
            write(block.columns, block.signals)
            tally.add([it.label for it in items], block.columns["text"], block.signals, block.columns,
                      block.n_scored, block.elapsed, block.columns.get("extraction_p"))
            for family, per_string in block.passes.items():
                passes[family] = passes.get(family, 0.0) + per_string * len(items)
            shared.position += len(items)
            bar.update(len(items))
    source.finish()
    _note_skipped(shared, config)
    strings = max(len(source) - len(skip), 1)
    return {family: total / strings for family, total in passes.items()}


def _outcome(tally: Any, shared: _Shared, config: AttackConfig, problem: str | None, passes: dict[str, float],
             texts: Callable[[np.ndarray], list[str]]) -> AttackOutcome:
    """The evaluation of every string scored, and the results file's attributes."""
    from mia_core.attack.evaluate import evaluate

    metrics: list[SignalMetrics] = []
    warnings: list[str] = []
    blind_info: dict[str, Any] | None = None
    late: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if problem is None:
        result = evaluate(tally, texts, config)
        metrics, warnings, blind_info = result.metrics, result.warnings, result.blind
        if result.blind_scores is not None:
            from mia_core.attack.blind import BLIND

            late[BLIND] = result.blind_scores
    counts = tally.summary_counts(len(shared.recall_prefix_ids))
    attrs = _attrs(shared.backend, shared.reference, config, tally, shared.same_tokenizer, passes)
    attrs.update({"metrics": [m.to_dict() for m in metrics], "label_message": problem, "counts": counts,
                  "blind": blind_info, "warnings": warnings})
    if shared.sampling is not None:
        from mia_core.attack.evaluate import LABEL_NAMES
        from mia_core.matching.probabilistic import describe_scheme, summarize

        names = np.array([LABEL_NAMES.get(c, "") for c in (-1, 0, 1)], dtype=object)
        attrs["probabilistic"] = summarize(tally.probabilities(), names[tally.label_codes() + 1],
                                           scheme=describe_scheme(shared.sampling.temperature, shared.sampling.top_k,
                                                                  shared.sampling.top_p) + ", whole suffix")
    if "recall" in config.signals:
        attrs.update(recall_prefix=shared.recall_prefix_text, recall_prefix_ids=shared.recall_prefix_ids)
    if "ne" in config.signals:
        from mia_core.attack.neighbours import DEFAULT_FRACTION

        attrs.update(neighbours=config.neighbours, neighbour_word_fraction=DEFAULT_FRACTION)
    return AttackOutcome(None, {}, metrics, problem, counts, {}, attrs, warnings, late_signals=late)


def _note_skipped(shared: _Shared, config: AttackConfig) -> None:
    """What the blocks left out, said once for all of them."""
    skipped = shared.skipped
    if skipped["recall_too_long"]:
        note(f"{skipped['recall_too_long']} string(s) do not fit after the ReCaLL prefix in the model's context: "
             "their recall signal is left out", config.quiet)
    if skipped["ref_unusable"]:
        note(f"{skipped['ref_unusable']} string(s) have a first token that is not a clean text prefix: their ref "
             "signal is left out (the two models could not score the same bytes)", config.quiet)
    if skipped["ref_too_long"]:
        note(f"{skipped['ref_too_long']} string(s) are longer than the reference model's limit "
             f"({shared.reference_max_tokens} tokens): their ref signal is left out (per-byte NLLs of different spans "
             "are not comparable)", config.quiet)


def _draw_recall_prefix(source: Any, config: AttackConfig, shared: _Shared) -> frozenset[int]:
    """ReCaLL's prefix: the given one, or non-member strings drawn (seeded) and left out of the strings scored
    (their positions are returned)."""
    from mia_core.attack.recall import SEPARATOR, choose_prefix_items, prefix_tokens

    if "recall" not in config.signals:
        return frozenset()
    chosen: list[int] = []
    text = config.recall_prefix
    if text is None:
        chosen = choose_prefix_items(source.codes, config.recall_shots, config.seed)
        picked = source.take(chosen)
        shared.recall_prefix_ids = [it.sample_id for it in picked]
        text = SEPARATOR.join(it.text for it in picked)
        note(f"ReCaLL prefix: {len(chosen)} non-member string(s) drawn with seed {config.seed} "
             f"({', '.join(shared.recall_prefix_ids)}), left out of the evaluation", config.quiet)
    shared.recall_prefix_text = text
    prefix = shared.recall_prefix_tokens = prefix_tokens(shared.backend, [text])
    if config.max_context is not None and len(prefix) >= config.max_context:
        raise MiaError(f"the ReCaLL prefix has {len(prefix)} tokens, more than the {config.max_context} the model "
                       "scores at once: give a shorter one (--recall-prefix) or fewer --recall-shots")
    return frozenset(chosen)


@dataclass
class _Block:
    """One block's result columns, signals, positions scored, scoring time and passes per string by family."""

    columns: dict[str, Any]
    signals: dict[str, np.ndarray]
    n_scored: int
    elapsed: float
    passes: dict[str, float]


def _score_block(items: Sequence[Item], config: AttackConfig, shared: _Shared, is_map: bool) -> _Block:
    """Score one block of strings and derive its signals and columns; nothing of it is kept after."""
    scored = _score_items(shared.backend, items, config, shared.sampling, shared.quiet_bars)
    signals, passes = _signals(items, scored, config, shared)
    columns = _columns(items, scored, is_map)
    if shared.sampling is not None:
        from mia_core.matching.probabilistic import suffix_probability

        columns["extraction_p"] = np.array([
            suffix_probability(s.sampled_logprob[len(s.sampled_logprob) - it.suffix_length:])
            if it.suffix_length else np.nan for s, it in zip(scored.raw, items, strict=True)])
    return _Block(columns, signals, scored.n_scored, scored.elapsed, passes)


def _score_items(backend: Backend, items: Sequence[Item], config: AttackConfig, sampling: Any,
                 quiet_bars: bool) -> _Scored:
    """The one teacher-forced pass of the target over every item (under ``sampling`` too when given)."""
    if sampling is not None:
        from mia_core.types import scores_sampling

        if not scores_sampling(backend):
            raise MiaError(f"model {getattr(backend, 'name', '?')!r} cannot score under a sampling scheme, so "
                           "probabilistic extraction (--sampling) is unavailable with it")
    started = time.perf_counter()
    raw = score_sequences(backend, [it.tokens for it in items], config.batch_size, quiet_bars,
                          distribution="minkpp" in config.signals, sampling=sampling)
    elapsed = time.perf_counter() - started
    return _Scored(raw, [sig.scored_positions(s) for s in raw], elapsed)


def _signals(items: Sequence[Item], scored: _Scored, config: AttackConfig, shared: _Shared,
             ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every signal of one block's strings, and the forward passes per string by family."""
    target_names = [s for s in config.signals if s != "ref"]
    per_item = [sig.target_signals(s, it.text, target_names, config.k)
                for s, it in zip(scored.scores, items, strict=True)]
    signals = {name: np.array([row[name] for row in per_item], dtype=np.float64)
               for name in sig.expand_signals(config.signals, config.k) if name not in sig.EXTRA_PASS_SIGNALS}
    passes = {"target": 1.0}
    if "recall" in config.signals:
        signals["recall"], passes["recall"] = _recall(items, scored.scores, config, shared)
    if "ne" in config.signals:
        signals["ne"], passes["ne"] = _neighbourhood(items, scored.scores, config, shared)
    if "ref" in config.signals:
        signals["ref"] = reference_signal(shared.reference, shared.backend, items, scored.raw, shared, config,
                                           shared.reference_max_tokens)
        passes["ref"] = 1.0
    return signals, passes


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


def _attrs(backend: Backend, reference: Backend | None, config: AttackConfig, tally: Any,
           same_tokenizer: bool | None, passes: dict[str, float]) -> dict[str, Any]:
    """What made the results: models, options, timing (the outcome's metrics and counts are added after)."""
    scored = tally.counts.get("tokens_scored", 0)
    return {
        "mia_version": __version__, "model": getattr(backend, "name", ""), "backend": describe_backend(backend),
        "tokenizer": getattr(backend.tokenizer, "name", ""), "tokenizer_fingerprint": backend.tokenizer.fingerprint,
        "reference": getattr(reference, "name", None) if reference is not None else None,
        "reference_same_tokenizer": same_tokenizer, "signals": sig.expand_signals(config.signals, config.k),
        "k": config.k if isinstance(config.k, (int, float)) else list(config.k),
        "sign_convention": "higher score = more likely member", "batch_size": config.batch_size,
        "n_boot": config.n_boot, "seed": config.seed, "elapsed_s": tally.elapsed,
        "tokens_per_s": scored / tally.elapsed if tally.elapsed > 0 else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "forward_passes_per_string": passes,
    }


def _recall(items: Sequence[Item], scores: Sequence[TokenScores], config: AttackConfig,
            shared: _Shared) -> tuple[np.ndarray, float]:
    """ReCaLL for one block (mia_core.attack.recall): one more pass per string, over prefix + string."""
    from mia_core.attack.recall import recall_signal

    prefix = shared.recall_prefix_tokens

    def score(seqs: list[list[int]]) -> list[TokenScores]:  # the prefix's positions are scored but not read
        return score_sequences(shared.backend, seqs, config.batch_size, shared.quiet_bars, desc="ReCaLL",
                               distribution=False)

    values, cut = recall_signal([it.tokens for it in items], scores, prefix, score, config.max_context)
    shared.skipped["recall_too_long"] += cut
    return values, 1.0


def _neighbourhood(items: Sequence[Item], scores: Sequence[TokenScores], config: AttackConfig,
                   shared: _Shared) -> tuple[np.ndarray, float]:
    """The neighbourhood signal (mia_core.attack.neighbours) of one block: ``config.neighbours`` passes per string,
    each string's neighbours seeded by its position among all strings."""
    from mia_core.attack.neighbours import neighbour_signal, neighbours

    pool = shared.pool or []
    texts = [neighbours(it.text, pool, config.neighbours, config.seed, shared.position + i)
             for i, it in enumerate(items)]
    flat = [t for group in texts for t in group]
    encoded = shared.backend.tokenizer.encode_batch(flat) if flat else []
    if config.max_context is not None:
        encoded = [ids[:config.max_context] for ids in encoded]
    keep = [i for i, ids in enumerate(encoded) if ids]
    scored = score_sequences(shared.backend, [encoded[i] for i in keep], config.batch_size, shared.quiet_bars,
                             desc="neighbours", distribution=False)
    nll = np.full(len(flat), np.nan)
    for i, sc in zip(keep, scored, strict=True):
        nll[i] = sig.mean_nll(sig.scored_positions(sc).logprob)
    out, at = np.full(len(items), np.nan), 0
    for i, group in enumerate(texts):
        out[i] = neighbour_signal(sig.mean_nll(scores[i].logprob), nll[at:at + len(group)])
        at += len(group)
    return out, float(len(flat) / max(len(items), 1))
