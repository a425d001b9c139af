"""Saving an attack's outcome (results file, ROC plot, exports) and printing its AUC table."""

import math
from pathlib import Path
from typing import Any

from mia_core.attack.metrics import DELONG, FPR_TARGETS, TPR_CONVENTION, SignalMetrics, below_chance
from mia_core.attack.plots import plot_roc
from mia_core.attack.run import AttackOutcome
from mia_core.formats.attack_results import export_results, write_results
from mia_core.text_table import text_table


def save_outcome(outcome: AttackOutcome, path: Path, plot: bool = True, exports: tuple[str, ...] = (),
                 title: str = "") -> AttackOutcome:
    """Write the results file, then the ROC plot (when there are metrics) and exports beside it."""
    write_results(path, outcome.columns, outcome.signals, outcome.attrs)
    return finish_outcome(outcome, path, plot, exports, title)


def finish_outcome(outcome: AttackOutcome, path: Path, plot: bool = True, exports: tuple[str, ...] = (),
                   title: str = "") -> AttackOutcome:
    """The ROC plot (when there are metrics) and the exports beside the results file written at ``path``."""
    outcome.path = path
    if plot and outcome.metrics:
        outcome.plot = plot_roc(outcome.metrics, path.with_name(path.stem + "_roc.png"), title)
    outcome.exports = [export_results(path, fmt) for fmt in exports]
    return outcome


def _tpr_cell(m: SignalMetrics, target: float) -> str:
    key = f"{target:g}"
    value = m.tpr_at_fpr.get(key)
    if value is None:
        return f"n/a ({m.tpr_withheld.get(key, 'not computed')})"
    ci = m.tpr_at_fpr_ci.get(key)
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def format_table(metrics: list[SignalMetrics], level: float = 0.95) -> str:
    """A plain-text table: one line per signal with AUC, its interval and TPR at low FPR (with intervals)."""
    tpr_heads = [f"TPR@{t * 100:g}%FPR" for t in FPR_TARGETS]
    heads = ["signal", "AUC", f"{level * 100:g}% CI", *tpr_heads, "members", "nonmembers"]
    rows = []
    for m in metrics:
        ci = "-" if math.isnan(m.auc_low) else f"[{m.auc_low:.3f}, {m.auc_high:.3f}]"
        ci += " below chance" if below_chance(m) else ""
        rows.append([m.signal, f"{m.auc:.3f}", ci, *(_tpr_cell(m, t) for t in FPR_TARGETS),
                     str(m.n_members), str(m.n_nonmembers)])
    other = "".join(f"; {m.signal}: {m.interval}" for m in metrics if m.interval.startswith(DELONG))
    return (text_table(heads, rows) + f"\nTPR@x%FPR: {TPR_CONVENTION}; [..]: {level * 100:g}% bootstrap interval"
            + other)


def format_rows(counts: dict[str, Any]) -> str:
    """The row set of the table: strings per label, and which of them every figure counts."""
    by_label = counts.get("by_label") or {}
    listed = ", ".join(f"{lab} {c['strings']}" for lab, c in by_label.items())
    return (f"rows: {counts.get('strings', 0)} strings ({listed}); each signal's AUC and TPR are over its members "
            "and nonmembers columns: the labelled strings it gave a finite score")


def format_extracted(counts: dict[str, Any]) -> str:
    """A map's teacher-forced verdicts per label, over every window (each on its own suffix)."""
    by_label = counts.get("by_label") or {}
    per = ", ".join(f"{lab} {c['extracted']} of {c['strings']}" for lab, c in by_label.items())
    return (f"extracted (teacher-forced, whole suffix): {counts['extracted']} of {counts['strings']} "
            f"windows ({per}; all windows, whatever their suffix length)")


def format_passes(passes: dict[str, float] | None) -> str | None:
    """The cost line: forward passes per string by signal family, when any needs more than the one."""
    if not passes or set(passes) == {"target"}:
        return None
    total = sum(passes.values())
    return ("forward passes per string: " + ", ".join(f"{name} {value:g}" for name, value in passes.items())
            + f" (total {total:g}; the target pass gives loss, zlib, Min-K%, Min-K%++)")


def summary_json(outcome: AttackOutcome) -> dict[str, Any]:
    """What ``--json`` prints."""
    return {
        "results": str(outcome.path) if outcome.path else None,
        "plot": str(outcome.plot) if outcome.plot else None,
        "exports": [str(p) for p in outcome.exports],
        "model": outcome.attrs.get("model"),
        "reference": outcome.attrs.get("reference"),
        "signals": outcome.attrs.get("signals"),
        "k": outcome.attrs.get("k"),
        "counts": outcome.counts,
        "tokens_per_s": outcome.attrs.get("tokens_per_s"),
        "forward_passes_per_string": outcome.attrs.get("forward_passes_per_string"),
        "recall_prefix_ids": outcome.attrs.get("recall_prefix_ids"),
        "probabilistic": outcome.attrs.get("probabilistic"),
        "label_message": outcome.label_message,
        "blind": outcome.attrs.get("blind"),
        "warnings": outcome.warnings,
        "metrics": [m.to_dict() for m in outcome.metrics],
        "tpr_convention": TPR_CONVENTION,
    }
