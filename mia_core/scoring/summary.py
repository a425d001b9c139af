"""``score_run``: score a run against its true suffixes (and optionally a corpus index), store
the scores beside it, and summarise them; ``format_summary`` prints the summary as tables."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from mia_core.divergence.scoring import format_divergence, score_divergence_run
from mia_core.errors import MiaError
from mia_core.formats.runs import Run, RunKind
from mia_core.formats.scores import scores_path, write_scores_blocks
from mia_core.formatting import format_number, format_rate, per_position_name
from mia_core.matching.probabilistic import ProbabilityTally
from mia_core.matching.tally import MatchTally
from mia_core.matching.tokens import iter_run_matches, longest_suffix, resolve_k, run_max_length
from mia_core.scoring.corpus import CorpusTally, stored_corpus_summary
from mia_core.scoring.corpus import corpus_summary as corpus_summary_of
from mia_core.text_table import text_table


def load_run(path: str | os.PathLike) -> Any:
    """Open a run and check it can be scored (rows present, true suffixes known)."""
    from mia_core.formats.runs import open_run

    run = open_run(path)
    if len(run) == 0:
        raise MiaError(f"run {run.path} is empty: it has no generated rows to score")
    return run


def _longest_true_suffix(run: Any) -> int:
    longest = longest_suffix(run)
    if not longest:
        raise MiaError(f"run {run.path} has no true suffixes to compare with (its prefix map was made "
                       "with --suffix-tokens 0 or every suffix is empty)")
    return longest



def failed_rows(run: Any) -> np.ndarray:
    """Rows whose request failed (API error, malformed reply, refusal...): a non-empty ``error``.
    Local runs have no such column and no failed rows."""
    if not run.has("error"):
        return np.zeros(len(run), dtype=bool)
    return np.array([bool(str(e).strip()) for e in run.read("error")], dtype=bool)


def _decode_windows(windows: list[dict[str, Any]], tokenizer_name: str) -> None:
    from mia_core import registry

    tokenizer = registry.tokenizers.create(tokenizer_name)
    for w, text in zip(windows, tokenizer.decode_batch([w["tokens"] for w in windows]), strict=True):
        w["text"] = text


def _detokenizer(tokenizer_name: str) -> Any:
    from mia_core import registry

    try:
        tokenizer = registry.tokenizers.create(tokenizer_name)
    except MiaError as exc:
        raise MiaError(f"--bleu compares detokenized text, but the run's tokenizer {tokenizer_name!r} cannot be "
                       f"loaded: {str(exc).splitlines()[0]}") from None
    return tokenizer.decode_batch


@dataclass(frozen=True)
class ScoreOptions:
    """How to score a run (the keywords of :func:`score_run`)."""

    k: int | None = None
    edit_threshold: float = 0.1
    bleu: bool = False
    bleu_threshold: float = 0.75
    index: str | os.PathLike | None = None
    window: int = 50
    save: bool = True
    decode: bool = False
    queries: Sequence[int] | None = None
    target: float | None = None


def score_run(path: str | os.PathLike, k: int | None = None, edit_threshold: float = 0.1,
              bleu: bool = False, bleu_threshold: float = 0.75, index: str | os.PathLike | None = None,
              window: int = 50, save: bool = True, decode: bool = False,
              queries: Sequence[int] | None = None, target: float | None = None) -> dict[str, Any]:
    """Score one run and return its summary (a JSON-ready dict with its ``kind``, a ``RunKind`` value);
    writes ``<run>.scores.h5`` if ``save``.

    ``k`` defaults to min(the map's suffix length, the run's max_length) (:func:`resolve_k`).
    Every rate, mean and distribution is over the *eligible* rows: suffix of at least k tokens
    and request not failed. ``bleu`` decodes with the run's tokenizer (Ippolito et al. 2022).
    ``index``/``window`` add corpus membership; ``decode`` shows the memorized windows as text.
    ``queries``/``target``: the (n, target)-discoverable counts of probabilistic extraction.
    A divergence run has its own scorer (:data:`SCORERS`).
    """
    run = load_run(path)
    options = ScoreOptions(k, edit_threshold, bleu, bleu_threshold, index, window, save, decode, queries, target)
    return SCORERS.get(run.kind, _score_map_run)(run, options)


def _score_divergence(run: Run, options: ScoreOptions) -> dict[str, Any]:
    """No true suffixes: where each answer diverged, and what it emitted after (``mia_core.divergence``)."""
    if options.k is not None or options.bleu:
        raise MiaError(f"{run.path.name} is a divergence run: it has no true suffixes, so --k and --bleu do "
                       "not apply (give --index to find memorized text after the divergence)")
    return score_divergence_run(run, index=options.index, window=options.window, save=options.save,
                                decode=options.decode)


def _score_map_run(run: Run, options: ScoreOptions) -> dict[str, Any]:
    """A run over a prefix map: its rows against their true suffixes (generation, API, teacher-forced), scored,
    counted and saved one block of rows at a time, corpus membership (``--index``) too: memory does not grow with
    the run (docs/scale.md)."""
    k = resolve_k(run, _longest_true_suffix(run), options.k)
    corpus = CorpusTally(run, options.index, options.window) if options.index is not None else None
    tally = _RunTally(MatchTally(k), ProbabilityTally(run, k) if ProbabilityTally.applies(run) else None, corpus)
    blocks = _tallied_blocks(run, k, options, tally)
    if options.save:
        _save_scores(run, k, blocks, (lambda: {"attrs": corpus.attrs, "data": corpus.data()}) if corpus else None,
                     options)
    else:
        for _ in blocks:
            pass
    summary = _map_summary(run, k, tally, options)
    if corpus is not None:
        summary["corpus"] = corpus_summary = corpus_summary_of(corpus.attrs, corpus.data(), corpus.counts)
        if options.decode and corpus_summary["top_windows"]:
            _decode_windows(corpus_summary["top_windows"], _tokenizer_name(run))
        if run.kind is RunKind.TEACHER_FORCED:
            summary["notes"].append("corpus membership of a teacher-forced run looks at its per-position argmax "
                                    "tokens, which only form the model's own continuation up to the first mismatch")
    elif options.save:
        summary["corpus"] = _stored_corpus(run)
    return summary


def _tokenizer_name(run: Run) -> str:
    return str(run.attrs.get("tokenizer") or run.prefix_map.tokenizer_name)


@dataclass
class _RunTally:
    """What a run's summary is made of, gathered block by block (:func:`_tallied_blocks`)."""

    match: MatchTally
    probabilities: ProbabilityTally | None  # teacher-forced runs: p of each eligible row
    corpus: CorpusTally | None = None  # --index: corpus membership
    extracted: Counter = field(default_factory=Counter)  # extractions of each sample id


