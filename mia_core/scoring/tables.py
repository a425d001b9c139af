"""Frequency-of-frequencies tables for ``mia estimate``: from files or scored runs; text output."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError


def table_from_file(path: str | os.PathLike) -> tuple[dict[int, int], str]:
    """Lines ``r n_r`` (two numbers) or ``count`` (one number per item); ``#`` starts a comment."""
    pairs: list[tuple[int, int]] = []
    singles: list[int] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MiaError(f"{path} cannot be read as UTF-8 text: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].replace(",", " ").replace(":", " ").split()
        if not fields:
            continue
        try:
            nums = [int(x) for x in fields]
        except ValueError:
            raise MiaError(f"{path}:{lineno}: expected 'r n_r' or one count, got {line.strip()!r}") from None
        if len(nums) == 2:
            pairs.append((nums[0], nums[1]))
        elif len(nums) == 1:
            singles.append(nums[0])
        else:
            raise MiaError(f"{path}:{lineno}: expected 'r n_r' or one count, got {line.strip()!r}")
        if any(n < 0 for n in nums):
            raise MiaError(f"{path}:{lineno}: counts must be non-negative")
    if pairs and singles:
        raise MiaError(f"{path} mixes 'r n_r' pairs and single counts")
    if pairs:
        table: Counter[int] = Counter()
        for r, n in pairs:
            table[r] += n
        return dict(table), "items"
    return dict(Counter(c for c in singles if c > 0)), "items"


def table_from_runs(runs: Sequence[str | os.PathLike], of: str = "auto") -> tuple[dict[int, int], str]:
    """Pooled counts from the scores files of runs: memorized corpus windows or extracted samples."""
    import numpy as np

    from mia_core.runs import open_run
    from mia_core.scoring.store import read_scores, scores_path

    windows: Counter[tuple[int, ...]] = Counter()
    samples: Counter[str] = Counter()
    have_corpus = True
    for run_path in runs:
        path = scores_path(run_path)
        if not path.is_file():
            raise MiaError(f"{run_path} has not been scored yet: run `mia score {run_path}` first")
        try:
            stored = read_scores(path)
        except (OSError, KeyError) as exc:
            raise MiaError(f"{path} is not a readable scores file ({exc}); run `mia score {run_path}` again") from None
        corpus = stored["corpus"]
        if corpus is None:
            have_corpus = False
        else:
            for w, c in zip(corpus["data"]["windows"], corpus["data"]["window_count"], strict=True):
                windows[tuple(int(t) for t in w)] += int(c)
        run = open_run(run_path)
        match = stored["match"]
        hit = np.asarray(match["exact"], bool) & np.asarray(match["eligible"], bool)
        ids = run.map_column("sample_id")[:len(hit)]
        samples.update(str(i) for i, h in zip(ids, hit, strict=True) if h)
    if of == "auto":
        of = "windows" if have_corpus else "samples"
    if of == "windows":
        if not have_corpus:
            raise MiaError("some runs were scored without --index: no memorized corpus windows to count")
        return dict(Counter(windows.values())), "memorized corpus windows"
    return dict(Counter(samples.values())), "extracted samples"


def format_estimate(result: dict[str, Any]) -> str:
    """Plain-text report of :func:`mia_core.scoring.goodturing.estimate`."""
    gt = result["good_turing"]
    lines = [f"{result['distinct']} distinct {result.get('items', 'items')} seen {result['observations']} times "
             f"(frequency of frequencies: {', '.join(f'{r}:{n}' for r, n in result['table'].items()) or 'empty'})",
             "",
             f"Simple Good-Turing ({gt['method']}, C = {gt['confidence']}):",
             f"  P0 = {gt['P0']:.6f}  probability that the next memorized item is one not seen yet (estimate)"]
    shown = list(gt["r_star_renormalized"].items())[:8]
    if shown:
        lines.append("  r* (renormalized): " + ", ".join(f"{r}→{v:.4f}" for r, v in shown)
                     + (" ..." if len(gt["r_star"]) > len(shown) else ""))
    lines += ["", "Extrapolation (estimate; " + result["extrapolation"]["label"].split(": ", 1)[1] + "):"]
    for pt in result["extrapolation"]["points"]:
        lines.append(f"  {pt['t']:g}× more generations: +{pt['new']:.1f} new, {pt['total']:.1f} distinct in all"
                     f"  [{pt['method']}]")
    c = result["chao1"]
    lines += ["", f"Chao1 lower bound on all distinct items: {c['total_lower_bound']:.1f} "
                  f"({c['observed']} seen + {c['unseen_lower_bound']:.1f} unseen; {c['formula']})",
              f"  {c['label']}"]
    return "\n".join(lines)
