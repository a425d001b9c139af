"""``mia report``: one HTML file (plots embedded as base64) or a Markdown file with PNGs beside it.

Per run: the extraction tables with Wilson intervals (overall and per label), the matched-length
histogram split by label, the longest extractions as text with the agreement highlighted. Then the
attacks (AUC table, ROC plot, blind baseline), the Good-Turing extrapolation, the definitions of
every figure and the provenance of every file. A plot that would show one value is a table row
instead (docs/report.md)."""

from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mia_core import __version__
from mia_core.errors import MiaError
from mia_core.formats.integrity import DamagedFile
from mia_core.formats.scores import scores_path
from mia_core.formatting import format_number, format_rate, per_position_name
from mia_core.scoring.report_parts import (
    DEFINITIONS,
    Section,
    attack_sections,
    longest_extractions,
    matched_lengths_by_label,
    provenance_rows,
)
from mia_core.scoring.summary import eligible_by_label, score_run
from mia_core.scoring.tables import EstimateSource, table_from_runs


def _tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of one run's summary. A teacher-forced run's per-position figure is
    named next-token accuracy (teacher-forced), never a generated run's position agreement."""
    key, pp_name = per_position_name(s["method"])
    ml = s["matched_length"]
    out = [("Summary", ["measure", "value"], [
        ["model / method", f"{s['model']} / {s['method']}"],
        ["prefix map", str(s["prefix_map"])],
        ["prefix / suffix tokens, location", f"{s['prefix_tokens']} / {s['suffix_tokens']}, {s['prefix_loc']}"],
        ["rows / failed / suffix shorter than k / eligible",
         f"{s['rows']} / {s['failed']} / {s['skipped_short_suffix']} / {s['eligible']} (figures below: eligible rows)"],
        ["eligible rows by label", eligible_by_label(s)],
        [f"exact extraction of the first {s['k']} tokens", format_rate(s["extraction"])],
        [f"approximate ({s['approximate']['criterion']})", format_rate(s["approximate"])],
        [f"{pp_name}, mean", format_number(s.get(key), ".3f")],
        ["matched length mean / median / max", f"{format_number(ml['mean'])} / {format_number(ml['median'], '.0f')} / "
         f"{format_number(ml['max'], 'd')}"],
    ])]
    for title, group_key in (("By label", "by_label"), ("By prefix location", "by_prefix_loc"),
                             ("By prefix start (token offset)", "by_prefix_start")):
        out.append((f"{title} (figures over each group's eligible rows)",
                    ["group", "rows", "failed", "eligible", "exact extraction", "approximate",
                     "mean matched length", pp_name],
                    [[name, str(g["rows"]), str(g["failed"]), str(g["eligible"]), format_rate(g["extraction"]),
                      format_rate(g["approximate"]), format_number(g["mean_matched_length"]),
                      format_number(g.get(key), ".3f")]
                     for name, g in s[group_key].items()]))
    c = s.get("corpus")
    if c:
        rows = [["index", f"{c['index']} ({c['index_tokens']} tokens)"],
                [f"generations with a verbatim ≥{c['window']}-token corpus window", format_rate(c["memorized"])],
                ["longest match mean / median / max", f"{format_number(c['longest_match']['mean'], '.1f')} / "
                 f"{format_number(c['longest_match']['median'], '.0f')} / "
                 f"{format_number(c['longest_match']['max'], 'd')}"],
                ["unique memorized windows (occurrences)", f"{c['unique_windows']} ({c['window_occurrences']})"]]
        rows += [[f"label {lab}", format_rate(r)] for lab, r in c["by_label"].items()]
        out.append(("Corpus membership", ["measure", "value"], rows))
    return out


