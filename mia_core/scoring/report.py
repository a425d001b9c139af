"""``mia report``: one HTML file (plots embedded as base64) or a Markdown file with PNGs beside it."""

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
from mia_core.scoring.store import scores_path
from mia_core.scoring.summary import per_position_name, score_run
from mia_core.scoring.tables import EstimateSource, table_from_runs


def _fmt_rate(r: dict[str, Any]) -> str:
    if r.get("withheld"):
        return f"n/a ({r['withheld']})"
    if r["rate"] is None:
        return f"{r['count']}/{r['n']} (n/a: no eligible row)"
    lo, hi = r["wilson95"]
    return f"{r['count']}/{r['n']} ({100 * r['rate']:.1f}%, 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of one run's summary. A teacher-forced run's per-position figure is
    named teacher-forced token accuracy, never the Pythia score of a generated run."""
    key, pp_name = per_position_name(s["method"])
    ml = s["matched_length"]
    out = [("Summary", ["measure", "value"], [
        ["model / method", f"{s['model']} / {s['method']}"],
        ["prefix map", str(s["prefix_map"])],
        ["prefix / suffix tokens, location", f"{s['prefix_tokens']} / {s['suffix_tokens']}, {s['prefix_loc']}"],
        ["rows / failed / suffix shorter than k / eligible",
         f"{s['rows']} / {s['failed']} / {s['skipped_short_suffix']} / {s['eligible']} (figures below: eligible rows)"],
        [f"exact extraction of the first {s['k']} tokens", _fmt_rate(s["extraction"])],
        [f"approximate ({s['approximate']['criterion']})", _fmt_rate(s["approximate"])],
        [pp_name, _num(s.get(key), ".3f")],
        ["matched length mean / median / max", f"{_num(ml['mean'])} / {_num(ml['median'], '.0f')} / "
         f"{_num(ml['max'], 'd')}"],
    ])]
    for title, group_key in (("By label", "by_label"), ("By prefix location", "by_prefix_loc"),
                             ("By prefix start (token offset)", "by_prefix_start")):
        out.append((title, ["group", "rows", "failed", "eligible", "exact extraction", "approximate",
                            "mean matched length"],
                    [[name, str(g["rows"]), str(g["failed"]), str(g["eligible"]), _fmt_rate(g["extraction"]),
                      _fmt_rate(g["approximate"]), _num(g["mean_matched_length"])]
                     for name, g in s[group_key].items()]))
    c = s.get("corpus")
    if c:
        rows = [["index", f"{c['index']} ({c['index_tokens']} tokens)"],
                [f"generations with a verbatim ≥{c['window']}-token corpus window", _fmt_rate(c["memorized"])],
                ["longest match mean / median / max", f"{_num(c['longest_match']['mean'], '.1f')} / "
                 f"{_num(c['longest_match']['median'], '.0f')} / {_num(c['longest_match']['max'], 'd')}"],
                ["unique memorized windows (occurrences)", f"{c['unique_windows']} ({c['window_occurrences']})"]]
        rows += [[f"label {lab}", _fmt_rate(r)] for lab, r in c["by_label"].items()]
        out.append(("Corpus membership", ["measure", "value"], rows))
    return out


def _estimate_table(runs: Sequence[str | os.PathLike]) -> tuple[EstimateSource | None, str | None]:
    """Counts pooled per item across runs, as `mia estimate` does (an item seen in two runs is one item);
    extracted samples when no corpus span was memorized. (None, reason) when mia estimate would refuse."""
    try:
        source = table_from_runs(runs, "auto")
        if not source.table and source.items.startswith("memorized corpus"):
            source = table_from_runs(runs, "samples")
    except MiaError as exc:
        return None, str(exc)
    return (source, None) if source.table else (None, None)


def write_report(runs: Sequence[str | os.PathLike], out: str | os.PathLike, k: int | None = None,
                 index: str | os.PathLike | None = None, window: int = 50) -> Path:
    """Score the runs and write the report; returns its path. Scores are stored only for runs that
    have none yet: a scores file made with other options (``--k``, ``--bleu``) is never replaced."""
    from mia_core.scoring import plots
    from mia_core.scoring.goodturing import estimate

    out = Path(out)
    summaries = [score_run(r, k=k, index=index, window=window, save=not scores_path(r).is_file()) for r in runs]
    markdown = out.suffix.lower() == ".md"
    img_dir = out.with_name(out.stem + "_files") if markdown else Path(tempfile.mkdtemp(prefix="mia_report_"))
    img_dir.mkdir(parents=True, exist_ok=True)
    try:
        images: list[tuple[str, Path]] = []
        for i, s in enumerate(summaries):
            p = img_dir / f"matched_length_{i + 1}.png"
            plots.matched_length_histogram(s, p)
            images.append((f"Matched prefix length — run {i + 1}", p))
        if len(summaries) > 1:
            p = img_dir / "rate_vs_prefix_length.png"
            plots.rate_vs_prefix_length(summaries, p)
            images.append(("Extraction rate vs prefix length", p))
        est, refusal = _estimate_table(runs)
        est_result = None
        if est is not None:
            p = img_dir / "extrapolation.png"
            plots.extrapolation_plot(est.table, p, title=est.items.split(" (")[0].capitalize(), units=est.units,
                                     unit=est.unit)
            images.append(("Extrapolation of what has not been extracted yet", p))
            est_result = estimate(est.table, units=est.units, unit=est.unit)
            est_result["assumptions"] = est.assumptions
        text = _render(summaries, images, est, est_result, refusal, markdown, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    finally:
        if not markdown:  # HTML embeds the images: their temporary folder goes, success or not
            shutil.rmtree(img_dir, ignore_errors=True)
    return out


def _render(summaries: list[dict[str, Any]], images: list[tuple[str, Path]], est: EstimateSource | None,
            est_result: dict[str, Any] | None, refusal: str | None, markdown: bool, out: Path) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    est_rows: list[list[str]] = []
    if est and est_result:
        gt = est_result["good_turing"]
        est_rows = [["items", f"{est_result['distinct']} distinct {est.items}, found {est_result['observations']} "
                              f"times in {est_result['units']} {est.unit}s"],
                    ["sampling unit", est.unit]]
        est_rows += [["assumption", a] for a in est.assumptions]
        est_rows.append(["P0 (next finding unseen; Simple Good-Turing, estimate)", f"{gt['P0']:.4f} ({gt['method']})"])
        est_rows += [[f"distinct after {pt['t']:g}× more {est.unit}s (Chao et al. 2014, estimate)",
                      f"{pt['total']:.1f}"] for pt in est_result["extrapolation"]["points"]]
        c = est_result["chao1"]
        est_rows.append(["Chao1 lower bound (estimate)", f"{c['total_lower_bound']:.1f}"])
        est_rows += [["warning", w] for w in est_result["warnings"]]
    elif refusal:
        est_rows = [["not estimated", refusal]]
    if markdown:
        lines = ["# mia memorization report", "", f"Generated {stamp} by mia {__version__}.", ""]
        for i, s in enumerate(summaries, 1):
            lines += [f"## Run {i}: `{s['run']}`", ""]
            for title, header, rows in _tables(s):
                lines += [f"### {title}", "", "| " + " | ".join(header) + " |",
                          "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
                lines.append("")
            lines += [f"- note: {n}" for n in s.get("notes", [])] + [""]
        if est_rows:
            lines += ["## What has not been extracted yet", "", "| measure | value |", "|---|---|"]
            lines += [f"| {a} | {b} |" for a, b in est_rows] + [""]
        for title, p in images:
            lines += [f"## {title}", "", f"![{title}]({p.relative_to(out.parent).as_posix()})", ""]
        return "\n".join(lines)
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mia report</title><style>",
             "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;font-size:14px}th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4}",
             "</style></head><body>", "<h1>mia memorization report</h1>",
             f"<p>Generated {e(stamp)} by mia {e(__version__)}.</p>"]
    for i, s in enumerate(summaries, 1):
        parts.append(f"<h2>Run {i}: <code>{e(s['run'])}</code></h2>")
        for title, header, rows in _tables(s):
            parts.append(f"<h3>{e(title)}</h3><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        parts += [f"<p><em>note: {e(n)}</em></p>" for n in s.get("notes", [])]
    if est_rows:
        parts.append("<h2>What has not been extracted yet</h2><table>")
        parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in est_rows]
        parts.append("</table>")
    for title, p in images:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
