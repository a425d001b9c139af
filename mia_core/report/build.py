"""``mia report``: one HTML file (plots embedded as base64) or a Markdown file with PNGs beside it.

Per run: the extraction tables with Wilson intervals (overall and per label), the matched-length
histogram split by label, the longest extractions as text with the agreement highlighted. Then the
attacks (AUC table, ROC plot, blind baseline), the set-level tests, the Good-Turing extrapolation, the
definitions of every figure and the provenance of every file. A plot that would show one value is a
table row instead (docs/report.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.formats.scores import read_scores_head, scores_path
from mia_core.report.definitions import DEFINITIONS
from mia_core.report.render import render_html, render_markdown
from mia_core.report.sections import (
    Section,
    attack_sections,
    longest_extractions,
    matched_length_counts_by_label,
    provenance_rows,
    run_tables,
    setlevel_sections,
)
from mia_core.scoring import plots
from mia_core.scoring.summary import score_run
from mia_core.scoring.tables import EstimateSource, estimate_or_reason


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, k: int | None = None,
                 index: str | os.PathLike | None = None, window: int = 50,
                 attacks: Sequence[str | os.PathLike] = (), examples: int = 5,
                 setlevel: Sequence[str | os.PathLike] = (), estimates: EstimateOptions | None = None) -> Path:
    """Score the runs and write the report; returns its path. Scores are stored only for runs that
    have none yet: a scores file made with other options (``--k``, ``--bleu``) is never replaced.
    ``estimates`` says over which runs and how the Good-Turing section is computed (default: all runs,
    `mia estimate`'s defaults); its ``runs`` empty leaves the section out."""
    from mia_core.divergence.scoring import refuse_divergence_run

    for r in runs:
        refuse_divergence_run(r, "mia report")
    out = Path(out)
    summaries = [score_run(r, index=index, window=window, **_scoring_options(r, k)) for r in runs]
    markdown = out.suffix.lower() == ".md"
    img_dir = out.with_name(out.stem + "_files") if markdown else Path(tempfile.mkdtemp(prefix="mia_report_"))
    img_dir.mkdir(parents=True, exist_ok=True)
    try:
        sections = [_run_section(i, run, s, img_dir, examples) for i, (run, s) in
                    enumerate(zip(runs, summaries, strict=True), 1)]
        sections += _prefix_length_section(summaries, img_dir)
        sections += attack_sections(attacks, img_dir)
        sections += setlevel_sections(setlevel)
        est = estimates or EstimateOptions(tuple(runs))
        sections += _estimate_section(est.runs, img_dir, est.ts, est.confidence) if est.runs else []
        sections += [Section("Definitions", definitions=DEFINITIONS),
                     Section("Provenance", tables=[(str(Path(f).name), ["field", "value"], provenance_rows(f))
                                                   for f in [*runs, *attacks, *setlevel]])]
        text = render_markdown(sections, out) if markdown else render_html(sections)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    finally:
        if not markdown:  # HTML embeds the images: their temporary folder goes, success or not
            shutil.rmtree(img_dir, ignore_errors=True)
    return out


@dataclass(frozen=True)
class EstimateOptions:
    """The runs the Good-Turing section pools, and `mia estimate`'s --t and --confidence."""

    runs: tuple[str | os.PathLike, ...]
    ts: tuple[float, ...] = (1, 2, 5, 10)
    confidence: float = 1.96


def _scoring_options(run: str | os.PathLike, k: int | None) -> dict[str, Any]:
    """How to score a run for the report: as its scores file was made (``mia score``'s k, edit and BLEU
    thresholds), so the report shows the figures ``mia score`` printed; ``k`` given overrides the stored
    one. A run not scored yet is scored with the defaults and its scores stored."""
    path = scores_path(run)
    if not path.is_file():
        return {"k": k, "save": True}
    stored = read_scores_head(path)[0]
    bleu = stored.get("bleu_threshold")
    return {"k": k if k is not None else stored.get("k"), "edit_threshold": stored.get("edit_threshold", 0.1),
            "bleu": bleu is not None, "bleu_threshold": 0.75 if bleu is None else bleu, "save": False}


def _run_section(i: int, run: str | os.PathLike, s: dict[str, Any], img_dir: Path, examples: int) -> Section:
    """One run: its tables, the matched-length histogram by label (a note when it has one value) and
    its longest extractions."""
    sec = Section(f"Run {i}: {s['model']} ({s['method']}) — {Path(run).name}", tables=run_tables(s),
                  notes=list(s.get("notes", [])))
    by_label = matched_length_counts_by_label(run, s["k"])
    distinct = {int(v) for counts in by_label.values() for v in np.flatnonzero(counts)}
    if len(distinct) > 1:
        p = img_dir / f"matched_length_{i}.png"
        plots.matched_length_by_label(by_label, s["k"], p, title=f"{s['model']} ({s['method']})")
        sec.images.append(("Matched length by label", p))
    elif distinct:
        n = sum(int(counts.sum()) for counts in by_label.values())
        sec.notes.append(f"matched-length histogram not drawn: all {n} eligible rows matched "
                         f"{distinct.pop()} tokens (one value)")
    if examples:
        sec.examples, why_none = longest_extractions(run, s["k"], examples)
        sec.notes += [why_none] if why_none else []
    return sec


def _prefix_length_section(summaries: list[dict[str, Any]], img_dir: Path) -> list[Section]:
    """The extraction rate against prefix length, when one model was run with several prefix lengths."""
    by_model: dict[str, set[int]] = {}
    for s in summaries:
        by_model.setdefault(f"{s['model']} ({s['method']})", set()).add(int(s["prefix_tokens"]))
    if not any(len(v) > 1 for v in by_model.values()):
        return []
    p = img_dir / "rate_vs_prefix_length.png"
    plots.rate_vs_prefix_length(summaries, p)
    return [Section("Extraction rate vs prefix length",
                    images=[("Exact extraction rate vs prefix length (95% Wilson intervals)", p)])]


def _estimate_section(runs: Sequence[str | os.PathLike], img_dir: Path, ts: Sequence[float],
                      confidence: float) -> list[Section]:
    """The Good-Turing estimates of what has not been extracted yet (as `mia estimate` computes them over
    these runs, ``scoring.tables.estimate_or_reason``), or why they are withheld."""
    est, est_result, refusal = estimate_or_reason(runs, ts, confidence)
    sec = Section("What has not been extracted yet (Good-Turing)",
                  tables=[("Estimates", ["measure", "value"], _estimate_rows(est, est_result, refusal))])
    if est is not None and sum(est.table.values()) > 1:
        p = img_dir / "extrapolation.png"
        plots.extrapolation_plot(est.table, p, max_t=max(ts), title=est.items.split(" (")[0].capitalize(),
                                 units=est.units, unit=est.unit)
        sec.images.append(("Good-Turing / Chao extrapolation of distinct items", p))
    return [sec]


def _estimate_rows(est: EstimateSource | None, est_result: dict[str, Any] | None,
                   refusal: str | None) -> list[list[str]]:
    if not (est and est_result):
        return [["not estimated", refusal or "no item was extracted: nothing to extrapolate from"]]
    gt = est_result["good_turing"]
    rows = [["items", f"{est_result['distinct']} distinct {est.items}, found {est_result['observations']} "
                      f"times in {est_result['units']} {est.unit}s"],
            ["sampling unit", est.unit]]
    rows += [["assumption", a] for a in est.assumptions]
    rows.append(["P0 (next finding unseen; Simple Good-Turing, estimate)", f"{gt['P0']:.4f} ({gt['method']})"])
    rows += [[f"distinct after {pt['t']:g}× more {est.unit}s (Chao et al. 2014, estimate)",
              f"{pt['total']:.1f}"] for pt in est_result["extrapolation"]["points"]]
    rows.append(["Chao1 lower bound (estimate)", f"{est_result['chao1']['total_lower_bound']:.1f}"])
    rows += [["warning", w] for w in est_result["warnings"]]
    return rows