def _estimate_table(runs: Sequence[str | os.PathLike]) -> tuple[EstimateSource | None, str | None]:
    """Counts pooled per item across runs, as `mia estimate` does (an item seen in two runs is one item);
    extracted samples when no corpus span was memorized. (None, reason) when mia estimate would refuse."""
    try:
        source = table_from_runs(runs, "auto")
        if not source.table and source.items.startswith("memorized corpus"):
            source = table_from_runs(runs, "samples")
    except DamagedFile:
        raise  # a damaged scores file is not a reason to withhold an estimate: the report is refused
    except MiaError as exc:
        return None, str(exc)
    return (source, None) if source.table else (None, None)


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, k: int | None = None,
                 index: str | os.PathLike | None = None, window: int = 50,
                 attacks: Sequence[str | os.PathLike] = (), examples: int = 5) -> Path:
    """Score the runs and write the report; returns its path. Scores are stored only for runs that
    have none yet: a scores file made with other options (``--k``, ``--bleu``) is never replaced."""
    from mia_core.divergence.scoring import refuse_divergence_run
    from mia_core.scoring import plots
    from mia_core.scoring.goodturing import estimate

    for r in runs:
        refuse_divergence_run(r, "mia report")
    out = Path(out)
    summaries = [score_run(r, k=k, index=index, window=window, save=not scores_path(r).is_file()) for r in runs]
    markdown = out.suffix.lower() == ".md"
    img_dir = out.with_name(out.stem + "_files") if markdown else Path(tempfile.mkdtemp(prefix="mia_report_"))
    img_dir.mkdir(parents=True, exist_ok=True)
    try:
        sections: list[Section] = []
        for i, (run, s) in enumerate(zip(runs, summaries, strict=True), 1):
            sec = Section(f"Run {i}: {s['model']} ({s['method']}) — {Path(run).name}", level=2)
            sec.tables = _tables(s)
            sec.notes = list(s.get("notes", []))
            by_label = matched_lengths_by_label(run, s["k"])
            distinct = {int(v) for values in by_label.values() for v in values}
            if len(distinct) > 1:
                p = img_dir / f"matched_length_{i}.png"
                plots.matched_length_by_label(by_label, s["k"], p, title=f"{s['model']} ({s['method']})")
                sec.images.append(("Matched length by label", p))
            elif distinct:
                n = sum(len(v) for v in by_label.values())
                sec.notes.append(f"matched-length histogram not drawn: all {n} eligible rows matched "
                                 f"{distinct.pop()} tokens (one value)")
            if examples:
                sec.examples, why_none = longest_extractions(run, s["k"], examples)
                sec.notes += [why_none] if why_none else []
            sections.append(sec)
        by_model: dict[str, set[int]] = {}
        for s in summaries:
            by_model.setdefault(f"{s['model']} ({s['method']})", set()).add(int(s["prefix_tokens"]))
        if any(len(v) > 1 for v in by_model.values()):
            p = img_dir / "rate_vs_prefix_length.png"
            plots.rate_vs_prefix_length(summaries, p)
            sec = Section("Extraction rate vs prefix length", level=2)
            sec.images.append(("Exact extraction rate vs prefix length (95% Wilson intervals)", p))
            sections.append(sec)
        sections += attack_sections(attacks, img_dir)
        est, refusal = _estimate_table(runs) if runs else (None, None)
        est_result = None
        if est is not None:
            est_result = estimate(est.table, units=est.units, unit=est.unit)
            est_result["assumptions"] = est.assumptions
        sec = Section("What has not been extracted yet (Good-Turing)", level=2)
        sec.tables = [("Estimates", ["measure", "value"], _estimate_rows(est, est_result, refusal))]
        if est is not None and sum(est.table.values()) > 1:
            p = img_dir / "extrapolation.png"
            plots.extrapolation_plot(est.table, p, title=est.items.split(" (")[0].capitalize(), units=est.units,
                                     unit=est.unit)
            sec.images.append(("Good-Turing / Chao extrapolation of distinct items", p))
        if runs:
            sections.append(sec)
        defs = Section("Definitions", level=2)
        defs.definitions = DEFINITIONS
        sections.append(defs)
        prov = Section("Provenance", level=2)
        prov.tables = [(str(Path(f).name), ["field", "value"], provenance_rows(f)) for f in [*runs, *attacks]]
        sections.append(prov)
        text = _render_markdown(sections, out) if markdown else _render_html(sections)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    finally:
        if not markdown:  # HTML embeds the images: their temporary folder goes, success or not
            shutil.rmtree(img_dir, ignore_errors=True)
    return out


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


