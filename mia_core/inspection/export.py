"""``mia export``: one record per run row, with the texts a reader needs and every per-row score.

A record holds the row (``index``), its map row (``prefix_index``), sample id and label, the
prefix's start offset, the prefix and the true suffix as text (decoded with the map's tokenizer),
the generation as text, and, when the run was scored (``<run>.scores.h5``), every per-row score as ``score_<name>`` and
``corpus_<name>``. A teacher-forced run generated nothing: its per-position argmax tokens are not
a generation and are exported only as ``teacher_forced_argmax_tokens`` with ``--tokens``, and the
scores that compare a generated text (approximate memorization, edit distance, BLEU) are absent,
as the summary withholds them; :func:`metadata` says why (docs/report.md).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.hdf5 import plain

FORMATS = ("jsonl", "csv", "parquet")
PARQUET_HINT = "pip install pyarrow (installed by install.sh; listed in constraints.txt)"


def _map_texts(run: Any, tokenizer: Any, prefix_rows: np.ndarray) -> tuple[dict[int, str], dict[int, str]]:
    """Prefix and true-suffix texts of each distinct map row, decoded once."""
    pmap = run.prefix_map
    unique = np.unique(prefix_rows)
    prefixes = pmap.read("prefixes", unique)
    suffixes = pmap.read("suffixes", unique)
    lengths = pmap.read("suffix_lengths", unique)
    pre = tokenizer.decode_batch([[int(t) for t in p if t >= 0] for p in prefixes])
    suf = tokenizer.decode_batch([[int(t) for t in s[:n]] for s, n in zip(suffixes, lengths, strict=True)])
    return ({int(r): t for r, t in zip(unique, pre, strict=True)},
            {int(r): t for r, t in zip(unique, suf, strict=True)})


def _scores(run_path: Path, rows: int) -> dict[str, np.ndarray]:
    """Per-row score columns of the run's scores file (none when it was not scored)."""
    from mia_core.formats.scores import read_scores, scores_path

    path = scores_path(run_path)
    if not path.is_file():
        return {}
    try:
        stored = read_scores(path)
    except (OSError, KeyError) as exc:
        raise MiaError(f"the scores file {path} cannot be read ({exc}); score the run again with mia score") from None
    out = {f"score_{k}": v for k, v in stored["match"].items() if np.ndim(v) == 1 and len(v) == rows}
    if stored["corpus"]:
        out.update({f"corpus_{k}": v for k, v in stored["corpus"]["data"].items()
                    if np.ndim(v) == 1 and len(v) == rows})
    return out


#: Scores that compare a generated text with the true one: a teacher-forced run has none.
GENERATION_ONLY = ("score_approximate", "score_edit_distance", "score_bleu")
TEACHER_FORCED_REASON = ("teacher-forced run: no generated text to compare, so approximate memorization (and its "
                         "edit distance and BLEU) does not apply; the summary withholds it too")


def metadata(run_path: str | os.PathLike) -> dict[str, Any]:
    """What an export says about itself: the run, its kind, and the fields absent for that kind with why."""
    from mia_core.formats.runs import RunKind, open_run

    run = open_run(run_path)
    teacher_forced = run.kind is RunKind.TEACHER_FORCED
    absent = {name: TEACHER_FORCED_REASON for name in GENERATION_ONLY} if teacher_forced else {}
    agreement = ("score_next_token_accuracy: fraction of the k positions where the model's argmax given the true "
                 "context is the true token (teacher-forced)" if teacher_forced else
                 "score_position_agreement: fraction of the k positions where the generated token is the true one "
                 "(Biderman et al. 2023's Pythia memorization score)")
    return {"run": run.path.name, "method": run.method, "absent_fields": absent, "per_position_figure": agreement,
            "rows": "every run row; score_eligible marks the rows the summary's figures count (true suffix of at "
                    "least k tokens, request not failed)"}


