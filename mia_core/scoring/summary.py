"""``score_run``: score a run against its true suffixes (and optionally a corpus index), store
the scores beside it, and summarise them; ``format_summary`` prints the summary as tables."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.prefixmap import as_str
from mia_core.scoring.matching import MatchScores, score_matches
from mia_core.scoring.stats import rate
from mia_core.scoring.store import scores_path, write_scores

START_BUCKETS = ((0, 0, "0 (document start)"), (1, 99, "1-99"), (100, 999, "100-999"),
                 (1000, None, "1000+"))
TOP_WINDOWS = 20


def load_run(path: str | os.PathLike) -> Any:
    """Open a run and check it can be scored (rows present, true suffixes known)."""
    from mia_core.runs import open_run

    run = open_run(path)
    if len(run) == 0:
        raise MiaError(f"run {run.path} is empty: it has no generated rows to score")
    return run


def _true_suffixes(run: Any) -> list[np.ndarray]:
    suffixes = run.suffixes()
    if not any(len(s) for s in suffixes):
        raise MiaError(f"run {run.path} has no true suffixes to compare with (its prefix map was made "
                       "with --suffix-tokens 0 or every suffix is empty)")
    return suffixes


def _group_rates(mask: np.ndarray, s: MatchScores) -> dict[str, Any]:
    el = mask & s.eligible
    n = int(el.sum())
    return {"rows": int(mask.sum()), "eligible": n,
            "extraction": rate(int((s.exact & el).sum()), n),
            "approximate": rate(int((s.approximate & el).sum()), n),
            "mean_matched_length": float(s.matched_length[mask].mean()) if mask.any() else None,
            "mean_memorization_score": float(s.memorization_score[el].mean()) if n else None}


def _bucket_starts(starts: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for lo, hi, name in START_BUCKETS:
        mask = (starts >= lo) & ((starts <= hi) if hi is not None else True)
        if mask.any():
            out[name] = mask
    return out


def _corpus_scores(run: Any, generations: list[np.ndarray], index_path: str | os.PathLike, window: int,
                   labels: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from mia_core.scoring.index import CorpusIndex

    if window < 1:
        raise MiaError("--window must be at least 1")
    index = CorpusIndex(index_path)
    run_fp = run.attrs.get("tokenizer_fingerprint") or run.prefix_map.tokenizer_fingerprint
    if str(run_fp) != index.fingerprint:
        raise MiaError(f"index {index.folder} was built with tokenizer {index.meta.get('tokenizer')!r} "
                       f"(fingerprint {index.fingerprint[:12]}), but the run uses "
                       f"{run.attrs.get('tokenizer')!r} (fingerprint {str(run_fp)[:12]}): refusing to compare")
    longest_gen = max((len(g) for g in generations), default=0)
    if window > longest_gen:
        raise MiaError(f"--window {window} is longer than every generation of {run.path.name} "
                       f"(longest: {longest_gen} tokens)")
    wm = index.longest_matches(generations, window)
    items = sorted(wm.windows.items(), key=lambda kv: (-kv[1], kv[0]))
    win_arr = np.array([k for k, _ in items], dtype=np.int32).reshape(-1, window)
    counts = np.array([v for _, v in items], dtype=np.int64)
    corpus_counts = np.array([index.count(k) for k, _ in items], dtype=np.int64)
    # where the most frequent memorized windows come from (document ids of the corpus)
    sources = [", ".join(index.documents_of(k, limit=3)) for k, _ in items[:TOP_WINDOWS]]
    attrs = {"index": str(Path(index_path).resolve()), "window": window, "index_tokens": index.tokens,
             "index_tokenizer": index.meta.get("tokenizer"), "index_source": index.meta.get("source")}
    data = {"longest_match": wm.longest, "memorized": wm.memorized, "windows": win_arr,
            "window_count": counts, "window_corpus_count": corpus_counts,
            "top_window_documents": np.array(sources, dtype=object)}
    return {"attrs": attrs, "data": data}, _corpus_summary(attrs, data, labels)


def _corpus_summary(attrs: dict[str, Any], data: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    longest, memorized = data["longest_match"], data["memorized"].astype(bool)
    counts = data["window_count"]
    by_label = {}
    for label in sorted(set(labels.tolist())):
        mask = labels == label
        by_label[label or "unlabelled"] = rate(int(memorized[mask].sum()), int(mask.sum()))
    return {
        "index": attrs["index"], "window": int(attrs["window"]), "index_tokens": int(attrs["index_tokens"]),
        "memorized": rate(int(memorized.sum()), len(memorized)),
        "longest_match": {"mean": float(longest.mean()), "median": float(np.median(longest)),
                          "max": int(longest.max())},
        "unique_windows": int(len(counts)), "window_occurrences": int(counts.sum()),
        "frequency_of_frequencies": {str(r): n for r, n in sorted(Counter(counts.tolist()).items())},
        "top_windows": [{"tokens": [int(t) for t in data["windows"][i]], "count": int(counts[i]),
                         "corpus_count": int(data["window_corpus_count"][i]),
                         "documents": _decode(data.get("top_window_documents"), i)}
                        for i in range(min(TOP_WINDOWS, len(counts)))],
        "by_label": by_label,
    }


def _decode_windows(windows: list[dict[str, Any]], tokenizer_name: str) -> None:
    from mia_core import registry

    tokenizer = registry.tokenizers.create(tokenizer_name)
    for w, text in zip(windows, tokenizer.decode_batch([w["tokens"] for w in windows]), strict=True):
        w["text"] = text


def _decode(values: np.ndarray | None, i: int) -> list[str]:
    if values is None or i >= len(values):
        return []
    text = as_str(values[i])
    return [x for x in text.split(", ") if x]


def score_run(path: str | os.PathLike, k: int | None = None, edit_threshold: float = 0.1,
              bleu: bool = False, bleu_threshold: float = 0.75, index: str | os.PathLike | None = None,
              window: int = 50, save: bool = True, decode: bool = False) -> dict[str, Any]:
    """Score one run and return its summary (a JSON-ready dict); writes ``<run>.scores.h5`` if ``save``.

    ``k`` defaults to the map's suffix length. ``index``/``window`` add corpus membership;
    ``decode`` loads the run's tokenizer to show the most frequent memorized windows as text.
    """
    run = load_run(path)
    pmap = run.prefix_map
    generations = run.tokens()
    suffixes = _true_suffixes(run)
    max_suffix = max(len(s) for s in suffixes)
    k = int(k if k is not None else pmap.suffix_tokens or max_suffix)
    if k < 1:
        raise MiaError("--k must be at least 1")
    if k > max_suffix:
        raise MiaError(f"--k {k} is longer than every true suffix of {run.path.name} (longest: {max_suffix})")
    scores = score_matches(generations, suffixes, k, edit_threshold, bleu_threshold if bleu else None)
    labels = np.array([str(x) for x in run.map_column("sample_label")], dtype=object)
    starts = run.map_column("prefix_start").astype(np.int64)
    method = run.method
    summary: dict[str, Any] = {
        "run": str(run.path), "scores_file": str(scores_path(run.path)) if save else None,
        "model": run.attrs.get("model"), "method": method, "prefix_map": str(pmap.folder),
        "dataset": pmap.attrs.get("dataset"), "prefix_tokens": pmap.prefix_tokens,
        "suffix_tokens": pmap.suffix_tokens, "prefix_loc": pmap.attrs.get("prefix_loc"),
        "temperature": run.attrs.get("temperature"), "complete": run.complete,
        "rows": len(generations), "k": k, "eligible": int(scores.eligible.sum()),
        "skipped_short_suffix": int((~scores.eligible).sum()),
    }
    summary.update(_group_rates(np.ones(len(generations), dtype=bool), scores))
    summary["approximate"]["criterion"] = (f"BLEU >= {bleu_threshold}" if bleu
                                           else f"normalized token edit distance <= {edit_threshold}")
    hist = np.bincount(scores.matched_length, minlength=k + 1)
    summary["matched_length"] = {"mean": float(scores.matched_length.mean()),
                                 "median": float(np.median(scores.matched_length)),
                                 "max": int(scores.matched_length.max()),
                                 "histogram": {str(i): int(c) for i, c in enumerate(hist)}}
    summary["memorized_pythia"] = int((scores.memorization_score[scores.eligible] == 1).sum())
    summary["by_label"] = {(lab or "unlabelled"): _group_rates(labels == lab, scores)
                           for lab in sorted(set(labels.tolist()))}
    loc = str(pmap.attrs.get("prefix_loc", "?"))
    summary["by_prefix_loc"] = {loc: _group_rates(np.ones(len(generations), dtype=bool), scores)}
    summary["by_prefix_start"] = {name: _group_rates(mask, scores) for name, mask in _bucket_starts(starts).items()}
    hits = scores.exact & scores.eligible
    extracted = Counter(str(i) for i, e in zip(run.map_column("sample_id"), hits, strict=True) if e)
    summary["extracted_samples"] = {"unique": len(extracted),
                                    "frequency_of_frequencies": {str(r): n for r, n in
                                                                 sorted(Counter(extracted.values()).items())}}
    notes = []
    if method == "teacher-forced":
        notes.append("teacher-forced run: exact extraction and matched length equal greedy decoding; "
                     "memorization score and edit distance compare per-position argmax tokens")
    if not run.complete:
        notes.append("the run is incomplete (interrupted?): only its finished rows were scored")
    summary["notes"] = notes
    summary["corpus"] = None
    corpus = None
    if index is not None:
        corpus, summary["corpus"] = _corpus_scores(run, generations, index, window, labels)
        if decode and summary["corpus"]["top_windows"]:
            _decode_windows(summary["corpus"]["top_windows"], str(run.attrs.get("tokenizer") or pmap.tokenizer_name))
        if method == "teacher-forced":
            notes.append("corpus membership of a teacher-forced run looks at its per-position argmax tokens, "
                         "which only form the model's own continuation up to the first mismatch")
    if save:
        attrs = {"run": run.path.name, "k": k, "edit_threshold": edit_threshold,
                 "bleu_threshold": bleu_threshold if bleu else None, "method": method, "rows": len(generations),
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        match = {"k": scores.k, "eligible": scores.eligible, "exact": scores.exact,
                 "matched_length": scores.matched_length, "memorization_score": scores.memorization_score,
                 "edit_distance": scores.edit_distance, "approximate": scores.approximate, "bleu": scores.bleu}
        try:
            write_scores(run.path, attrs, match, corpus)
        except OSError as exc:
            raise MiaError(f"cannot write the scores beside the run ({scores_path(run.path)}): {exc}; "
                           "use --no-save to only print them") from None
        if corpus is None:
            summary["corpus"] = _stored_corpus(run.path, labels)
    return summary


def _stored_corpus(run_path: Path, labels: np.ndarray) -> dict[str, Any] | None:
    from mia_core.scoring.store import read_scores

    stored = read_scores(scores_path(run_path))["corpus"]
    if stored is None:
        return None
    out = _corpus_summary(stored["attrs"], stored["data"], labels)
    out["from_earlier_scoring"] = True
    return out


def _pct(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return f"{r['count']}/{r['n']}  (n/a)"
    lo, hi = r["wilson95"]
    return f"{r['count']}/{r['n']} = {100 * r['rate']:.1f}%  [95% CI {100 * lo:.1f}–{100 * hi:.1f}%]"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :func:`score_run` as plain-text tables."""
    s = summary
    lines = [f"Run {s['run']}",
             f"  model {s['model']}, method {s['method']}, prefix {s['prefix_tokens']} tokens "
             f"({s['prefix_loc']}), suffix {s['suffix_tokens']} tokens, k = {s['k']}",
             f"  rows {s['rows']}, eligible {s['eligible']} (suffix of at least k tokens)", ""]
    rows = [["exact extraction (first k tokens)", _pct(s["extraction"])],
            [f"approximate ({s['approximate']['criterion']})", _pct(s["approximate"])],
            ["Pythia memorization score (mean)", f"{s['mean_memorization_score']:.3f}"
             if s["mean_memorization_score"] is not None else "n/a"],
            ["matched prefix length mean / median / max",
             f"{s['matched_length']['mean']:.2f} / {s['matched_length']['median']:.0f} / "
             f"{s['matched_length']['max']}"]]
    lines += [_table(rows, ["measure", "value"]), ""]
    for title, key in (("by label", "by_label"), ("by prefix location", "by_prefix_loc"),
                       ("by prefix start (token offset)", "by_prefix_start")):
        group = [[name, str(g["rows"]), _pct(g["extraction"]), _pct(g["approximate"]),
                  f"{g['mean_matched_length']:.2f}" if g["mean_matched_length"] is not None else "n/a"]
                 for name, g in s[key].items()]
        lines += [_table(group, [title, "rows", "extraction", "approximate", "mean matched"]), ""]
    hist = s["matched_length"]["histogram"]
    nonzero = [(int(k), v) for k, v in hist.items() if v]
    lines.append("matched length distribution: " + ", ".join(f"{k}:{v}" for k, v in nonzero))
    c = s.get("corpus")
    if c:
        lines += ["", f"Corpus membership (window {c['window']} tokens, index {c['index']}, "
                      f"{c['index_tokens']} tokens)",
                  _table([["generations with a verbatim corpus window", _pct(c["memorized"])],
                          ["longest match mean / median / max",
                           f"{c['longest_match']['mean']:.1f} / {c['longest_match']['median']:.0f} / "
                           f"{c['longest_match']['max']}"],
                          ["unique memorized windows (occurrences)",
                           f"{c['unique_windows']} ({c['window_occurrences']})"]]
                         + [[f"  label {lab}", _pct(r)] for lab, r in c["by_label"].items()],
                         ["measure", "value"])]
    if c and any("text" in w for w in c["top_windows"]):
        lines += ["", "most frequent memorized windows:"]
        lines += [f"  {w['count']}× (corpus {w['corpus_count']}×, {', '.join(w['documents']) or '?'}): "
                  f"{w['text']!r}" for w in c["top_windows"][:5]]
    for note in s.get("notes", []):
        lines.append(f"note: {note}")
    if s.get("scores_file"):
        lines.append(f"scores saved to {s['scores_file']}")
    return "\n".join(lines)