def _tallied_blocks(run: Run, k: int, options: ScoreOptions, tally: _RunTally
                    ) -> Iterator[tuple[slice, dict[str, np.ndarray | None]]]:
    """Each block of rows' scores (eligible: suffix of at least k tokens and request not failed) as the scores
    file's columns, counted into ``tally`` as they go."""
    detokenize = _detokenizer(_tokenizer_name(run)) if options.bleu else None
    for rows, scores in iter_run_matches(run, k, options.edit_threshold,
                                         options.bleu_threshold if options.bleu else None, detokenize):
        failed, labels = run.failed_rows(rows), run.labels(rows)
        scores = replace(scores, eligible=scores.eligible & ~failed)
        tally.match.add(scores, failed, labels, run.map_column("prefix_start", rows).astype(np.int64))
        if tally.probabilities is not None:
            tally.probabilities.add(rows, scores.eligible, labels)
        hits = run.read("prefix_row", rows)[scores.exact & scores.eligible]
        tally.extracted.update(str(i) for i in run.prefix_map.read("sample_id", hits))
        corpus = tally.corpus.add(rows, run.tokens(rows), labels, failed) if tally.corpus is not None else {}
        yield rows, {"k": scores.k, "eligible": scores.eligible, "failed": failed, "exact": scores.exact,
                     "matched_length": scores.matched_length, per_position_name(run.method)[0]: scores.agreement,
                     "edit_distance": scores.edit_distance, "approximate": scores.approximate, "bleu": scores.bleu,
                     **corpus}