def records(run_path: str | os.PathLike, tokens: bool = False, text: bool = True) -> Iterator[dict[str, Any]]:
    """The export records of a run, in row order."""
    from mia_core import registry
    from mia_core.formats.runs import STANDARD_COLUMNS, RunKind, open_run

    run = open_run(run_path)
    if not run.kind.has_map:  # a divergence run: the prompt instead of a prefix and true suffix
        yield from _divergence_records(run, tokens, _scores(run.path, len(run)))
        return
    teacher_forced = run.kind is RunKind.TEACHER_FORCED
    prefix_rows = run.prefix_rows()
    pmap = run.prefix_map
    ids, labels = pmap.read("sample_id", prefix_rows), pmap.read("sample_label", prefix_rows)
    try:
        starts = pmap.read("prefix_start", prefix_rows)
    except KeyError:  # maps made before prefix_start was recorded
        starts = None
    prefix_text: dict[int, str] = {}
    suffix_text: dict[int, str] = {}
    if text:
        try:
            tokenizer = registry.tokenizers.create(pmap.tokenizer_name)
        except MiaError as exc:
            raise MiaError(f"the map's tokenizer {pmap.tokenizer_name!r} cannot be loaded to decode the prefixes "
                           f"({str(exc).splitlines()[0]}); export token ids only with --no-text") from None
        prefix_text, suffix_text = _map_texts(run, tokenizer, prefix_rows)
    generations = run.read("text")
    gen_tokens = run.tokens() if tokens else None
    prefixes = run.prefixes() if tokens else None
    suffixes = run.suffixes() if tokens else None
    lengths = run.read("lengths")
    extra = {c: run.read(c) for c in run.columns if c not in STANDARD_COLUMNS}
    scores = _scores(run.path, len(run))
    if teacher_forced:  # withheld by the summary, so never exported either
        scores = {k: v for k, v in scores.items() if k not in GENERATION_ONLY}
    for i in range(len(run)):
        r = int(prefix_rows[i])
        rec: dict[str, Any] = {"index": i, "prefix_index": r, "sample_id": plain(ids[i]),
                               "label": plain(labels[i]) or None,
                               "prefix_start": None if starts is None else int(starts[i])}
        if text:
            rec["prefix_text"] = prefix_text[r]
            rec["true_suffix_text"] = suffix_text[r]
            if not teacher_forced:
                rec["generation_text"] = str(generations[i])
        if tokens:
            rec["prefix_tokens"] = [int(t) for t in prefixes[i]]
            rec["true_suffix_tokens"] = [int(t) for t in suffixes[i]]
            name = "teacher_forced_argmax_tokens" if teacher_forced else "generated_tokens"
            rec[name] = [int(t) for t in gen_tokens[i]]
        _add_columns(rec, i, extra, scores, lengths, tokens)
        yield rec


def _add_columns(rec: dict[str, Any], i: int, extra: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                 lengths: np.ndarray, tokens: bool) -> None:
    """Row ``i``'s other run columns and stored scores; per-position values (logprobs...) only with the tokens."""
    for name, values in extra.items():
        value = values[i]
        if isinstance(value, np.ndarray):
            if tokens:
                rec[name] = plain(value[:lengths[i]])
            continue
        rec[name] = plain(value)
    for name, values in scores.items():
        rec[name] = plain(values[i])


def _divergence_records(run: Any, tokens: bool, scores: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """Records of a divergence run: the prompt instead of a prefix and true suffix."""
    from mia_core.divergence.prompts import STRATEGY, prompt_texts
    from mia_core.formats.runs import STANDARD_COLUMNS

    prompts = prompt_texts(run)
    rows = run.prefix_rows()
    words = (run.attrs.get(STRATEGY) or {}).get("prompt_word") or []
    generations = run.read("text")
    gen_tokens = run.tokens() if tokens else None
    prompt_tokens = run.prefixes() if tokens and run.has("prefixes") else None
    lengths = run.read("lengths")
    extra = {c: run.read(c) for c in run.columns if c not in STANDARD_COLUMNS}
    for i in range(len(run)):
        r = int(rows[i])
        rec: dict[str, Any] = {"index": i, "prompt_index": r, "word": words[r] if r < len(words) else None,
                               "prompt_text": prompts[i], "generation_text": str(generations[i])}
        if tokens:
            rec["prompt_tokens"] = None if prompt_tokens is None else [int(t) for t in prompt_tokens[i]]
            rec["generated_tokens"] = [int(t) for t in gen_tokens[i]]
        _add_columns(rec, i, extra, scores, lengths, tokens)
        yield rec


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join("" if v is None else str(v) for v in value)
    return "" if value is None else value


def write_stream(rows: Iterable[dict[str, Any]], fmt: str, stream: IO[str]) -> int:
    """JSON lines or CSV (token lists as space-separated ids) to a text stream, row by row (a run of any
    size in flat memory); returns the rows written."""
    rows = iter(rows)
    written = 0
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
        return written
    first = next(rows, None)
    writer = csv.DictWriter(stream, fieldnames=list(first) if first is not None else ["index"])
    writer.writeheader()
    for row in itertools.chain([first] if first is not None else [], rows):
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        written += 1
    return written


def parquet_bytes(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> bytes:
    """A Parquet file's bytes through pyarrow (token lists as list<int64> columns); ``meta`` goes
    into the schema's metadata under the key ``mia`` (JSON)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MiaError(f"--format parquet needs pyarrow, which is not installed: {PARQUET_HINT}") from None
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pylist(rows)
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"mia": json.dumps(meta).encode()})
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
