"""The pieces of ``mia report`` beyond the score tables: per-label matched lengths, the longest
extractions as text, attack sections, provenance rows and the definitions of every figure."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.token_rows import matched_lengths


@dataclass
class Section:
    """One heading of the report with its tables, notes, images, examples and definitions."""

    title: str
    level: int = 2
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    definitions: list[tuple[str, str]] = field(default_factory=list)


def _per_row(run_path: str | os.PathLike, k: int) -> tuple[Any, np.ndarray, np.ndarray, list[np.ndarray],
                                                           list[np.ndarray]]:
    """(run, eligible mask, matched length per row, generations, true suffixes)."""
    from mia_core.formats.runs import open_run

    run = open_run(run_path)
    gens, truths = run.tokens(), run.suffixes()
    matched = matched_lengths(gens, truths, k)
    eligible = np.array([len(t) >= k for t in truths], dtype=bool) & ~run.failed_rows()
    return run, eligible, matched, gens, truths


def matched_lengths_by_label(run_path: str | os.PathLike, k: int) -> dict[str, np.ndarray]:
    """Matched length (leading suffix tokens reproduced, at most k) of each eligible row, by label."""
    run, eligible, matched, _, _ = _per_row(run_path, k)
    labels = np.array([str(v) or "(no label)" for v in run.map_column("sample_label")], dtype=object)
    return {lab: matched[eligible & (labels == lab)] for lab in sorted(set(labels[eligible]))}


def longest_extractions(run_path: str | os.PathLike, k: int, n: int) -> tuple[list[dict[str, Any]], str | None]:
    """The ``n`` eligible rows with the longest matched length (> 0), decoded with the map's tokenizer,
    and a note when there are none to show. A teacher-forced run has no generation (``generation_rest``
    None): its agreement is what greedy decoding reproduces."""
    from mia_core import registry

    run, eligible, matched, gens, truths = _per_row(run_path, k)
    order = [int(i) for i in np.argsort(-matched, kind="stable") if eligible[i] and matched[i] > 0][:n]
    if not order:
        return [], "no eligible row reproduced even the first token of its true suffix: no extraction to show"
    name = str(run.attrs.get("tokenizer") or run.prefix_map.tokenizer_name)
    try:
        tokenizer = registry.tokenizers.create(name)
    except MiaError as exc:
        return [], f"longest extractions withheld: the tokenizer {name!r} cannot be loaded to show them as text " \
                   f"({str(exc).splitlines()[0]})"
    prefixes = run.prefixes()
    ids, labels = run.map_column("sample_id"), run.map_column("sample_label")
    teacher_forced = run.method == "teacher-forced"
    pieces: list[list[int]] = []
    for i in order:
        m = int(matched[i])
        pieces += [[int(t) for t in prefixes[i]], [int(t) for t in truths[i][:m]], [int(t) for t in truths[i][m:k]],
                   [int(t) for t in gens[i][m:k]]]
    texts = tokenizer.decode_batch(pieces)
    out = []
    for j, i in enumerate(order):
        pre, agree, rest, gen_rest = texts[4 * j:4 * j + 4]
        out.append({"row": i, "sample_id": str(ids[i]), "label": str(labels[i]), "matched": int(matched[i]), "k": k,
                    "prefix": pre, "agreement": agree, "suffix_rest": rest,
                    "generation_rest": None if teacher_forced else gen_rest})
    return out, None


def _ci(low: float | None, high: float | None) -> str:
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a (no bootstrap interval)"
    return f"[{low:.3f}, {high:.3f}]" + (" below chance" if high < 0.5 else "")


def attack_sections(paths: list[str | os.PathLike] | tuple, img_dir: Path) -> list[Section]:
    """One section per attack results file: the AUC table (blind baseline as its own row when it was
    computed) and the ROC curves, recomputed from the stored signals and labels."""
    from mia_core.attack.metrics import FPR_TARGETS, TPR_CONVENTION, evaluate_signal
    from mia_core.attack.plots import plot_roc
    from mia_core.formats.attack_results import AttackResults

    sections = []
    for i, path in enumerate(paths, 1):
        res = AttackResults(path)
        a = res.attrs
        sec = Section(f"Attack {i}: {a.get('model')} — {Path(path).name}", level=2)
        labels = [str(v) for v in res.columns.get("label", [])]
        metrics = []
        n_boot, seed = int(a.get("n_boot") or 1000), int(a.get("seed") or 0)
        for name, values in res.signals.items():
            m = evaluate_signal(name, labels, values, n_boot=min(n_boot, 200), seed=seed)
            if m is not None:
                metrics.append(m)
        stored = {m["signal"]: m for m in a.get("metrics") or []}
        heads = ["signal", "AUC", "95% CI", *(f"TPR@{t * 100:g}%FPR" for t in FPR_TARGETS), "members", "nonmembers"]
        rows = []
        for m in metrics:
            s = stored.get(m.signal, {})
            tprs = s.get("tpr_at_fpr") or m.tpr_at_fpr
            cells = []
            for t in FPR_TARGETS:
                v = tprs.get(f"{t:g}")
                cells.append("n/a (too few nonmembers)" if v is None else f"{v:.3f}")
            rows.append([m.signal + (" (baseline: text features only)" if m.signal == "blind" else ""),
                         f"{s.get('auc', m.auc):.3f}", _ci(s.get("auc_low"), s.get("auc_high")), *cells,
                         str(m.n_members), str(m.n_nonmembers)])
        if rows:
            sec.tables.append(("AUC (higher score = more likely member)", heads, rows))
            sec.notes.append(f"TPR@x%FPR: {TPR_CONVENTION}")
            sec.notes.append("rows: each signal's labelled strings with a finite score (members and nonmembers "
                             "columns); below chance: the AUC interval lies wholly below 0.5")
        else:
            sec.notes.append(a.get("label_message") or "no signal could be evaluated: both member and nonmember "
                                                       "labels are needed")
        blind = a.get("blind") or {}
        if blind and not blind.get("computed"):
            sec.notes.append(f"blind baseline not computed: {blind.get('reason')}")
        sec.notes += [f"warning: {w}" for w in a.get("warnings") or []]
        if metrics and max(m.n_nonmembers for m in metrics) > 1:
            p = plot_roc(metrics, img_dir / f"roc_{i}.png", f"{a.get('model')} — membership inference ROC")
            sec.images.append(("ROC curves (log FPR axis)", p))
        sections.append(sec)
    return sections


def provenance_rows(path: str | os.PathLike) -> list[list[str]]:
    """The provenance of a run or attack file as (field, value) rows."""
    from mia_core.inspection.show import describe_file

    try:
        prov = describe_file(path, rows=0).get("provenance")
    except MiaError as exc:
        return [["unreadable", str(exc)]]
    if not prov:
        return [["provenance", "not recorded (file written by an older mia)"]]
    rows = []
    for key in ("command_line", "mia_version", "plugins", "libraries", "python", "device", "dtype", "host",
                "git_commit", "written", "config_file"):
        value = prov.get(key)
        if value in (None, {}, []):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        rows.append([key.replace("_", " "), str(value)])
    return rows


DEFINITIONS: list[tuple[str, str]] = [
    ("eligible rows", "rows whose request did not fail and whose true suffix has at least k tokens; every rate "
                      "is over eligible rows"),
    ("exact extraction", "the first k generated tokens equal the first k tokens of the true suffix (Carlini et "
                         "al. 2021/2023, discoverable extraction with greedy decoding); for a teacher-forced run, "
                         "the model's argmax given the true context equals the truth at each of the first k "
                         "positions, the same verdict greedy decoding reaches"),
    ("95% CI", "Wilson score interval for a binomial proportion, at 95% confidence"),
    ("matched length", "leading tokens of the true suffix the generation reproduces before its first mismatch "
                       "(0 to k)"),
    ("approximate memorization", "normalized token edit distance between generation and true suffix at most the "
                                 "threshold (or BLEU at least the threshold with --bleu; Ippolito et al. 2022)"),
    ("position agreement (generated)", "fraction of the k positions where the generated token equals the true "
                                       "one (Biderman et al. 2023's Pythia memorization score); generated runs only"),
    ("next-token accuracy (teacher-forced)", "fraction of the k positions where the model's most likely token, "
                                             "given the true text before it, is the true one; teacher-forced runs "
                                             "only, and much higher than the position agreement of a generation"),
    ("eligible rows", "rows whose true suffix has at least k tokens and whose request did not fail; every rate "
                      "and mean of a run is over them (the tables give rows, failed and eligible)"),
    ("corpus membership", "a generation contains a verbatim window of at least W tokens that occurs in the "
                          "indexed corpus (Nasr et al. 2023)"),
    ("AUC", "area under the ROC curve of a membership signal (higher score = more likely member); 0.5 is "
            "chance; its 95% CI is a bootstrap percentile interval over strings"),
    ("TPR@x%FPR", "true positive rate at a false positive rate strictly below x, read off the ROC points "
                  "(Carlini et al. 2022); withheld with fewer than 1/x nonmembers"),
    ("blind baseline", "a classifier that sees only the text (no model), cross-validated: an AUC near the "
                       "model's signals means the member/nonmember split is distinguishable without the model "
                       "(Das et al. 2024)"),
    ("P0 (Good-Turing)", "estimated probability that the next sampling unit finds an item not found yet "
                         "(Simple Good-Turing, Gale & Sampson 1995)"),
    ("Chao extrapolation, Chao1", "expected distinct items after t times more sampling units (Chao et al. 2014) "
                                  "and a lower bound on the total number of items (Chao 1984)"),
]
