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


#: Run rows read, decoded and written at a time: an export of any size holds one slice (about 4 MB of texts).
EXPORT_ROWS = 4_096
#: Rows decoded in one tokenizer call: the token ids go to it as Python lists (about 36 bytes a token).
DECODE_ROWS = 1_024


def _map_texts(pmap: Any, tokenizer: Any, prefix_rows: np.ndarray) -> tuple[dict[int, str], dict[int, str]]:
    """Prefix and true-suffix texts of each distinct map row of ``prefix_rows``, decoded once."""
    unique = np.unique(prefix_rows)
    prefixes = pmap.read("prefixes", unique)
    suffixes = pmap.read("suffixes", unique)
    lengths = pmap.read("suffix_lengths", unique)
    pre = _decode(tokenizer, [p[p >= 0] for p in prefixes])
    suf = _decode(tokenizer, [s[:n] for s, n in zip(suffixes, lengths, strict=True)])
    return ({int(r): t for r, t in zip(unique, pre, strict=True)},
            {int(r): t for r, t in zip(unique, suf, strict=True)})


def _decode(tokenizer: Any, rows: list[np.ndarray]) -> list[str]:
    """The texts of token rows, ``DECODE_ROWS`` rows per tokenizer call."""
    return [text for at in range(0, len(rows), DECODE_ROWS)
            for text in tokenizer.decode_batch([row.tolist() for row in rows[at:at + DECODE_ROWS]])]


class _Scores:
    """The per-row columns of the run's scores file (none when it was not scored), read a slice at a time."""

    def __init__(self, run_path: Path, rows: int, leave_out: tuple[str, ...] = ()) -> None:
        from mia_core.formats.scores import row_score_names, scores_path

        self.path = scores_path(run_path)
        self.names: dict[str, tuple[str, str]] = {}
        if not self.path.is_file():
            return
        try:
            found = row_score_names(self.path, rows)
        except (OSError, KeyError) as exc:
            raise MiaError(f"the scores file {self.path} cannot be read ({exc}); score the run again with "
                           "mia score") from None
        prefix = {"match": "score_", "corpus": "corpus_"}
        self.names = {prefix[group] + key.split("/", 1)[1]: (group, name) for key, (group, name) in found.items()}
        self.names = {k: v for k, v in self.names.items() if k not in leave_out}

    def read(self, rows: slice) -> dict[str, np.ndarray]:
        from mia_core.formats.scores import read_row_scores

        return read_row_scores(self.path, self.names, rows) if self.names else {}


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
    """The export records of a run, in row order, read from the files ``EXPORT_ROWS`` rows at a time (memory
    does not grow with the run)."""
    from mia_core import registry
    from mia_core.formats.runs import RunKind, open_run

    run = open_run(run_path)
    if not run.kind.has_map:  # a divergence run: the prompt instead of a prefix and true suffix
        yield from _divergence_records(run, tokens, _Scores(run.path, len(run)))
        return
    teacher_forced = run.kind is RunKind.TEACHER_FORCED
    # withheld by the summary for a teacher-forced run, so never exported either
    scores = _Scores(run.path, len(run), GENERATION_ONLY if teacher_forced else ())
    tokenizer = None
    if text:
        pmap = run.prefix_map
        try:
            tokenizer = registry.tokenizers.create(pmap.tokenizer_name)
        except MiaError as exc:
            raise MiaError(f"the map's tokenizer {pmap.tokenizer_name!r} cannot be loaded to decode the prefixes "
                           f"({str(exc).splitlines()[0]}); export token ids only with --no-text") from None
    for start in range(0, len(run), EXPORT_ROWS):
        rows = slice(start, min(start + EXPORT_ROWS, len(run)))
        yield from _map_run_records(run, rows, tokenizer, tokens, scores.read(rows))


