"""PNG plots (matplotlib, Agg backend): matched lengths (overall and by label), extraction rate vs prefix length,
Good-Turing extrapolation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def matched_length_histogram(summary: Mapping[str, Any], out: str | os.PathLike) -> str:
    """Bar chart of how many generations matched their suffix for 0..k leading tokens."""
    plt = _pyplot()
    hist = {int(k): v for k, v in summary["matched_length"]["histogram"].items()}
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.bar(list(hist), list(hist.values()), width=0.85, color="#3b6ea8")
    ax.set_xlabel("matched prefix length (tokens of the true suffix reproduced)")
    ax.set_ylabel("generations")
    ax.set_title(f"{summary.get('model')} — {summary['rows']} generations, k = {summary['k']}")
    ax.set_xlim(-0.8, summary["k"] + 0.8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return str(out)


def rate_vs_prefix_length(summaries: Sequence[Mapping[str, Any]], out: str | os.PathLike) -> str:
    """Exact-extraction rate (Wilson 95% bars) against prefix length, one line per model."""
    plt = _pyplot()
    by_model: dict[str, list[tuple[int, float, float, float]]] = {}
    for s in summaries:
        e = s["extraction"]
        if e["rate"] is None:
            continue
        lo, hi = e["wilson95"]
        by_model.setdefault(f"{s.get('model')} ({s['method']})", []).append(
            # clamped: at a rate of 0 or 1 the Wilson bound equals it up to rounding, never a negative bar
            (int(s["prefix_tokens"]), e["rate"], max(0.0, e["rate"] - lo), max(0.0, hi - e["rate"])))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for label, pts in sorted(by_model.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel("prefix length (tokens)")
    ax.set_ylabel("exact extraction rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Extraction rate vs prefix length (95% Wilson intervals)")
    if by_model:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return str(out)


def extrapolation_plot(table: Mapping[int, int], out: str | os.PathLike, max_t: float = 10,
                       title: str = "Unique memorized items", units: int | None = None,
                       unit: str = "observation") -> str:
    """Expected distinct items after t× *more* sampling units (t = 0: what was observed): the Chao et al.
    2014 extrapolation over the whole range (never decreasing), Good–Toulmin for t ≤ 1 as a
    cross-check, and the Chao1 lower bound on the total as a dashed line."""
    from mia_core.scoring.goodturing import chao1, chao_extrapolation, good_toulmin

    plt = _pyplot()
    distinct = sum(n for n in table.values() if n > 0)
    max_t = max(float(max_t), 1.5)
    ts = [i * max_t / 60 for i in range(61)]
    ys = [distinct + chao_extrapolation(table, t, units)["new"] for t in ts]
    gt_ts = [t for t in ts if t <= 1]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(ts, ys, color="#3b6ea8", label="Chao et al. 2014 extrapolation (estimate)")
    ax.plot(gt_ts, [distinct + good_toulmin(table, t)["new"] for t in gt_ts], color="#9bbb59", ls=":",
            label="Good–Toulmin, t ≤ 1 (estimate)")
    ax.axhline(distinct, color="grey", lw=0.8, label=f"observed: {distinct}")
    c = chao1(table, units)
    ax.axhline(c["total_lower_bound"], color="#c0504d", ls="--", lw=1,
               label=f"Chao1 lower bound: {c['total_lower_bound']:.1f}")
    ax.set_xlabel(f"additional {unit}s t, as a multiple of those made")
    ax.set_ylabel("distinct items")
    ax.set_xlim(0, max_t)
    ax.set_title(title + " — extrapolation (estimates)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return str(out)


def matched_length_by_label(by_label: Mapping[str, Any], k: int, out: str | os.PathLike, title: str = "") -> str:
    """Side-by-side bars per label: the share of each label's eligible rows that matched 0..k leading
    suffix tokens (shares, so that labels of different sizes compare; counts are in the legend).
    ``by_label``: each label's counts of the eligible rows that matched 0, 1, ..., k tokens."""
    import numpy as np

    plt = _pyplot()
    labels = list(by_label)
    width = 0.85 / max(len(labels), 1)
    xs = np.arange(k + 1)
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    for j, lab in enumerate(labels):
        counts = np.asarray(by_label[lab], dtype=np.int64)[:k + 1]
        n = int(counts.sum())
        share = counts / max(n, 1)
        ax.bar(xs - 0.425 + width * (j + 0.5), share, width=width, label=f"{lab} (n = {n})")
    ax.set_xlabel("matched length (leading tokens of the true suffix reproduced)")
    ax.set_ylabel("share of the label's eligible rows")
    ax.set_xlim(-0.8, k + 0.8)
    ax.set_title((title + " — " if title else "") + f"matched length by label, k = {k}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return str(out)