def _map_summary(run: Run, k: int, tally: _RunTally, options: ScoreOptions) -> dict[str, Any]:
    pmap, method, every = run.prefix_map, run.method, tally.match.every
    summary: dict[str, Any] = {
        "run": str(run.path), "kind": run.kind.value,
        "scores_file": str(scores_path(run.path)) if options.save else None,
        "model": run.attrs.get("model"), "method": method, "prefix_map": str(pmap.folder),
        "dataset": pmap.attrs.get("dataset"), "prefix_tokens": pmap.prefix_tokens,
        "suffix_tokens": pmap.suffix_tokens, "prefix_loc": pmap.attrs.get("prefix_loc"),
        "temperature": run.attrs.get("temperature"), "max_length": run_max_length(run), "complete": run.complete,
        "rows": len(run), "k": k, "failed": every.failed,
        # short suffixes: not eligible although not failed (eligible already excludes the failed rows)
        "skipped_short_suffix": tally.match.short_suffix,
        "denominator": "eligible rows: true suffix of at least k tokens and request not failed",
    }
    summary.update(every.figures(method, k))
    summary["approximate"]["criterion"] = (
        f"BLEU >= {options.bleu_threshold} on detokenized text (sacrebleu; Ippolito et al. 2022)" if options.bleu
        else f"normalized token edit distance <= {options.edit_threshold} (mia's criterion, not Ippolito et al.'s)")
    summary["matched_length"] = tally.match.matched_length_summary()
    if run.kind is not RunKind.TEACHER_FORCED:
        summary["memorized_pythia"] = tally.match.fully_agreeing
    summary["by_label"] = tally.match.label_figures(method)
    summary["by_prefix_loc"] = {str(pmap.attrs.get("prefix_loc", "?")): every.figures(method, k)}
    summary["by_prefix_start"] = tally.match.start_figures(method)
    summary["extracted_samples"] = _extracted_samples(tally.extracted)
    chosen = {key: v for key, v in {"queries": options.queries, "target": options.target}.items() if v is not None}
    # None unless the run stores logprobs
    summary["probabilistic"] = tally.probabilities.summary(**chosen) if tally.probabilities is not None else None
    summary["notes"] = _notes(run, summary["failed"])
    summary["corpus"] = None
    return summary


def _extracted_samples(extracted: Counter) -> dict[str, Any]:
    """Distinct samples extracted, and how many were extracted once, twice, ... (from each sample id's
    extractions: the ids of the hits only are read)."""
    return {"unique": len(extracted),
            "frequency_of_frequencies": {str(r): n for r, n in sorted(Counter(extracted.values()).items())}}


def _notes(run: Run, failed: int) -> list[str]:
    notes = []
    if run.kind is RunKind.TEACHER_FORCED:
        notes.append("teacher-forced run: exact extraction and matched length equal greedy decoding; the "
                     "per-position figure is the next-token accuracy (teacher-forced: argmax = truth given the "
                     "true context), not a generation's position agreement; approximate memorization is withheld")
    if failed:
        notes.append(f"{failed} row(s) failed (their error is in the run's error column): they are "
                     "left out of every figure; `mia prompt --resume RUN --retry-failed` asks them again")
    num_strings = int(run.attrs.get("num_strings") or len(run))
    if len(run) < num_strings:  # a run with every row but some failed ones is not "interrupted"
        notes.append(f"the run is incomplete ({len(run)} of {num_strings} rows; interrupted?): only its "
                     "finished rows were scored")
    return notes


