"""The teacher-forced memorization check (definitions: docs/architecture.md).

Greedy decoding reproduces the first j tokens of a true suffix iff, with the true tokens
as context, the model's argmax at each of those positions is the true next token. One
forward pass over prefix + suffix therefore decides greedy extraction (Carlini et al.
2022): ``matched_length`` = number of leading suffix positions where argmax == truth,
``extracted`` = ``matched_length == k``. Runs of this method store the argmax tokens in
``tokens`` and the log-probabilities of the *true* tokens in ``logprobs``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from mia_core.runs import Run


def matched_length(argmax: Sequence[int], truth: Sequence[int]) -> int:
    """How many leading positions agree (the length greedy decoding would reproduce)."""
    a, t = np.asarray(argmax), np.asarray(truth)
    n = min(len(a), len(t))
    mismatch = np.nonzero(a[:n] != t[:n])[0]
    return int(mismatch[0]) if len(mismatch) else n


def teacher_forced_batch(backend: Any, prefixes: Sequence[np.ndarray], suffixes: Sequence[np.ndarray],
                         max_length: int) -> dict[str, list]:
    """Score prefix + (first ``max_length`` tokens of the) suffix for a batch of rows.

    Sequences of equal length go to ``backend.score`` together, so no padding is ever
    needed (a map's prefixes share one length; only suffixes cut by a document end differ).
    """
    n = len(prefixes)
    truths = [np.asarray(s[:max_length]) for s in suffixes]
    out: dict[str, list] = {"tokens": [None] * n, "lengths": [0] * n, "logprobs": [None] * n,
                            "matched_length": [0] * n}
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in range(n):
        if len(truths[i]):
            groups[(len(prefixes[i]), len(truths[i]))].append(i)
        else:
            out["tokens"][i], out["logprobs"][i] = [], []
    for (plen, _), members in groups.items():
        seqs = [np.concatenate([np.asarray(prefixes[i]), truths[i]]).tolist() for i in members]
        scores = backend.score(seqs, start=plen, distribution=False)  # no Min-K%++ moments needed
        for i, sc in zip(members, scores, strict=True):
            argmax = np.asarray(sc.argmax, dtype=np.int64)
            out["tokens"][i] = argmax
            out["lengths"][i] = len(truths[i])
            out["logprobs"][i] = np.asarray(sc.logprob, dtype=np.float32)
            out["matched_length"][i] = matched_length(argmax, truths[i])
    return out


def summarize(run: Run) -> dict[str, Any]:
    """Extraction counts of a teacher-forced or generation run, overall and per label.

    A row counts as extracted when its first ``k`` generated (or argmax) tokens equal the
    true suffix, where ``k`` = min(suffix length, max_length)."""
    k_max = int(run.attrs["max_length"])
    suffixes = run.suffixes()
    if run.has("matched_length"):
        matched = run.read("matched_length")
    else:
        matched = np.array([matched_length(t, s[:k_max]) for t, s in zip(run.tokens(), suffixes, strict=True)])
    ks = np.array([min(len(s), k_max) for s in suffixes])
    extracted = (matched == ks) & (ks > 0)
    labels = run.map_column("sample_label")
    summary: dict[str, Any] = {"rows": len(run), "extracted": int(extracted.sum()),
                               "mean_matched_length": float(matched.mean()) if len(matched) else 0.0,
                               "by_label": {}}
    for label in sorted(set(labels.tolist())):
        mask = labels == label
        summary["by_label"][label or "unlabelled"] = {"rows": int(mask.sum()), "extracted": int(extracted[mask].sum())}
    return summary


def format_summary(summary: dict[str, Any], max_length: int) -> str:
    lines = [f"{summary['extracted']} of {summary['rows']} suffixes reproduced exactly (first {max_length} tokens); "
             f"mean matched length {summary['mean_matched_length']:.2f}"]
    for label, s in summary["by_label"].items():
        lines.append(f"  {label}: {s['extracted']} of {s['rows']}")
    return "\n".join(lines)
