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
from mia_core.scoring.store import scores_path
from mia_core.scoring.summary import score_run
from mia_core.scoring.tables import table_from_runs


def _fmt_rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return f"{r['count']}/{r['n']}"
    lo, hi = r["wilson95"]
    return f"{r['count']}/{r['n']} ({100 * r['rate']:.1f}%, 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"


def _tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of one run's summary."""
    out = [("Summary", ["measure", "value"], [
        ["model / method", f"{s['model']} / {s['method']}"],
        ["prefix map", str(s["prefix_map"])],
        ["prefix / suffix tokens, location", f"{s['prefix_tokens']} / {s['suffix_tokens']}, {s['prefix_loc']}"],
        ["rows (eligible)", f"{s['rows']} ({s['eligible']})"],
        [f"exact extraction of the first {s['k']} tokens", _fmt_rate(s["extraction"])],
        [f"approximate ({s['approximate']['criterion']})", _fmt_rate(s["approximate"])],
        ["mean Pythia memorization score", f"{s['mean_memorization_score']:.3f}"
         if s["mean_memorization_score"] is not None else "n/a"],
        ["matched length mean / median / max", f"{s['matched_length']['mean']:.2f} / "
         f"{s['matched_length']['median']:.0f} / {s['matched_length']['max']}"],
    ])]
    for title, key in (("By label", "by_label"), ("By prefix location", "by_prefix_loc"),
                       ("By prefix start (token offset)", "by_prefix_start")):
        out.append((title, ["group", "rows", "exact extraction", "approximate", "mean matched length"],
                    [[name, str(g["rows"]), _fmt_rate(g["extraction"]), _fmt_rate(g["approximate"]),
                      f"{g['mean_matched_length']:.2f}" if g["mean_matched_length"] is not None else "n/a"]
                     for name, g in s[key].items()]))
    c = s.get("corpus")
    if c:
        rows = [["index", f"{c['index']} ({c['index_tokens']} tokens)"],
                [f"generations with a verbatim ≥{c['window']}-token corpus window", _fmt_rate(c["memorized"])],
                ["longest match mean / median / max", f"{c['longest_match']['mean']:.1f} / "
                 f"{c['longest_match']['median']:.0f} / {c['longest_match']['max']}"],
                ["unique memorized windows (occurrences)", f"{c['unique_windows']} ({c['window_occurrences']})"]]
        rows += [[f"label {lab}", _fmt_rate(r)] for lab, r in c["by_label"].items()]
        out.append(("Corpus membership", ["measure", "value"], rows))
    return out


def _estimate_table(runs: Sequence[str | os.PathLike]) -> tuple[dict[int, int], str] | None:
    """Counts pooled per item across runs, as `mia estimate` does (an item seen in two runs is one item);
    extracted samples when no corpus window was memorized."""
    table, what = table_from_runs(runs, "auto")
    if not table and what == "memorized corpus windows":
        table, what = table_from_runs(runs, "samples")
    return (table, what) if table else None


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
        est = _estimate_table(runs)
        est_result = None
        if est is not None:
            p = img_dir / "extrapolation.png"
            plots.extrapolation_plot(est[0], p, title=est[1].split(" (")[0].capitalize())
            images.append(("Good-Turing extrapolation", p))
            est_result = estimate(est[0])
        text = _render(summaries, images, est, est_result, markdown, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    finally:
        if not markdown:  # HTML embeds the images: their temporary folder goes, success or not
            shutil.rmtree(img_dir, ignore_errors=True)
    return out


def _render(summaries: list[dict[str, Any]], images: list[tuple[str, Path]], est: tuple[dict[int, int], str] | None,
            est_result: dict[str, Any] | None, markdown: bool, out: Path) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    est_rows: list[list[str]] = []
    if est and est_result:
        gt = est_result["good_turing"]
        est_rows = [["items", f"{est_result['distinct']} distinct {est[1]}, {est_result['observations']} occurrences"],
                    ["P0 (next item unseen; Simple Good-Turing, estimate)", f"{gt['P0']:.4f} ({gt['method']})"]]
        est_rows += [[f"distinct after {pt['t']:g}× more generations (estimate)", f"{pt['total']:.1f}"]
                     for pt in est_result["extrapolation"]["points"]]
        c = est_result["chao1"]
        est_rows.append(["Chao1 lower bound (estimate)", f"{c['total_lower_bound']:.1f}"])
        est_rows += [["warning", w] for w in est_result["warnings"]]
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