def _save_scores(run: Run, k: int, blocks: Iterator[tuple[slice, dict[str, np.ndarray | None]]],
                 corpus: Callable[[], dict[str, Any]] | None, options: ScoreOptions) -> None:
    attrs = {"run": run.path.name, "k": k, "edit_threshold": options.edit_threshold,
             "bleu_threshold": options.bleu_threshold if options.bleu else None, "method": run.method,
             "rows": len(run), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        write_scores_blocks(run.path, attrs, len(run), blocks, corpus)
    except OSError as exc:
        raise MiaError(f"cannot write the scores beside the run ({scores_path(run.path)}): {exc}; "
                       "use --no-save to only print them") from None


#: The scorer of each kind of run (every other kind: :func:`_score_map_run`).
SCORERS: dict[RunKind, Callable[[Run, ScoreOptions], dict[str, Any]]] = {RunKind.DIVERGENCE: _score_divergence}


def _stored_corpus(run: Run) -> dict[str, Any] | None:
    return stored_corpus_summary(run, scores_path(run.path))


def eligible_by_label(summary: dict[str, Any]) -> str:
    """``member 29 of 30, nonmember 12 of 30``: the eligible rows of each label, which every rate counts."""
    return ", ".join(f"{name} {g['eligible']} of {g['rows']}" for name, g in summary.get("by_label", {}).items())


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :func:`score_run` as plain-text tables, by the formatter of its kind (:data:`FORMATTERS`)."""
    kind = RunKind(summary.get("kind") or RunKind.GENERATION.value)  # summaries of an older mia record no kind
    return FORMATTERS.get(kind, _format_map_summary)(summary)


def _format_map_summary(summary: dict[str, Any]) -> str:
    s = summary
    key, pp_name = per_position_name(s["method"])
    ml = s["matched_length"]
    lines = [f"Run {s['run']}",
             f"  model {s['model']}, method {s['method']}, prefix {s['prefix_tokens']} tokens "
             f"({s['prefix_loc']}), suffix {s['suffix_tokens']} tokens, max_length {s.get('max_length')}, "
             f"k = {s['k']}",
             f"  rows {s['rows']}, failed {s['failed']}, suffix shorter than k {s['skipped_short_suffix']}, "
             f"eligible {s['eligible']} (every figure below is over the eligible rows: true suffix of at least k "
             "tokens, request not failed)",
             f"  eligible rows by label: {eligible_by_label(s)}", ""]
    rows = [["exact extraction (first k tokens)", format_rate(s["extraction"])],
            [f"approximate ({s['approximate']['criterion']})", format_rate(s["approximate"])],
            [f"{pp_name}, mean", format_number(s.get(key), ".3f")],
            ["matched prefix length mean / median / max",
             f"{format_number(ml['mean'])} / {format_number(ml['median'], '.0f')} / {format_number(ml['max'], 'd')}"]]
    lines += [text_table(["measure", "value"], rows), ""]
    for title, group_key in (("by label", "by_label"), ("by prefix location", "by_prefix_loc"),
                             ("by prefix start (token offset)", "by_prefix_start")):
        group = [[name, str(g["rows"]), str(g["failed"]), str(g["eligible"]), format_rate(g["extraction"]),
                  format_rate(g["approximate"]), format_number(g["mean_matched_length"]),
                  format_number(g.get(key), ".3f")]
                 for name, g in s[group_key].items()]
        lines += [text_table([title, "rows", "failed", "eligible", "extraction", "approximate", "mean matched",
                              pp_name], group),
                  "  (rates and means over each group's eligible rows)", ""]
    hist = ml["histogram"]
    nonzero = [(int(k), v) for k, v in hist.items() if v]
    lines.append("matched length distribution (eligible rows): " + (", ".join(f"{k}:{v}" for k, v in nonzero)
                                                                    or "none"))
    c = s.get("corpus")
    if c:
        lines += ["", f"Corpus membership (window {c['window']} tokens, index {c['index']}, "
                      f"{c['index_tokens']} tokens)",
                  text_table(["measure", "value"],
                         [["generations with a verbatim corpus window", format_rate(c["memorized"])],
                          ["longest match mean / median / max",
                           f"{format_number(c['longest_match']['mean'], '.1f')} / "
                           f"{format_number(c['longest_match']['median'], '.0f')}"
                           f" / {format_number(c['longest_match']['max'], 'd')}"],
                          ["unique memorized windows (occurrences)",
                           f"{c['unique_windows']} ({c['window_occurrences']})"],
                          ["distinct memorized spans, overlapping windows merged (occurrences)",
                           f"{c['memorized_spans']['distinct']} ({c['memorized_spans']['occurrences']})"
                           if c.get("memorized_spans") else "n/a (scored by an older mia: score again)"]]
                         + [[f"  label {lab}", format_rate(r)] for lab, r in c["by_label"].items()])]
    if c and any("text" in w for w in c["top_windows"]):
        lines += ["", "most frequent memorized windows:"]
        lines += [f"  {w['count']}× (corpus {w['corpus_count']}×, {', '.join(w['documents']) or '?'}): "
                  f"{w['text']!r}" for w in c["top_windows"][:5]]
    if s.get("probabilistic"):
        from mia_core.matching.probabilistic import format_summary as format_probabilistic

        lines += ["", format_probabilistic(s["probabilistic"])]
    for note in s.get("notes", []):
        lines.append(f"note: {note}")
    if s.get("scores_file"):
        lines.append(f"scores saved to {s['scores_file']}")
    return "\n".join(lines)


#: The summary formatter of each kind of run (every other kind: :func:`_format_map_summary`).
FORMATTERS: dict[RunKind, Callable[[dict[str, Any]], str]] = {RunKind.DIVERGENCE: format_divergence}
