"""The pieces of ``mia report``: a run's tables, per-label matched lengths, the longest extractions as text,
attack sections and provenance rows."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.runs import RunKind
from mia_core.formatting import format_number, format_rate, per_position_name
from mia_core.scoring.summary import eligible_by_label
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


def run_tables(s: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
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


#: Rows of a run read at a time by the report's per-row figures.
REPORT_ROWS = 4_096


@dataclass
class _Slice:
    """One slice of a run: its rows, which are eligible (true suffix ≥ k tokens, not failed), their matched
    lengths (at most k) and labels."""

    rows: slice
    eligible: np.ndarray
    matched: np.ndarray
    labels: np.ndarray


def _slices(run: Any, k: int) -> Any:
    """The run's :class:`_Slice` s, ``REPORT_ROWS`` rows at a time (memory: one slice, whatever the run's size)."""
    from mia_core.formats.runs import failed_mask

    for start in range(0, len(run), REPORT_ROWS):
        rows = slice(start, min(start + REPORT_ROWS, len(run)))
        n = rows.stop - start
        tokens, lengths = run.read("tokens", rows), run.read("lengths", rows)
        truths = run.suffixes(rows)
        matched = matched_lengths([tokens[i, :lengths[i]] for i in range(n)], truths, k)
        failed = failed_mask(run.read("error", rows) if run.has("error") else None, n)
        eligible = np.array([len(t) >= k for t in truths], dtype=bool) & ~failed
        labels = run.prefix_map.read("sample_label", run.read("prefix_row", rows))
        yield _Slice(rows, eligible, matched, labels)


def matched_length_counts_by_label(run_path: str | os.PathLike, k: int) -> dict[str, np.ndarray]:
    """How many eligible rows matched 0, 1, ..., k leading suffix tokens (k + 1 counts), by label: exact, and
    memory does not grow with the run (one slice of it and k + 1 counts per label)."""
    from mia_core.formats.runs import open_run

    counts: dict[str, np.ndarray] = {}
    for part in _slices(open_run(run_path), k):
        labels = np.array([str(v) or "(no label)" for v in part.labels], dtype=object)
        for lab in set(labels[part.eligible]):
            chosen = part.matched[part.eligible & (labels == lab)]
            counts[lab] = counts.get(lab, np.zeros(k + 1, dtype=np.int64)) + np.bincount(chosen, minlength=k + 1)
    return {lab: counts[lab] for lab in sorted(counts)}


def _longest_rows(run: Any, k: int, n: int) -> list[tuple[int, int]]:
    """(row, matched length) of the ``n`` eligible rows with the longest matched length (> 0), the earlier row
    first among equals; each slice keeps only its own ``n`` longest."""
    best: list[tuple[int, int]] = []
    for part in _slices(run, k):
        keep = np.flatnonzero(part.eligible & (part.matched > 0))
        top = keep[np.argsort(-part.matched[keep], kind="stable")[:n]]
        best += [(part.rows.start + int(i), int(part.matched[i])) for i in top]
        best = sorted(best, key=lambda rm: (-rm[1], rm[0]))[:n]
    return best


def longest_extractions(run_path: str | os.PathLike, k: int, n: int) -> tuple[list[dict[str, Any]], str | None]:
    """The ``n`` eligible rows with the longest matched length (> 0), decoded with the map's tokenizer,
    and a note when there are none to show. A teacher-forced run has no generation (``generation_rest``
    None): its agreement is what greedy decoding reproduces. Only those rows are read whole."""
    from mia_core import registry
    from mia_core.formats.runs import open_run

    run = open_run(run_path)
    order = _longest_rows(run, k, n)
    if not order:
        return [], "no eligible row reproduced even the first token of its true suffix: no extraction to show"
    name = str(run.attrs.get("tokenizer") or run.prefix_map.tokenizer_name)
    try:
        tokenizer = registry.tokenizers.create(name)
    except MiaError as exc:
        return [], f"longest extractions withheld: the tokenizer {name!r} cannot be loaded to show them as text " \
                   f"({str(exc).splitlines()[0]})"
    teacher_forced = run.kind is RunKind.TEACHER_FORCED
    pieces: list[list[int]] = []
    shown = []
    for i, m in order:
        one = slice(i, i + 1)
        gen = run.read("tokens", one)[0][:int(run.read("lengths", one)[0])]
        truth, prefix = run.suffixes(one)[0], run.prefixes(one)[0]
        prefix_row = run.read("prefix_row", one)
        shown.append((i, m, run.prefix_map.read("sample_id", prefix_row)[0],
                      run.prefix_map.read("sample_label", prefix_row)[0]))
        pieces += [[int(t) for t in prefix], [int(t) for t in truth[:m]], [int(t) for t in truth[m:k]],
                   [int(t) for t in gen[m:k]]]
    texts = tokenizer.decode_batch(pieces)
    out = []
    for j, (i, m, sample_id, label) in enumerate(shown):
        pre, agree, rest, gen_rest = texts[4 * j:4 * j + 4]
        out.append({"row": i, "sample_id": str(sample_id), "label": str(label), "matched": m, "k": k,
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
    from mia_core.attack.metrics import FPR_TARGETS, TPR_CONVENTION
    from mia_core.attack.plots import plot_roc
    from mia_core.formats.attack_results import AttackResults

    sections = []
    for i, path in enumerate(paths, 1):
        res = AttackResults(path)
        a = res.attrs
        sec = Section(f"Attack {i}: {a.get('model')} — {Path(path).name}", level=2)
        stored = {m["signal"]: m for m in a.get("metrics") or []}
        metrics = _attack_metrics(res)
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


def _attack_metrics(res: Any) -> list[Any]:
    """Each stored signal evaluated again for its ROC curve and class counts, a slice of rows at a time past
    ``outofcore.IN_MEMORY_STRINGS`` strings (``attack.evaluate.signal_metrics``); no bootstrap: the table shows
    the intervals the attack stored."""
    from mia_core.attack.evaluate import signal_metrics
    from mia_core.attack.labels import label_codes
    from mia_core.attack.outofcore import READ_VALUES

    size = len(res)
    codes = label_codes(res.slices(res.columns.dataset("label"), READ_VALUES), size) if "label" in res.columns \
        else np.full(size, -1, dtype=np.int8)
    metrics = []
    for name in res.signals:
        dataset = res.signals.dataset(name)

        def chunks(dataset: str = dataset) -> Any:  # (values, codes) of each slice, from one opening of the file
            for at, values in zip(range(0, size, READ_VALUES), res.slices(dataset, READ_VALUES), strict=True):
                yield values, codes[at:at + READ_VALUES]

        m = signal_metrics(name, codes, chunks, partial(res.read, dataset), n_boot=0, seed=0)
        if m is not None:
            metrics.append(m)
    return metrics


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


def setlevel_sections(paths: Sequence[str | os.PathLike]) -> list[Section]:
    """One section per set-level results file (``mia dataset-inference``, ``mia contamination``)."""
    from mia_core.formats.setlevel_results import read_setlevel_results
    from mia_core.setlevel.report import report_rows

    sections = []
    for path in paths:
        record = read_setlevel_results(path)
        title = "Dataset inference (Maini et al. 2024)" if record["kind"] == "dataset-inference" else \
            "Test-set contamination (Oren et al. 2024)"
        sections.append(Section(f"{title}: {record.get('model')} — {Path(path).name}",
                                tables=[("Result", ["measure", "value"], report_rows(record))]))
    return sections
