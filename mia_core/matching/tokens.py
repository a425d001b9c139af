"""Suffix-match scores of generations against their true suffixes (docs/scoring.md).

All scores look at the first ``k`` tokens of the true suffix:

- ``exact``: the generation starts with those k tokens (greedy extraction, Carlini et al. 2022);
- ``matched_length``: number of leading generated tokens equal to the suffix (capped at k);
- ``agreement``: fraction of the k positions where the run's token == the true one. For a
  generated run it is the **position agreement (generated)**, Biderman et al. 2023's Pythia
  memorization score (memorized iff 1); for a teacher-forced run, whose tokens are argmaxes given
  the true context, it is the **next-token accuracy (teacher-forced)**, another quantity
  (``formatting.per_position_name`` names it by run kind);
- ``edit_distance``: token Levenshtein distance between the first k generated tokens and
  the k suffix tokens, divided by k; approximate iff ≤ threshold. This criterion is mia's
  own (a token-level variant), not Ippolito et al.'s;
- ``bleu`` (optional): Ippolito et al. 2022's criterion: sacrebleu sentence BLEU/100 of the
  *detokenized* texts (the first k tokens of each, decoded by the run's tokenizer); when
  asked for, approximate memorization means BLEU ≥ its threshold (0.75) instead.

Rows whose true suffix is shorter than k are not *eligible*: they get scores over the
suffix they have, but rates only count eligible rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.token_rows import leading_agreement, pad_rows

PAD_GEN = -2  # pads generations; differs from suffix padding so padding never "matches"
PAD_SUF = -3
#: Rows scored at once: the edit-distance programme holds a few (rows x k) int64 arrays, so blocks keep
#: memory flat however many rows a run has (the scores are the same: each row is scored on its own).
SCORE_ROWS = 8_192


@dataclass
class MatchScores:
    """Per-row scores (arrays of length M)."""

    k: np.ndarray  # tokens compared per row: min(k, suffix length)
    eligible: np.ndarray  # bool: suffix has at least k tokens
    exact: np.ndarray  # bool
    matched_length: np.ndarray  # int32
    agreement: np.ndarray  # float32: position agreement (generated) or next-token accuracy (teacher-forced)
    edit_distance: np.ndarray  # float32, normalised by k
    approximate: np.ndarray  # bool
    bleu: np.ndarray | None = None  # float32 in [0, 1]


def levenshtein_batch(a: np.ndarray, a_len: np.ndarray, b: np.ndarray, b_len: np.ndarray) -> np.ndarray:
    """Token edit distances between rows of ``a`` (first ``a_len``) and ``b`` (first ``b_len``).

    The dynamic programme runs over positions with all rows at once (numpy), so the cost is
    O(k²) vector operations instead of O(M k²) Python steps.
    """
    m, la = a.shape
    lb = b.shape[1]
    prev = np.tile(np.arange(lb + 1, dtype=np.int64), (m, 1))  # distance of a[:0] to b[:j]
    result = np.zeros(m, dtype=np.int64)
    rows = np.arange(m)
    done = a_len == 0
    result[done] = b_len[done]
    for i in range(1, la + 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        sub = prev[:, :-1] + (a[:, i - 1:i] != b)  # substitution (0 when equal)
        dele = prev[:, 1:] + 1
        best = np.minimum(sub, dele)
        for j in range(1, lb + 1):  # insertions depend on the left neighbour
            cur[:, j] = np.minimum(best[:, j - 1], cur[:, j - 1] + 1)
        hit = a_len == i
        result[hit] = cur[rows[hit], b_len[hit]]
        prev = cur
    return result


def bleu_batch(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Sentence BLEU of detokenized texts (sacrebleu's default 13a tokenization, effective order,
    as ``sacrebleu.sentence_bleu``) scaled to [0, 1]; 0 when either text is empty."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(effective_order=True)
    out = np.zeros(len(hypotheses), dtype=np.float32)
    for i, (hyp, ref) in enumerate(zip(hypotheses, references, strict=True)):
        out[i] = metric.sentence_score(hyp, [ref]).score / 100.0 if hyp.strip() and ref.strip() else 0.0
    return out


def score_matches(generated: Sequence[np.ndarray], suffixes: Sequence[np.ndarray], k: int,
                  edit_threshold: float = 0.1, bleu_threshold: float | None = None,
                  detokenize: Callable[[list[list[int]]], list[str]] | None = None) -> MatchScores:
    """Scores of each generation against the first ``k`` tokens of its true suffix.

    ``bleu_threshold`` needs ``detokenize`` (token id lists → texts: the run's tokenizer)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(generated) != len(suffixes):
        raise ValueError("one true suffix per generation is needed")
    if len(generated) <= SCORE_ROWS:
        return _score_block(generated, suffixes, k, edit_threshold, bleu_threshold, detokenize)
    return _joined([_score_block(generated[i:i + SCORE_ROWS], suffixes[i:i + SCORE_ROWS], k, edit_threshold,
                                 bleu_threshold, detokenize) for i in range(0, len(generated), SCORE_ROWS)])


def _joined(blocks: list[MatchScores]) -> MatchScores:
    return MatchScores(*(None if getattr(blocks[0], f.name) is None
                         else np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(MatchScores)))


def _row_blocks(rows: int) -> Iterator[slice]:
    return (slice(start, min(start + SCORE_ROWS, rows)) for start in range(0, rows, SCORE_ROWS))


def longest_suffix(run: Any) -> int:
    """The longest true suffix of a run's rows (``run.suffixes``), read ``SCORE_ROWS`` rows at a time."""
    return max((max((len(s) for s in run.suffixes(rows)), default=0) for rows in _row_blocks(len(run))), default=0)


def score_run_matches(run: Any, k: int, edit_threshold: float = 0.1, bleu_threshold: float | None = None,
                      detokenize: Callable[[list[list[int]]], list[str]] | None = None) -> MatchScores:
    """:func:`score_matches` of every row of a run (its tokens against its true suffixes), read from its files
    ``SCORE_ROWS`` rows at a time: memory holds one block's tokens and the per-row scores (about 20 bytes a row),
    never the run's tokens."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(run) == 0:
        return score_matches([], [], k, edit_threshold, bleu_threshold, detokenize)
    out: MatchScores | None = None
    for rows, block in iter_run_matches(run, k, edit_threshold, bleu_threshold, detokenize):
        # Each score's array for the whole run is allocated once and filled block by block: no concatenation
        # (which held the scores twice), no small per-block arrays left between the blocks' large temporaries.
        out = out or MatchScores(*(None if getattr(block, f.name) is None
                                   else np.empty(len(run), getattr(block, f.name).dtype) for f in fields(MatchScores)))
        for f in fields(MatchScores):
            if getattr(block, f.name) is not None:
                getattr(out, f.name)[rows] = getattr(block, f.name)
    assert out is not None
    return out


def iter_run_matches(run: Any, k: int, edit_threshold: float = 0.1, bleu_threshold: float | None = None,
                     detokenize: Callable[[list[list[int]]], list[str]] | None = None
                     ) -> Iterator[tuple[slice, MatchScores]]:
    """The scores of :func:`score_run_matches`, one block of at most ``SCORE_ROWS`` rows at a time (its rows, its
    scores): memory holds one block, whatever the run's size."""
    if k < 1:
        raise ValueError("k must be at least 1")
    for rows in _row_blocks(len(run)):
        tokens, lengths = run.read("tokens", rows), run.read("lengths", rows)
        yield rows, _score_block([tokens[i, :n] for i, n in enumerate(lengths)], run.suffixes(rows), k,
                                 edit_threshold, bleu_threshold, detokenize)


def _score_block(generated: Sequence[np.ndarray], suffixes: Sequence[np.ndarray], k: int, edit_threshold: float,
                 bleu_threshold: float | None, detokenize: Callable[[list[list[int]]], list[str]] | None
                 ) -> MatchScores:
    """:func:`score_matches` of at most ``SCORE_ROWS`` rows (each row's scores depend on that row only)."""
    suf, suf_len = pad_rows(suffixes, k, PAD_SUF, np.int64)
    gen, gen_len = pad_rows(generated, k, PAD_GEN, np.int64)
    kk = np.minimum(suf_len, k)
    eligible = suf_len >= k
    positions = np.arange(suf.shape[1])[None, :]
    in_suffix = positions < kk[:, None]
    equal = (gen == suf) & in_suffix
    matched = leading_agreement(gen, suf, kk).astype(np.int32)
    denom = np.maximum(kk, 1)
    mem = (equal.sum(axis=1) / denom).astype(np.float32)
    exact = (matched == kk) & (kk > 0)
    dist = levenshtein_batch(gen, gen_len, suf, kk)
    edit = (dist / denom).astype(np.float32)
    approx = (edit <= edit_threshold) & (kk > 0)
    bleu = None
    if bleu_threshold is not None:
        if detokenize is None:
            raise ValueError("BLEU compares detokenized text: give detokenize (the run's tokenizer)")
        hyps = detokenize([[int(t) for t in g[:k]] for g in generated])
        refs = detokenize([[int(t) for t in s[:k]] for s in suffixes])
        bleu = bleu_batch(hyps, refs)
        approx = (bleu >= bleu_threshold) & (kk > 0)  # BLEU replaces the edit-distance criterion
    return MatchScores(kk.astype(np.int32), eligible, exact, matched, mem, edit, approx, bleu)


def run_max_length(run: Any) -> int | None:
    """New tokens per row the run asked for (its ``--max_length``), if recorded."""
    value = run.attrs.get("max_length")
    return int(value) if value is not None and int(value) > 0 else None


def resolve_k(run: Any, max_suffix: int, k: int | None) -> int:
    """The suffix tokens compared. Default: min(the map's suffix length, the run's max_length), so
    a run that generated 20 tokens is scored on 20 (exact extraction of 50 would be impossible).
    An explicit ``k`` beyond what the run generated, or beyond ``max_suffix`` (the longest true suffix,
    :func:`longest_suffix`), is an error."""
    max_length = run_max_length(run)
    if k is None:
        k = int(run.prefix_map.suffix_tokens or max_suffix)
        if max_length is not None:
            k = min(k, max_length)
        k = min(k, max_suffix)
    k = int(k)
    if k < 1:
        raise MiaError("--k must be at least 1")
    if max_length is not None and k > max_length:
        raise MiaError(f"--k {k} is more than the {max_length} tokens per row that {run.path.name} generated "
                       f"(--max_length {max_length}): use --k {max_length} or less")
    if k > max_suffix:
        raise MiaError(f"--k {k} is longer than every true suffix of {run.path.name} (longest: {max_suffix})")
    return k


def memorized_spans(generations: list[np.ndarray], windows: dict[tuple[int, ...], int],
                    window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each generation's distinct memorized spans: maximal runs of overlapping memorized windows
    (positions i, i+1, ... whose ``window``-gram is in the corpus), so one 60-token match with
    window 50 is one span, not 11 windows. Returned as CSR: (row of each span, offsets, tokens)."""
    rows: list[int] = []
    offsets = [0]
    tokens: list[int] = []
    for row, gen in enumerate(generations):
        g = [int(t) for t in gen]
        hits = [i for i in range(len(g) - window + 1) if tuple(g[i:i + window]) in windows]
        spans: list[tuple[int, ...]] = []
        start = prev = None
        for i in hits + [None]:
            if start is not None and (i is None or i != prev + 1):
                span = tuple(g[start:prev + window])
                if span not in spans:
                    spans.append(span)
                start = None
            if i is not None and start is None:
                start = i
            prev = i
        for span in spans:
            rows.append(row)
            tokens.extend(span)
            offsets.append(len(tokens))
    return (np.array(rows, dtype=np.int64), np.array(offsets, dtype=np.int64), np.array(tokens, dtype=np.int64))


def span_counts(data: dict[str, np.ndarray]) -> dict[str, int] | None:
    """Distinct memorized spans and their occurrences (one per generation that holds it)."""
    if "span_offsets" not in data:
        return None  # scored by an older mia
    offsets, tokens = data["span_offsets"], data["span_tokens"]
    spans = Counter(tuple(tokens[offsets[j]:offsets[j + 1]].tolist()) for j in range(len(offsets) - 1))
    return {"distinct": len(spans), "occurrences": int(sum(spans.values()))}