def _map_run_records(run: Any, rows: slice, tokenizer: Any, tokens: bool,
                     scores: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """The records of run rows ``rows`` (a run over a prefix map); texts decoded with ``tokenizer`` if given."""
    from mia_core.formats.runs import STANDARD_COLUMNS, RunKind

    teacher_forced = run.kind is RunKind.TEACHER_FORCED
    prefix_rows = run.read("prefix_row", rows)
    pmap = run.prefix_map
    ids, labels = pmap.read("sample_id", prefix_rows), pmap.read("sample_label", prefix_rows)
    try:
        starts = pmap.read("prefix_start", prefix_rows)
    except KeyError:  # maps made before prefix_start was recorded
        starts = None
    prefix_text, suffix_text = _map_texts(pmap, tokenizer, prefix_rows) if tokenizer is not None else ({}, {})
    generations = run.read("text", rows)
    lengths = run.read("lengths", rows)
    gen_tokens = run.read("tokens", rows) if tokens else None
    prefixes = run.prefixes(rows) if tokens else None
    suffixes = run.suffixes(rows) if tokens else None
    extra = {c: run.read(c, rows) for c in run.columns if c not in STANDARD_COLUMNS}
    for j, i in enumerate(range(rows.start, rows.stop)):
        r = int(prefix_rows[j])
        rec: dict[str, Any] = {"index": i, "prefix_index": r, "sample_id": plain(ids[j]),
                               "label": plain(labels[j]) or None,
                               "prefix_start": None if starts is None else int(starts[j])}
        if tokenizer is not None:
            rec["prefix_text"] = prefix_text[r]
            rec["true_suffix_text"] = suffix_text[r]
            if not teacher_forced:
                rec["generation_text"] = str(generations[j])
        if tokens:
            rec["prefix_tokens"] = [int(t) for t in prefixes[j]]
            rec["true_suffix_tokens"] = [int(t) for t in suffixes[j]]
            name = "teacher_forced_argmax_tokens" if teacher_forced else "generated_tokens"
            rec[name] = [int(t) for t in gen_tokens[j, :lengths[j]]]
        _add_columns(rec, j, extra, scores, lengths, tokens)
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


def _divergence_records(run: Any, tokens: bool, scores: _Scores) -> Iterator[dict[str, Any]]:
    """Records of a divergence run: the prompt instead of a prefix and true suffix, ``EXPORT_ROWS`` at a time."""
    from mia_core.divergence.prompts import STRATEGY
    from mia_core.formats.runs import STANDARD_COLUMNS

    prompts = [str(t) for t in run.read("prompt_texts")]  # one per distinct prompt, not per row
    words = (run.attrs.get(STRATEGY) or {}).get("prompt_word") or []
    for start in range(0, len(run), EXPORT_ROWS):
        rows = slice(start, min(start + EXPORT_ROWS, len(run)))
        prompt_rows, lengths = run.read("prefix_row", rows), run.read("lengths", rows)
        generations = run.read("text", rows)
        gen_tokens = run.read("tokens", rows) if tokens else None
        prompt_tokens = run.prefixes(rows) if tokens and run.has("prefixes") else None
        extra = {c: run.read(c, rows) for c in run.columns if c not in STANDARD_COLUMNS}
        chunk_scores = scores.read(rows)
        for j, i in enumerate(range(rows.start, rows.stop)):
            r = int(prompt_rows[j])
            rec: dict[str, Any] = {"index": i, "prompt_index": r, "word": words[r] if r < len(words) else None,
                                   "prompt_text": prompts[r], "generation_text": str(generations[j])}
            if tokens:
                rec["prompt_tokens"] = None if prompt_tokens is None else [int(t) for t in prompt_tokens[j]]
                rec["generated_tokens"] = [int(t) for t in gen_tokens[j, :lengths[j]]]
            _add_columns(rec, j, extra, chunk_scores, lengths, tokens)
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


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MiaError(f"--format parquet needs pyarrow, which is not installed: {PARQUET_HINT}") from None
    return pa, pq


def _with_meta(schema: Any, meta: dict[str, Any] | None) -> Any:
    if meta is None:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), b"mia": json.dumps(meta).encode()})


def parquet_bytes(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> bytes:
    """A Parquet file's bytes through pyarrow (token lists as list<int64> columns); ``meta`` goes
    into the schema's metadata under the key ``mia`` (JSON)."""
    pa, pq = _pyarrow()
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pylist(rows)
    pq.write_table(table.replace_schema_metadata(_with_meta(table.schema, meta).metadata), sink)
    return sink.getvalue().to_pybytes()


def write_parquet(rows: Iterable[dict[str, Any]], stream: IO[bytes], meta: dict[str, Any] | None = None) -> int:
    """The same Parquet file written to a binary stream one row group of ``EXPORT_ROWS`` rows at a time (a run of
    any size in flat memory); returns the rows written. The schema is the first group's, a column without any
    value there (a label absent from the first rows) taken as text."""
    pa, pq = _pyarrow()
    writer = None
    written = 0
    rows = iter(rows)
    try:
        while group := list(itertools.islice(rows, EXPORT_ROWS)):
            if writer is None:
                schema = pa.Table.from_pylist(group).schema
                schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema])
                writer = pq.ParquetWriter(stream, _with_meta(schema, meta))
            writer.write_table(pa.Table.from_pylist(group, schema=writer.schema))
            written += len(group)
        if writer is None:  # no rows: an empty file with the one column every record has
            writer = pq.ParquetWriter(stream, _with_meta(pa.schema([("index", pa.int64())]), meta))
    finally:
        if writer is not None:
            writer.close()
    return written
