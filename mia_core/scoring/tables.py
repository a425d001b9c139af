"""Frequency-of-frequencies tables for ``mia estimate``: from files or scored runs; text output."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.formats.runs import RunKind


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


@dataclass
class EstimateSource:
    """A frequency-of-frequencies table and what it counts: items found in r sampling units."""

    table: dict[int, int]
    items: str
    unit: str = "observation"  # prompt (greedy runs), generation (sampled runs), observation (a table file)
    units: int | None = None  # sampling units behind the table (None: unknown, N is used)
    assumptions: list[str] = field(default_factory=list)


def _is_greedy(run: Any) -> bool:
    return run.kind is RunKind.TEACHER_FORCED or float(run.attrs.get("temperature") or 0.0) == 0.0


def _greedy_refusal(runs: list[Any]) -> str | None:
    """Why more prompts of the same kind cannot be drawn, or None when they can."""
    models = {str(r.attrs.get("model")) for r in runs}
    if len(models) > 1:
        return (f"the greedy runs are of {len(models)} models ({', '.join(sorted(models))}): pooled, they are no "
                "sample of one process; estimate each model's runs separately")
    for run in runs:
        pmap = run.prefix_map
        loc = str(pmap.attrs.get("prefix_loc", "start"))
        size = pmap.attrs.get("size_requested", "all")
        balanced = bool(pmap.attrs.get("balance", False))
        if loc != "random" and str(size) == "all" and not balanced:
            return (f"{run.path.name} is greedy (deterministic): more generations repeat the same strings, and its "
                    f"prompts are the one '{loc}' prefix of every document of the dataset, so no further prompts of "
                    "the same kind exist to extrapolate to; make a map with --prefix_loc random or --size N "
                    "(a sample of a larger dataset) to estimate over prompts")
    return None


def table_from_runs(runs: Sequence[str | os.PathLike], of: str = "auto") -> EstimateSource:
    """Pooled incidence counts from the scores files of runs: memorized corpus spans or extracted samples,
    each counted once per sampling unit that found it.

    The sampling unit of a sampled run is the generation (row); of a greedy run, the prompt (map row):
    repeating a greedy prompt yields the same string, so it is counted once, and "t× more" means
    more prompts drawn the same way from the same dataset (refused when none can be drawn).

    Runs are read ``COUNT_ROWS`` rows at a time; memory holds the items found (not the rows) and, for greedy
    runs, three flags per map row (which prompts were seen)."""
    scored = _scored_runs(runs)
    is_greedy = _one_decoding([s.run for s in scored])
    of = _items_to_count(scored, of)
    if is_greedy:
        reason = _greedy_refusal([s.run for s in scored])
        if reason:
            raise MiaError(reason)
    tally = _Tally(is_greedy)
    for source in scored:
        tally.add_run(source, _row_items(source, of))
    what = ("memorized corpus spans (overlapping windows of one match merged)" if of == "windows"
            else "extracted samples")
    unit = "prompt" if is_greedy else "generation"
    return EstimateSource(dict(Counter(tally.found.values())), what, unit, tally.units, _assumptions(is_greedy))


#: Rows of a scored run read at a time by :func:`table_from_runs`.
COUNT_ROWS = 65_536


@dataclass
class _Scored:
    """A run and its scores file: rows scored, and the names of its corpus datasets (None: scored without --index)."""

    run: Any
    path: Path
    rows: int
    corpus: set[str] | None


class _Tally:
    """Sampling units and how many of them found each item, pooled over runs (a greedy prompt asked again, in
    another run or in wrapped rows, is one unit: the first run that asked it counts)."""

    def __init__(self, is_greedy: bool) -> None:
        self.is_greedy = is_greedy
        self.found: Counter[Any] = Counter()
        self.units = 0
        self.seen: dict[str, RowBits] = {}  # map folder -> a bit per map row: prompt counted already

    def add_run(self, source: _Scored, chunks: Any) -> None:
        """``chunks``: (rows, rows taking part, {row in the chunk: items it found}) of each slice of the run."""

        if not self.is_greedy:
            for _, taking_part, items in chunks:
                self.units += int(taking_part.sum())
                for found in items.values():
                    self.found.update(found)
            return
        pmap = source.run.prefix_map
        seen = self.seen.setdefault(str(pmap.folder.resolve()), RowBits(len(pmap)))
        asked = RowBits(len(pmap))
        per_prompt: dict[int, set[Any]] = {}
        for rows, taking_part, items in chunks:
            prefix_rows = source.run.read("prefix_row", rows)
            asked.set(prefix_rows[taking_part])
            for row, found in items.items():
                per_prompt.setdefault(int(prefix_rows[row]), set()).update(found)
        new = asked.without(seen)
        self.units += new.count()
        for prompt, found in per_prompt.items():
            if new.has(prompt):
                self.found.update(found)
        seen.add(asked)


class RowBits:
    """A set of map rows as one bit per row: 1.25 MB for a map of 10^7 rows (a flag array took 8 times that)."""

    def __init__(self, rows: int) -> None:
        import numpy as np

        self.bits = np.zeros((rows + 7) // 8, dtype=np.uint8)

    def set(self, rows: Any) -> None:
        import numpy as np

        rows = np.asarray(rows, dtype=np.int64)
        np.bitwise_or.at(self.bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))

    def has(self, row: int) -> bool:
        return bool(self.bits[row >> 3] >> (row & 7) & 1)

    def without(self, other: RowBits) -> RowBits:
        out = RowBits(0)
        out.bits = self.bits & ~other.bits
        return out

    def add(self, other: RowBits) -> None:
        self.bits |= other.bits

    def count(self) -> int:
        import numpy as np

        return int(np.bitwise_count(self.bits).sum(dtype=np.int64))


def _row_items(source: _Scored, of: str) -> Any:
    """(rows, rows taking part, {row in the slice: the items it found}) for each ``COUNT_ROWS`` slice of a run:
    a row takes part unless it failed (and, counting samples, when its true suffix was long enough)."""
    import numpy as np

    from mia_core.formats.scores import read_row_scores

    names = {"exact": ("match", "exact"), "eligible": ("match", "eligible")}
    if _has(source.path, "match", "failed"):
        names["failed"] = ("match", "failed")
    spans = _spans_by_row(source.path) if of == "windows" else {}
    for start in range(0, source.rows, COUNT_ROWS):
        rows = slice(start, min(start + COUNT_ROWS, source.rows))
        match = read_row_scores(source.path, names, rows)
        failed = np.asarray(match["failed"], bool) if "failed" in match else np.zeros(rows.stop - start, bool)
        if of == "windows":
            items = {row - start: spans.pop(row) for row in range(rows.start, rows.stop)
                     if row in spans and not failed[row - start]}
            yield rows, ~failed, items
            continue
        eligible = np.asarray(match["eligible"], bool) & ~failed
        hit = np.flatnonzero(np.asarray(match["exact"], bool) & eligible)
        ids = source.run.prefix_map.read("sample_id", source.run.read("prefix_row", rows)[hit]) if len(hit) else []
        yield rows, eligible, {int(row): {str(i)} for row, i in zip(hit, ids, strict=True)}


def _spans_by_row(path: Path) -> dict[int, set[tuple[int, ...]]]:
    """The memorized corpus spans each row matched (one entry per row with spans: memory grows with the spans)."""
    from mia_core.formats.integrity import open_hdf5
    from mia_core.formats.scores import RESCORE

    with open_hdf5(path, RESCORE) as f:
        data = f["corpus"]
        offsets, tokens, span_rows = data["span_offsets"][()], data["span_tokens"][()], data["span_row"][()]
    out: dict[int, set[tuple[int, ...]]] = {}
    for j, row in enumerate(span_rows):
        out.setdefault(int(row), set()).add(tuple(int(t) for t in tokens[offsets[j]:offsets[j + 1]]))
    return out


def _has(path: Path, group: str, name: str) -> bool:
    from mia_core.formats.integrity import open_hdf5
    from mia_core.formats.scores import RESCORE

    with open_hdf5(path, RESCORE) as f:
        return group in f and name in f[group]


def estimate_runs(runs: Sequence[str | os.PathLike], ts: Sequence[float] = (1, 2, 5, 10),
                  confidence: float = 1.96, of: str = "auto") -> tuple[EstimateSource, dict[str, Any]]:
    """What `mia estimate` computes for scored runs, in one place for the command, the report and a
    study: the pooled counts (``auto``: memorized corpus spans, or extracted samples when no span was
    memorized) and the estimates with their items and assumptions. A refusal is a ``MiaError``."""
    from mia_core.scoring.goodturing import estimate

    source = table_from_runs(runs, of)
    if of == "auto" and not source.table and source.items.startswith("memorized corpus"):
        source = table_from_runs(runs, "samples")
    result = estimate(source.table, ts, confidence, source.units, source.unit)
    result.update(items=source.items, assumptions=source.assumptions)
    return source, result


def estimate_or_reason(runs: Sequence[str | os.PathLike], ts: Sequence[float] = (1, 2, 5, 10),
                       confidence: float = 1.96) -> tuple[EstimateSource | None, dict[str, Any] | None, str | None]:
    """(source, estimates, None), or (None, None, why they are withheld): what the report and a study show.
    A damaged scores file is no reason to withhold: it is raised."""
    from mia_core.formats.integrity import DamagedFile

    try:
        source, result = estimate_runs(runs, ts, confidence)
    except DamagedFile:
        raise
    except MiaError as exc:
        return None, None, str(exc)
    if not source.table:
        return None, None, "no item was extracted: nothing to extrapolate from"
    return source, result, None


def _scored_runs(runs: Sequence[str | os.PathLike]) -> list[_Scored]:
    """Each run with its scores file, refused in one line when a run has no readable scores."""
    from mia_core.divergence.scoring import refuse_divergence_run
    from mia_core.formats.integrity import open_hdf5
    from mia_core.formats.runs import open_run
    from mia_core.formats.scores import RESCORE, scores_path

    out = []
    for run_path in runs:
        refuse_divergence_run(run_path, "mia estimate")
        path = scores_path(run_path)
        if not path.is_file():
            raise MiaError(f"{run_path} has not been scored yet: run `mia score {run_path}` first")
        try:
            with open_hdf5(path, RESCORE) as f:
                rows = f["match"]["exact"].shape[0]
                f["match"]["eligible"]  # noqa: B018 - must be there
                corpus = set(f["corpus"]) if "corpus" in f else None
        except (OSError, KeyError) as exc:
            raise MiaError(f"{path} is not a readable scores file ({exc}); run `mia score {run_path}` again") from None
        out.append(_Scored(open_run(run_path), path, rows, corpus))
    return out


def _one_decoding(opened: list[Any]) -> bool:
    """Whether the runs are greedy; runs mixing greedy and sampled decoding are refused."""
    greedy = {_is_greedy(r) for r in opened}
    if len(greedy) > 1:
        raise MiaError("the runs mix greedy and sampled decoding: their sampling units differ (prompts vs "
                       "generations); estimate them separately")
    return greedy.pop()


def _items_to_count(scored: list[_Scored], of: str) -> str:
    """``windows`` (memorized corpus spans) or ``samples`` (extracted samples); ``auto`` picks spans when
    every run was scored against a corpus index."""
    have_corpus = all(s.corpus is not None for s in scored)
    if of == "auto":
        of = "windows" if have_corpus else "samples"
    if of == "windows":
        if not have_corpus:
            raise MiaError("some runs were scored without --index: no memorized corpus spans to count")
        missing = [s.run.path.name for s in scored if "span_offsets" not in (s.corpus or ())]
        if missing:
            raise MiaError(f"{missing[0]} was scored with --index by an older mia (no memorized spans stored): "
                           "score it again with --index")
    return of


def _assumptions(is_greedy: bool) -> list[str]:
    if is_greedy:
        return ["greedy decoding is deterministic, so the sampling unit is the prompt: each distinct prompt "
                "is counted once, and t× more means t× more prompts drawn the same way from the same dataset",
                "the prompts are independent draws from the dataset's prefixes (a --size N map of the first "
                "N samples is taken as representative)"]
    return ["the sampling unit is the generation: t× more means t× more generations from the same prompts "
            "with the same sampling options", "generations are independent draws"]


def format_estimate(result: dict[str, Any]) -> str:
    """Plain-text report of :func:`mia_core.scoring.goodturing.estimate`."""
    gt = result["good_turing"]
    unit = result.get("unit", "observation")
    lines = [f"{result['distinct']} distinct {result.get('items', 'items')} found in {result['units']} {unit}s "
             f"({result['observations']} findings; frequency of frequencies: "
             f"{', '.join(f'{r}:{n}' for r, n in result['table'].items()) or 'empty'})",
             f"sampling unit: the {unit}"]
    lines += [f"assumption: {a}" for a in result.get("assumptions", [])]
    lines += ["",
              f"Simple Good-Turing ({gt['method']}, C = {gt['confidence']}):",
              f"  P0 = {gt['P0']:.6f}  probability that the next finding is an item not seen yet (estimate)"]
    shown = list(gt["r_star_renormalized"].items())[:8]
    if shown:
        lines.append("  r* (renormalized): " + ", ".join(f"{r}→{v:.4f}" for r, v in shown)
                     + (" ..." if len(gt["r_star"]) > len(shown) else ""))
    lines += ["", f"Extrapolation (estimate; Chao et al. 2014, never decreasing in t; {unit}s assumed independent):"]
    for pt in result["extrapolation"]["points"]:
        cross = f"  [Good–Toulmin: +{pt['good_toulmin']:.1f}]" if pt.get("good_toulmin") is not None else ""
        lines.append(f"  {pt['t']:g}× more {unit}s: +{pt['new']:.1f} new, {pt['total']:.1f} distinct in all{cross}")
    c = result["chao1"]
    lines += ["", f"Chao1 lower bound on all distinct items: {c['total_lower_bound']:.1f} "
                  f"({c['observed']} seen + {c['unseen_lower_bound']:.1f} unseen; {c['formula']})",
              f"  {c['label']}"]
    return "\n".join(lines)
