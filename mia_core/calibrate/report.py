"""The calibration report: one table per model (fine-tuned, base as control), extraction rates by
true label, and the canaries' extraction rate and exposure against repetition count."""

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from mia_core.formats.safeio import write_atomically
from mia_core.formatting import format_rate, per_position_name
from mia_core.text_table import text_table


def canary_levels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Canaries grouped by repetition count: how many, extracted, exposure mean/min/max."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[int(row["repeats"])].append(row)
    out = []
    for repeats in sorted(groups):
        g = groups[repeats]
        exposures = [r["exposure"] for r in g]
        out.append({"repeats": repeats, "canaries": len(g), "extracted": sum(r["extracted"] for r in g),
                    "exposure_mean": sum(exposures) / len(exposures), "exposure_min": min(exposures),
                    "exposure_max": max(exposures), "ceiling": min(r["ceiling"] for r in g)})
    return out


def _mean(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text (what `mia calibrate` prints)."""
    split, ft, results = report["split"], report["finetune"], report["results"]
    losses = ft.get("epoch_losses") or []
    lines = [
        f"Calibration of {report['model']} on {report['dataset']} (seed {report['seed']}): a random half of "
        f"{split['members'] + split['nonmembers']} samples fine-tuned on as members "
        f"({split['members']} members, {split['nonmembers']} non-members"
        + (f"; dropped {split['empty']} empty, {split['duplicate']} duplicate" if split["empty"] or split["duplicate"]
           else "") + ")",
        f"fine-tune: {ft['method']}, {ft['epochs']} epochs, lr {ft['learning_rate']:g}, batch {ft['batch_size']}, "
        f"first {ft['max_tokens']} tokens of each text; mean loss by epoch "
        + " → ".join(f"{x:.3f}" for x in losses) + f"; {ft['seconds']:.0f} s on {ft['device']}",
        "",
        f"Membership inference on the samples' first {ft['max_tokens']} tokens, true random labels "
        "(AUC with 95% bootstrap interval; TPR at a FPR read off the ROC):",
    ]
    for role, what in (("fine-tuned", "fine-tuned model"),
                       ("base", "base model (control: it never saw the split, so every AUC should be ≈ 0.5)")):
        attack = results[role]["attack"]
        lines += ["", f"{what}:", attack["table"] if attack["metrics"] else attack["label_message"] or "no metrics"]
        lines += [f"note: {w}" for w in attack.get("warnings", [])]
    if not any(m["signal"] == "blind" for m in results["base"]["attack"]["metrics"]):
        lines += ["", "blind baseline (no model): not offered by this version of mia attack; the base model is the "
                      "control"]
    window = report["extraction_window"]
    lines += ["", f"Extraction: {window['prefix_tokens']}-token prefix at each sample's start, teacher-forced greedy "
                  f"check of the next {window['suffix_tokens']} tokens (exact = all of them; rows per label):"]
    rows = []
    for role in ("fine-tuned", "base"):
        by_label = results[role]["extraction"]["by_label"]
        for label in ("member", "nonmember"):
            g = by_label.get(label)
            if g:
                rows.append([role, label, str(g["rows"]), format_rate(g["extraction"]), format_rate(g["approximate"]),
                             _mean(g["mean_matched_length"]), _mean(g[per_position_name("teacher-forced")[0]])])
    lines.append(text_table(["model", "label", "rows", "exact extraction", "approximate", "mean matched tokens",
                             per_position_name("teacher-forced")[1]], rows))
    lines.append("  (rates and means over the eligible rows: true suffix of the full length)")
    if report.get("canaries"):
        c = report["canaries"]
        first = results["base"]["canaries"][0]
        ranked = (f"all {first['candidates']} other secrets (exact rank)" if first["exact"] else
                  f"{first['candidates']} sampled candidates (estimated rank; ceiling {first['ceiling']:.1f} bits)")
        lines += ["", f"Canaries: {c['per_level']} per repetition count, secrets of {c['digits']} random digits "
                      f"(|R| = 10^{c['digits']}); exposure = log2|R| − log2 rank (Carlini et al. 2019) against "
                      f"{ranked}; extracted = greedy decoding after the canary's sentence reproduces the secret; "
                      "repeats 0 = never inserted (control):"]
        rows = []
        tuned, base = (canary_levels(results[r]["canaries"]) for r in ("fine-tuned", "base"))
        for t, b in zip(tuned, base, strict=True):
            rows.append([str(t["repeats"]), str(t["canaries"]), f"{t['extracted']}/{t['canaries']}",
                         f"{t['exposure_mean']:.2f} [{t['exposure_min']:.1f}, {t['exposure_max']:.1f}]",
                         f"{b['extracted']}/{b['canaries']}", f"{b['exposure_mean']:.2f}"])
        lines.append(text_table(["repeats", "canaries", "fine-tuned extracted", "fine-tuned exposure mean [min, max]",
                                 "base extracted", "base exposure mean"], rows))
    lines += ["", f"fine-tuned model: {report['fine_tuned_model']}  (any command takes it as --model)",
              f"report:           {report['folder']}/report.md"]
    return "\n".join(lines)


def plot_canaries(report: dict[str, Any], path: Path) -> Path:
    """Exposure and extraction rate against repetition count, fine-tuned vs base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    for role, style in (("fine-tuned", "o-"), ("base", "s--")):
        levels = canary_levels(report["results"][role]["canaries"])
        x = [max(lv["repeats"], 0.5) for lv in levels]  # 0 repeats drawn at 0.5 on the log axis
        left.plot(x, [lv["exposure_mean"] for lv in levels], style, label=role)
        right.plot(x, [lv["extracted"] / lv["canaries"] for lv in levels], style, label=role)
    ceiling = canary_levels(report["results"]["base"]["canaries"])[0]["ceiling"]
    left.axhline(ceiling, color="grey", lw=0.8, ls=":", label="ceiling of the estimate")
    for ax, ylabel in ((left, "mean exposure (bits)"), (right, "extracted (greedy) fraction")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("times inserted in the fine-tuning data (0 drawn at 0.5)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    right.set_ylim(-0.02, 1.02)
    fig.suptitle(f"Canaries: {report['model']} fine-tuned on {report['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], folder: Path) -> None:
    """report.json, report.md and (with canaries) canaries.png in the calibration folder."""
    if report.get("canaries"):
        report["canary_plot"] = str(plot_canaries(report, folder / "canaries.png"))
    text = format_report(report)
    report["text"] = text
    for name, content in (("report.json", json.dumps(report, indent=2, default=str)),
                          ("report.md", f"# mia calibrate\n\n```\n{text}\n```\n")):
        write_atomically(folder / name, content.encode("utf-8"))
