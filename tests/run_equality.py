"""What "the same result" means between two computations of mia's outputs (docs/prompt.md,
"Which equalities are exact").

Exact by construction (compared bitwise): token ids and verdicts computed by the same
operations, rows a resume replays (same batch composition), rows `mia merge` copies from shards.

Within a tolerance: float32 log-probabilities and signals computed in another batch shape, with
another thread count, in another process or on another host. The matrix kernels then sum in
another order, so results move by a few units in the last place: bench/determinism_check.py
measured at most 5.7e-6 on the tiny models' log-probs, means and standard deviations (AMD EPYC
with AVX512-BF16, batch 2 vs 5, 1 vs 2 threads, 3 shards vs whole). ``LOGPROB_ATOL`` is ~20×
that; ``REAL_LOGPROB_ATOL`` covers the real models' deeper stacks and 262k-token softmax
(measured there: see docs/prompt.md).

Greedy tokens from another batch shape are equal except at a near-tie: where two runs first
part, the two tokens' logits must be within ``NEAR_TIE_LOGIT_GAP`` (else the difference is a bug).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOGPROB_ATOL = 1e-4  # tiny models, float32: ~20x the largest difference measured
REAL_LOGPROB_ATOL = 2e-3  # gemma-3-270m / smollm2-135m, float32
NEAR_TIE_LOGIT_GAP = 1e-3  # logits of the two tokens where greedy runs part


def run_columns(path: str | Path) -> dict[str, Any]:
    """Every column of a run file."""
    from mia_core.formats.runs import open_run

    run = open_run(path)
    return {name: run.read(name) for name in run.columns}


def assert_same_bytes(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bitwise equality of every column (NaN equal to NaN): for rows copied or replayed."""
    assert a.keys() == b.keys()
    for name in a:
        left, right = np.asarray(a[name]), np.asarray(b[name])
        assert np.array_equal(left, right, equal_nan=left.dtype.kind == "f"), name


def assert_same_rows(a: dict[str, Any], b: dict[str, Any], atol: float = LOGPROB_ATOL) -> None:
    """Token ids, texts and verdicts exactly; float columns within ``atol`` (NaN where NaN)."""
    assert a.keys() == b.keys()
    for name in a:
        left, right = np.asarray(a[name]), np.asarray(b[name])
        if left.dtype.kind == "f":
            np.testing.assert_allclose(left, right, rtol=0, atol=atol, equal_nan=True, err_msg=name)
        else:
            assert np.array_equal(left, right), name


def greedy_mismatches(backend: Any, prompts: Sequence[Sequence[int]], a: Sequence[Sequence[int]],
                      b: Sequence[Sequence[int]], gap: float = NEAR_TIE_LOGIT_GAP) -> list[str]:
    """Rows where two greedy continuations of the same prompts part at a token that is not a
    near-tie: the first differing position's two tokens differ in logit by more than ``gap``
    (scored by ``backend`` on the common prefix). Empty when the runs agree up to near-ties."""
    bad = []
    for row, (prompt, x, y) in enumerate(zip(prompts, a, b, strict=True)):
        x, y = list(x), list(y)
        if x == y:
            continue
        k = next((i for i, (s, t) in enumerate(zip(x, y, strict=False)) if s != t), min(len(x), len(y)))
        # Both ran to the same length limit, so the shorter one stopped at EOS (cut from the row).
        eos = getattr(backend, "eos_id", None) or backend.tokenizer.eos_id
        first, second = (x + [eos])[k], (y + [eos])[k]
        context = list(prompt) + x[:k]
        logits_gap = abs(_logprob_of(backend, context, first) - _logprob_of(backend, context, second))
        if logits_gap > gap:
            bad.append(f"row {row}: part at token {k} ({first} vs {second}), log-prob gap {logits_gap:.3g} > {gap}")
    return bad


def _logprob_of(backend: Any, context: list[int], token: int) -> float:
    """log p(token | context) from the backend's teacher-forced pass (differences of log-probs
    at one position equal differences of logits)."""
    score = backend.score([context + [token]], len(context), distribution=False)[0]
    return float(score.logprob[0])
