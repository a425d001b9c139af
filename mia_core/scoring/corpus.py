"""Corpus membership of a run's generations (``mia score --index``), one block of rows at a time.

Each block's generations are looked up in the corpus index (their longest match, the memorized ``window``-grams
they hold, their memorized spans); the per-row results go to the scores file with the block's other columns,
and the summary is counted as the blocks go: rows and memorized rows by label, a histogram of the longest
matches (exact for their mean, median and maximum). What is kept across blocks grows with what is memorized
(the distinct windows and their spans), not with the rows.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formatting import rate
from mia_core.matching.tokens import memorized_spans, span_counts

TOP_WINDOWS = 20


class MembershipCounts:
    """Rows and memorized rows by label, and the longest matches' histogram, over the rows that did not fail."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()
        self.memorized: Counter[str] = Counter()
        self.longest = np.zeros(1, dtype=np.int64)  # rows whose longest match is 0, 1, 2, ... tokens

    def add(self, longest: np.ndarray, memorized: np.ndarray, labels: np.ndarray, failed: np.ndarray) -> None:
        ok = ~np.asarray(failed, dtype=bool)
        longest, memorized, labels = np.asarray(longest)[ok], np.asarray(memorized, dtype=bool)[ok], labels[ok]
        for label in set(labels.tolist()):
            mine = labels == label
            self.rows[label] += int(mine.sum())
            self.memorized[label] += int(memorized[mine].sum())
        counts = np.bincount(longest.astype(np.int64), minlength=len(self.longest))
        counts[:len(self.longest)] += self.longest
        self.longest = counts

    def figures(self) -> dict[str, Any]:
        """The memorized rate overall and by label, and the longest match's mean, median and maximum."""
        n = int(self.longest.sum())
        lengths = np.arange(len(self.longest))
        longest: dict[str, Any] = {"mean": None, "median": None, "max": None}
        if n:
            cumulative = np.cumsum(self.longest)
            middle = [int(np.searchsorted(cumulative, rank, side="right")) for rank in ((n - 1) // 2, n // 2)]
            longest = {"mean": float(np.float64((lengths * self.longest).sum()) / n),
                       "median": float(np.mean(middle)), "max": int(np.flatnonzero(self.longest).max())}
        return {"memorized": rate(sum(self.memorized.values()), n), "longest_match": longest,
                "by_label": {(label or "unlabelled"): rate(self.memorized[label], self.rows[label])
                             for label in sorted(self.rows)}}


class CorpusTally:
    """Corpus membership of a run against the index at ``index_path``, gathered block by block (:meth:`add`)."""

    def __init__(self, run: Any, index_path: str | os.PathLike, window: int) -> None:
        from mia_core.formats.corpus_index.reader import CorpusIndex

        if window < 1:
            raise MiaError("--window must be at least 1")
        self.index = CorpusIndex(index_path)
        run_fp = run.attrs.get("tokenizer_fingerprint") or run.prefix_map.tokenizer_fingerprint
        if str(run_fp) != self.index.fingerprint:
            raise MiaError(f"index {self.index.folder} was built with tokenizer {self.index.meta.get('tokenizer')!r} "
                           f"(fingerprint {self.index.fingerprint[:12]}), but the run uses "
                           f"{run.attrs.get('tokenizer')!r} (fingerprint {str(run_fp)[:12]}): refusing to compare")
        longest_gen = _longest_generation(run)
        if window > longest_gen:
            raise MiaError(f"--window {window} is longer than every generation of {run.path.name} "
                           f"(longest: {longest_gen} tokens)")
        self.window = window
        meta = self.index.meta
        self.attrs = {"index": str(Path(index_path).resolve()), "window": window, "index_tokens": self.index.tokens,
                      "index_tokenizer": meta.get("tokenizer"), "index_source": meta.get("source")}
        self.windows: Counter[tuple[int, ...]] = Counter()
        self.counts = MembershipCounts()
        self._span_rows: list[np.ndarray] = []
        self._span_lengths: list[np.ndarray] = []
        self._span_tokens: list[np.ndarray] = []
        self._data: dict[str, Any] | None = None

    def add(self, rows: slice, generations: list[np.ndarray], labels: np.ndarray,
            failed: np.ndarray) -> dict[str, np.ndarray]:
        """One block of rows: its per-row columns (``corpus/longest_match``, ``corpus/memorized``)."""
        found = self.index.longest_matches(generations, self.window)
        self.windows.update(found.windows)
        span_rows, offsets, tokens = memorized_spans(generations, found.windows, self.window)
        self._span_rows.append(span_rows + rows.start)
        self._span_lengths.append(np.diff(offsets))
        self._span_tokens.append(tokens)
        self.counts.add(found.longest, found.memorized, labels, failed)
        return {"corpus/longest_match": found.longest, "corpus/memorized": found.memorized}

    def data(self) -> dict[str, Any]:
        """The scores file's ``corpus`` datasets other than the per-row ones (made once, after the last block: each
        distinct window is counted in the corpus)."""
        if self._data is None:
            self._data = self._made_data()
        return self._data

    def _made_data(self) -> dict[str, Any]:
        items = sorted(self.windows.items(), key=lambda kv: (-kv[1], kv[0]))
        lengths = np.concatenate(self._span_lengths) if self._span_lengths else np.zeros(0, np.int64)
        return {"windows": np.array([k for k, _ in items], dtype=np.int32).reshape(-1, self.window),
                "span_row": np.concatenate(self._span_rows) if self._span_rows else np.zeros(0, np.int64),
                "span_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                "span_tokens": np.concatenate(self._span_tokens) if self._span_tokens else np.zeros(0, np.int64),
                "window_count": np.array([v for _, v in items], dtype=np.int64),
                "window_corpus_count": np.array([self.index.count(k) for k, _ in items], dtype=np.int64),
                # where the most frequent memorized windows come from (document ids of the corpus)
                "top_window_documents": np.array([", ".join(self.index.documents_of(k, limit=3))
                                                  for k, _ in items[:TOP_WINDOWS]], dtype=object)}


def _longest_generation(run: Any) -> int:
    """The longest generation of a run, from its lengths column read a slice at a time."""
    return max((int(run.read("lengths", rows).max(initial=0)) for rows in run.row_slices(1 << 16)), default=0)


def corpus_summary(attrs: dict[str, Any], data: dict[str, Any], counts: MembershipCounts) -> dict[str, Any]:
    """The corpus-membership figures: ``counts`` over the rows whose request did not fail, the windows of ``data``."""
    window_counts = data["window_count"]
    figures = counts.figures()
    return {
        "index": attrs["index"], "window": int(attrs["window"]), "index_tokens": int(attrs["index_tokens"]),
        "memorized": figures["memorized"], "longest_match": figures["longest_match"],
        "unique_windows": int(len(window_counts)), "window_occurrences": int(window_counts.sum()),
        "memorized_spans": span_counts(data),
        "frequency_of_frequencies": {str(r): n for r, n in sorted(Counter(window_counts.tolist()).items())},
        "top_windows": [{"tokens": [int(t) for t in data["windows"][i]], "count": int(window_counts[i]),
                         "corpus_count": int(data["window_corpus_count"][i]),
                         "documents": _document_ids(data.get("top_window_documents"), i)}
                        for i in range(min(TOP_WINDOWS, len(window_counts)))],
        "by_label": figures["by_label"],
    }


def _document_ids(values: Any, i: int) -> list[str]:
    """The document ids stored for the i-th most frequent window (``"a, b, c"``)."""
    from mia_core.formats.hdf5 import as_str

    if values is None or i >= len(values):
        return []
    return [x for x in as_str(values[i]).split(", ") if x]


def stored_corpus_summary(run: Any, scores_file: Path) -> dict[str, Any] | None:
    """The corpus-membership figures an earlier ``mia score --index`` stored (None when it stored none): its
    per-row columns read a slice at a time."""
    from mia_core.formats.scores import CORPUS_ROW_COLUMNS, read_corpus_scores, read_row_scores

    stored = read_corpus_scores(scores_file, per_row=False)
    if stored is None:
        return None
    counts = MembershipCounts()
    names = {name: ("corpus", name) for name in CORPUS_ROW_COLUMNS}
    for rows in run.row_slices():
        columns = read_row_scores(scores_file, names, rows)
        counts.add(columns["longest_match"], columns["memorized"], run.labels(rows), run.failed_rows(rows))
    out = corpus_summary(stored["attrs"], stored["data"], counts)
    out["from_earlier_scoring"] = True
    return out
