"""``mia merge``: the shards of one run (``mia prompt --shard I/N``) put back into one run file.

Shard ``I`` of ``N`` holds run rows ``I, I+N, I+2N, ...`` in order (``mia_core.extraction.shards``).
Merging checks that the shards are one experiment (same map, model and decoding options),
that together they hold every row exactly once (no shard twice, none missing, each one
finished), and writes a run whose rows are in run order: with greedy decoding it equals the
run made without ``--shard``. It reads shards through the public run reader and writes with
``RunWriter``, under a ``.partial`` name renamed when complete; a killed merge is finished by
``mia merge --resume`` with the same shards. See docs/scale.md.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.extraction.shards import shard_of
from mia_core.formats.journal import being_written
from mia_core.formats.names import PARTIAL_SUFFIX
from mia_core.formats.runs import RUNS_DIR, Run, RunWriter, default_run_path, open_run

# Attributes that make two shards one experiment: they must be equal in every shard.
SAME_KEYS = ("prefix_map", "map_size", "model", "method", "num_strings", "max_length", "temperature", "top_k",
             "top_p", "seed", "retokenized", "tokenizer_fingerprint", "bos_prepended", "format_version")
# Model options that place the work (which GPUs, how many, how much memory) without changing
# what is computed: shards on different machines may set them differently.
PLACEMENT_OPTIONS = frozenset({"device", "threads", "tensor_parallel_size", "data_parallel_size",
                               "pipeline_parallel_size", "distributed_executor_backend", "gpu_memory_utilization",
                               "enforce_eager", "max_model_len"})
# Attributes RunWriter.create sets itself, and per-shard bookkeeping not carried over as is.
WRITER_KEYS = ("format_version", "mia_version", "max_length", "created", "complete", "rows", "columns", "shard",
               "elapsed_s", "generated_tokens", "tokens_per_s", "batch_size_used")
# Rows copied per append (one journal record, ~4 MB of 50-token rows): a compaction holds the journal, at most its
# threshold plus one record, so small records keep memory flat for runs of millions of rows.
CHUNK_ROWS = 8_192


def _setting(run: Run, key: str) -> Any:
    if key == "model_options":
        options = run.attrs.get("model_options") or {}
        return {k: v for k, v in options.items() if k not in PLACEMENT_OPTIONS}
    if key == "dtype":
        return (run.attrs.get("backend") or {}).get("dtype")
    value = run.attrs.get(key)
    return float(value) if key in ("temperature", "top_p") and value is not None else value


def _check_same(runs: Sequence[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in (*SAME_KEYS, "model_options", "dtype", "columns"):
            a, b = (_setting(first, key), _setting(run, key)) if key != "columns" else (first.columns, run.columns)
            if a != b:
                raise MiaError(f"cannot merge: {first.path} has {key}={a!r} but {run.path} has {key}={b!r} "
                               "(shards must come from the same map, model and decoding options)")
        for name in _static_names(first):
            if not np.array_equal(first.read(name), run.read(name)):
                raise MiaError(f"cannot merge: {first.path} and {run.path} hold different {name} (retokenized "
                               "with another tokenizer?)")


def _static_names(run: Run) -> list[str]:
    return [name for name in run.datasets if name not in run.columns]


def check_shards(paths: Sequence[str | os.PathLike]) -> tuple[list[Run], int]:
    """Open the shards, check they form one complete run; returns them by shard index and N."""
    if not paths:
        raise MiaError("mia merge needs the run files of the shards (mia prompt --shard I/N)")
    runs = [open_run(p) for p in paths]
    seen: dict[int, Run] = {}
    counts = set()
    for run in runs:
        if not run.attrs.get("shard"):
            raise MiaError(f"{run.path} is not a shard (it was made without --shard); merge only shards")
        shard = shard_of(run.attrs)
        counts.add(shard.count)
        if shard.index in seen:
            other = seen[shard.index]
            what = "is given twice" if other.path.resolve() == run.path.resolve() else f"and {other.path} are both"
            raise MiaError(f"cannot merge: shards overlap: {run.path} {what} shard {shard}")
        seen[shard.index] = run
    if len(counts) > 1:
        raise MiaError(f"cannot merge: the shards split the run in different ways (N = {sorted(counts)})")
    count = counts.pop()
    ordered = [seen[i] for i in sorted(seen)]
    _check_same(ordered)
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise MiaError(f"cannot merge: shard(s) {', '.join(missing)} missing; the merged run would have gaps")
    num_strings = int(ordered[0].attrs["num_strings"])
    for run in ordered:
        shard, expected = shard_of(run.attrs), shard_of(run.attrs).size(num_strings)
        if not run.complete or len(run) != expected:
            raise MiaError(f"cannot merge: shard {shard} ({run.path}) is unfinished: {len(run)} of {expected} rows; "
                           f"finish it with: mia prompt --resume {run.path}")
    return ordered, count


def _merged_attrs(runs: Sequence[Run], paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    attrs = {k: v for k, v in runs[0].attrs.items() if k not in WRITER_KEYS}
    elapsed = [float(r.attrs.get("elapsed_s") or 0.0) for r in runs]
    tokens = sum(int(r.attrs.get("generated_tokens") or 0) for r in runs)
    attrs.update(
        merged_from=[str(Path(p).resolve()) for p in paths],
        shard_count=len(runs),
        # Shards may run at once on different machines: their total compute time, not a wall time.
        elapsed_s=float(sum(elapsed)),
        generated_tokens=tokens,
        tokens_per_s=tokens / sum(elapsed) if sum(elapsed) > 0 else 0.0,
    )
    if "cost_usd" in attrs:
        attrs["cost_usd"] = float(sum(float(r.attrs.get("cost_usd") or 0.0) for r in runs))
    return attrs


def merge_runs(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
               resume: bool = False) -> Path:
    """Merge the shard run files ``paths`` into one run (default: a new run file next to the
    shards' map runs, named like a run of the model); returns its path. A merge that was killed
    leaves ``<target>.partial`` (with its journal): ``resume`` finishes it; without ``resume`` such
    a leftover of the same shards is an error naming the command that finishes it."""
    runs, count = check_shards(paths)
    first = runs[0]
    target = None if out is None else Path(out)
    if target is not None and target.suffix != ".h5":
        raise MiaError(f"a run file name must end in .h5, got {target}")
    leftovers = _interrupted_merges(first, paths, target)
    if resume:
        if not leftovers:
            raise MiaError("no interrupted merge of these shards to resume (no .partial run made from them in "
                           f"{_merge_folder(first, target)}); run mia merge without --resume")
        partial = leftovers[0]
        target = partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX))
        writer = RunWriter.reopen(partial)
    else:
        if leftovers:
            raise MiaError(f"a merge of these shards was interrupted and left {leftovers[0]}; finish it with: "
                           f"mia merge --resume {_shell_args(paths, out)} (or delete it and its journal)")
        if target is None:
            target = default_run_path(first.prefix_map.folder, str(first.attrs["model"]))
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        if partial.exists():
            raise MiaError(f"{partial} exists but is not a merge of these shards; delete it (and its .journal) or "
                           "choose another --out")
        if target.exists():
            raise MiaError(f"{target} already exists; refusing to overwrite it")
        declared = {name: (kind, width) for name, (kind, width) in first.attrs["columns"].items()}
        static = {name: first.read(name) for name in _static_names(first)}
        writer = RunWriter.create(partial, _merged_attrs(runs, paths), int(first.attrs["max_length"]), declared,
                                  static)
    try:
        _copy_rows(runs, count, writer)
        writer.finish()
    except BaseException:
        if not resume:
            writer.discard()  # the partial run and its journal
        else:
            writer.close()  # a resumed merge keeps what it had
        raise
    writer.close()
    if target.exists():
        raise MiaError(f"{target} appeared while merging; refusing to overwrite it (the merged rows are kept in "
                       f"{partial})")
    os.rename(partial, target)
    return target


def _copy_rows(runs: Sequence[Run], count: int, writer: RunWriter) -> None:
    """Append the run rows the writer does not hold yet, in run order (run row g is row g // N of shard g % N)."""
    first = runs[0]
    num_strings = int(first.attrs["num_strings"])
    for lo in range(writer.rows_done, num_strings, CHUNK_ROWS):
        rows = np.arange(lo, min(lo + CHUNK_ROWS, num_strings))
        shard_rows = {i: rows[rows % count == i] // count for i in range(count)}
        parts = {}
        for name in first.columns:
            pieces = [runs[i].read(name, slice(int(r[0]), int(r[-1]) + 1)) if len(r) else None
                      for i, r in shard_rows.items()]
            parts[name] = _interleave(pieces, rows, count)
        writer.append(parts)


def _merge_folder(first: Run, target: Path | None) -> Path:
    return target.parent if target is not None else first.prefix_map.folder / RUNS_DIR


def _interrupted_merges(first: Run, paths: Sequence[str | os.PathLike], target: Path | None) -> list[Path]:
    """Partial merged runs (killed ``mia merge``) made from exactly these shards."""
    folder = _merge_folder(first, target)
    candidates = [target.with_name(target.name + PARTIAL_SUFFIX)] if target is not None \
        else sorted(folder.glob(f"*.h5{PARTIAL_SUFFIX}"))
    shards = sorted(str(Path(p).resolve()) for p in paths)
    found = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if being_written(candidate):
            raise MiaError(f"{candidate} is being written by a running mia merge; wait for it to end (or stop it, "
                           "then finish it with mia merge --resume)")
        try:
            merged_from = open_run(candidate).attrs.get("merged_from")
        except MiaError:
            continue  # not a readable run: reported when its name is needed
        if isinstance(merged_from, list) and sorted(merged_from) == shards:
            found.append(candidate)
    return found


def _shell_args(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None) -> str:
    return " ".join([shlex.quote(str(p)) for p in paths] + ([f"--out {shlex.quote(str(out))}"] if out else []))


def _interleave(pieces: list[np.ndarray | None], rows: np.ndarray, count: int) -> list[Any] | np.ndarray:
    """Rows ``rows`` of the run from the shards' consecutive pieces (piece i: shard i's rows)."""
    cursor = [0] * count
    out: list[Any] = []
    for g in rows:
        i = int(g % count)
        out.append(pieces[i][cursor[i]])  # type: ignore[index]
        cursor[i] += 1
    return out
