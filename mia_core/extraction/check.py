"""The teacher-forced memorization check (definitions: docs/architecture.md).

Greedy decoding reproduces the first j tokens of a true suffix iff, with the true tokens
as context, the model's argmax at each of those positions is the true next token. One
forward pass over prefix + suffix therefore decides greedy extraction (Carlini et al.
2022): ``matched_length`` = number of leading suffix positions where argmax == truth,
``extracted`` = ``matched_length == k``. Runs of this method store the argmax tokens in
``tokens`` and the log-probabilities of the *true* tokens in ``logprobs``; given a sampling
scheme, also those of the true tokens under it in ``sampled_logprobs`` (probabilistic
extraction, mia_core/matching/probabilistic.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from mia_core.formats.runs import Run
from mia_core.matching.probabilistic import ProbabilityTally
from mia_core.matching.tally import MatchTally
from mia_core.matching.tokens import iter_run_matches, longest_suffix, resolve_k
from mia_core.token_rows import matched_lengths


def teacher_forced_batch(backend: Any, prefixes: Sequence[np.ndarray], suffixes: Sequence[np.ndarray],
                         max_length: int, sampling: Any = None) -> dict[str, list]:
    """Score prefix + (first ``max_length`` tokens of the) suffix for a batch of rows.

    Sequences of equal length go to ``backend.score`` together, so no padding is ever
    needed (a map's prefixes share one length; only suffixes cut by a document end differ).
    A non-greedy ``sampling`` also gives ``sampled_logprobs``: log q(true token) under that scheme.
    """
    n = len(prefixes)
    truths = [np.asarray(s[:max_length]) for s in suffixes]
    out: dict[str, list] = {"tokens": [None] * n, "lengths": [0] * n, "logprobs": [None] * n,
                            "matched_length": [0] * n}
    sampled = sampling is not None and not sampling.greedy
    extra = {"sampling": sampling} if sampled else {}
    if sampled:
        out["sampled_logprobs"] = [np.zeros(0, dtype=np.float32)] * n
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in range(n):
        if len(truths[i]):
            groups[(len(prefixes[i]), len(truths[i]))].append(i)
        else:
            out["tokens"][i], out["logprobs"][i] = [], []
    for (plen, _), members in groups.items():
        seqs = [np.concatenate([np.asarray(prefixes[i]), truths[i]]).tolist() for i in members]
        scores = backend.score(seqs, start=plen, distribution=False, **extra)  # no Min-K%++ moments needed
        for i, sc in zip(members, scores, strict=True):
            argmax = np.asarray(sc.argmax, dtype=np.int64)
            out["tokens"][i] = argmax
            out["lengths"][i] = len(truths[i])
            out["logprobs"][i] = np.asarray(sc.logprob, dtype=np.float32)
            if sampled:
                out["sampled_logprobs"][i] = np.asarray(sc.sampled_logprob, dtype=np.float32)
    out["matched_length"] = matched_lengths(out["tokens"], truths).tolist()
    return out


def summarize(run: Run, k: int | None = None) -> dict[str, Any]:
    """Extraction counts of a teacher-forced or generation run, overall and per label.

    The same k and the same eligible rows as ``mia score`` (:func:`mia_core.matching.tokens.resolve_k`):
    k = min(the map's suffix length, the run's max_length); a row is eligible when its true suffix
    has at least k tokens and its request did not fail (``error`` column of API runs). The run is read and
    counted one block of rows at a time (:class:`~mia_core.matching.tally.MatchTally`): memory does not grow
    with its rows, but for the p of each eligible row that probabilistic extraction keeps (12 bytes a row)."""
    summary: dict[str, Any] = {"rows": len(run), "failed": run.count_failed(), "k": None, "eligible": 0,
                               "short_suffix": 0, "extracted": 0, "mean_matched_length": None, "by_label": {}}
    longest = longest_suffix(run) if len(run) else 0
    if not longest:
        return summary  # nothing to compare with (a map made with --suffix-tokens 0)
    k = resolve_k(run, longest, k)
    tally = MatchTally(k)
    probabilities = ProbabilityTally(run, k) if ProbabilityTally.applies(run) else None
    for rows, scores in iter_run_matches(run, k):
        failed, labels = run.failed_rows(rows), run.labels(rows)
        scores = replace(scores, eligible=scores.eligible & ~failed)
        tally.add(scores, failed, labels)
        if probabilities is not None:
            probabilities.add(rows, scores.eligible, labels)
    every = tally.every
    summary.update(k=k, eligible=every.eligible, short_suffix=tally.short_suffix, extracted=every.exact,
                   mean_matched_length=every.matched_length / every.eligible if every.eligible else None)
    for label in sorted(tally.by_label):
        group = tally.by_label[label]
        summary["by_label"][label or "unlabelled"] = {"eligible": group.eligible, "extracted": group.exact}
    summary["probabilistic"] = probabilities.summary() if probabilities is not None else None
    return summary


def format_summary(summary: dict[str, Any], max_length: int | None = None) -> str:
    """The closing lines of `mia prompt`/`mia check` (``max_length`` is unused: k is in the summary)."""
    if summary["k"] is None:
        return f"{summary['rows']} rows, failed {summary['failed']}; no true suffixes to compare with"
    mean = summary["mean_matched_length"]
    lines = [f"{summary['extracted']} of {summary['eligible']} eligible suffixes reproduced exactly "
             f"(first k = {summary['k']} tokens); failed {summary['failed']}; "
             f"suffix shorter than k {summary['short_suffix']}; mean matched length "
             f"{'n/a' if mean is None else f'{mean:.2f}'} over the eligible rows"]
    for label, s in summary["by_label"].items():
        lines.append(f"  {label}: {s['extracted']} of {s['eligible']}")
    if summary.get("probabilistic"):
        from mia_core.matching.probabilistic import format_summary as format_probabilistic

        lines.append(format_probabilistic(summary["probabilistic"]))
    return "\n".join(lines)