def _header() -> tuple[str, str]:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return "mia memorization report", f"Generated {stamp} by mia {__version__}."


def _render_markdown(sections: list[Section], out: Path) -> str:
    title, sub = _header()
    lines = [f"# {title}", "", sub, ""]

    def cell(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    for sec in sections:
        lines += ["#" * sec.level + " " + sec.title, ""]
        for name, header, rows in sec.tables:
            lines += [f"{'#' * (sec.level + 1)} {name}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        lines += [f"- note: {n}" for n in sec.notes]
        if sec.notes:
            lines.append("")
        for name, p in sec.images:
            lines += [f"![{name}]({p.relative_to(out.parent).as_posix()})", ""]
        if sec.examples:
            lines += [f"{'#' * (sec.level + 1)} Longest extractions", "",
                      "Agreement with the true suffix is in **bold**; the rest of the true suffix follows in "
                      "*italics* after the generation's divergence.", ""]
            for ex in sec.examples:
                lines += [f"- row {ex['row']}, sample `{ex['sample_id']}` ({ex['label'] or 'no label'}), "
                          f"matched {ex['matched']} of {ex['k']} tokens",
                          f"  - prefix: `{cell(ex['prefix'])}`",
                          f"  - true suffix: **{cell(ex['agreement'])}***{cell(ex['suffix_rest'])}*"]
                if ex["generation_rest"] is not None:
                    lines.append(f"  - generation: **{cell(ex['agreement'])}**{cell(ex['generation_rest'])}")
            lines.append("")
        for term, text in sec.definitions:
            lines += [f"- **{term}**: {text}"]
        if sec.definitions:
            lines.append("")
    return "\n".join(lines)


def _render_html(sections: list[Section]) -> str:
    e = html.escape
    title, sub = _header()
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mia report</title><style>",
             "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;font-size:14px;vertical-align:top}th{background:#f0f0f0}img{max-width:100%}"
             "code{background:#f4f4f4}.ex{border:1px solid #ddd;border-radius:4px;padding:6px 10px;margin:8px 0;"
             "font-size:14px}.ex .t{font-family:monospace;white-space:pre-wrap}mark{background:#ffe08a}"
             ".rest{color:#777}dt{font-weight:bold;margin-top:6px}",
             "</style></head><body>", f"<h1>{e(title)}</h1>", f"<p>{e(sub)}</p>"]
    for sec in sections:
        parts.append(f"<h{sec.level}>{e(sec.title)}</h{sec.level}>")
        for name, header, rows in sec.tables:
            parts.append(f"<h{sec.level + 1}>{e(name)}</h{sec.level + 1}><table><tr>"
                         + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts += [f"<p><em>note: {e(n)}</em></p>" for n in sec.notes]
        for name, p in sec.images:
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<h{sec.level + 1}>{e(name)}</h{sec.level + 1}>"
                         f"<img alt='{e(name)}' src='data:image/png;base64,{data}'>")
        if sec.examples:
            parts.append(f"<h{sec.level + 1}>Longest extractions</h{sec.level + 1}><p>Highlighted: the tokens "
                         "the model reproduced; grey: the rest of the true suffix, which it did not.</p>")
            for ex in sec.examples:
                gen = ("" if ex["generation_rest"] is None else
                       f"<div>generation: <span class='t'><mark>{e(ex['agreement'])}</mark>"
                       f"{e(ex['generation_rest'])}</span></div>")
                parts.append(f"<div class='ex'><div><b>row {ex['row']}</b>, sample <code>{e(ex['sample_id'])}"
                             f"</code> ({e(ex['label'] or 'no label')}), matched {ex['matched']} of {ex['k']} "
                             f"tokens</div><div>prefix: <span class='t'>{e(ex['prefix'])}</span></div>"
                             f"<div>true suffix: <span class='t'><mark>{e(ex['agreement'])}</mark>"
                             f"<span class='rest'>{e(ex['suffix_rest'])}</span></span></div>{gen}</div>")
        if sec.definitions:
            parts.append("<dl>" + "".join(f"<dt>{e(t)}</dt><dd>{e(d)}</dd>" for t, d in sec.definitions) + "</dl>")
    parts.append("</body></html>")
    return "\n".join(parts)
