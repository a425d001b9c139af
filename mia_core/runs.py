"""Run files (output of ``mia prompt`` / ``mia check``, docs/prompt.md): writer and reader.

A run lives at ``Prefixes/<map>/runs/{model}_{timestamp}.h5``. Row ``i`` of a run used
prefix row ``prefix_row[i]`` of the map (``i mod N`` with wraparound). Rows are appended
batch by batch; after each batch the row count is stored in the ``rows`` attribute and
the file is flushed, so a killed run keeps every finished batch and ``--resume``
continues from ``rows`` exactly (anything past it is cut off on reopen).

Columns (one value per row):

- ``tokens`` int32 [M, max_length] padded with -1, ``lengths`` int32, ``prefix_row``
  int64, ``text`` utf-8: always present.
- ``logprobs`` float32 [M, max_length] (NaN padding), ``matched_length`` int32
  (teacher-forced runs), ``raw_text``/``stop_reason``/``error`` utf-8 and usage columns
  (API runs), or any other column declared when the run is created.

Static datasets (written once at creation): with ``--retokenize`` the run's own
``prefixes``/``prefix_lengths`` and ``suffixes``/``suffix_lengths``, one row per *map*
row (indexed by ``prefix_row``); :meth:`Run.prefixes` and :meth:`Run.suffixes` hide
the difference and give one array per run row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mia_core import __version__
from mia_core.errors import MiaError
from mia_core.prefixmap import (
    PAD,
    STR_DTYPE,
    PrefixMap,
    as_strings,
    decode_attr,
    encode_attrs,
    pad_rows,
    timestamp,
    unused_path,
)

RUN_FORMAT_VERSION = 1
RUNS_DIR = "runs"

# kind -> (numpy dtype, fill value for padding / missing values)
KINDS: dict[str, tuple[Any, Any]] = {
    "int32": (np.int32, PAD),
    "int64": (np.int64, PAD),
    "float32": (np.float32, np.nan),
    "float64": (np.float64, np.nan),
    "str": (STR_DTYPE, ""),
}

#: Columns every run has: name -> (kind, width); width "max_length" = one value per new token.
STANDARD_COLUMNS: dict[str, tuple[str, int | str | None]] = {
    "tokens": ("int32", "max_length"),
    "lengths": ("int32", None),
    "prefix_row": ("int64", None),
    "text": ("str", None),
}

#: Columns of API (text) runs.
API_COLUMNS: dict[str, tuple[str, int | str | None]] = {
    "raw_text": ("str", None),
    "stop_reason": ("str", None),
    "error": ("str", None),
    "input_tokens": ("int64", None),
    "output_tokens": ("int64", None),
    "cost_usd": ("float64", None),
    "usage": ("str", None),  # the full usage dict of each answer, as JSON
}


def sanitize(name: str) -> str:
    """A model name made safe for a file name (``hf:org/model`` → ``hf_org_model``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "model"


def default_run_path(map_folder: Path, model: str, when: datetime | None = None) -> Path:
    """``<map>/runs/{model}_{timestamp}.h5``; a numbered suffix avoids clobbering a run made the same second."""
    # Names are built as strings: Path.with_suffix would cut a dotted model name (Qwen2.5-0.5B).
    return unused_path(Path(map_folder) / RUNS_DIR, f"{sanitize(model)}_{timestamp(when)}", ".h5")


class RunWriter:
    """Creates a run file (or reopens one to resume) and appends rows batch by batch."""

    def __init__(self, file: h5py.File, path: Path) -> None:
        self.file = file
        self.path = path
        self.columns: dict[str, tuple[str, int | None]] = json.loads(file.attrs["columns"])
        self.rows_done = int(file.attrs["rows"])
        self.was_complete = False

    @classmethod
    def create(cls, path: str | os.PathLike, attrs: Mapping[str, Any], max_length: int,
               columns: Mapping[str, tuple[str, int | str | None]] | None = None,
               static: Mapping[str, np.ndarray] | None = None) -> RunWriter:
        """A new run at ``path`` (never overwrites). ``columns`` adds declared columns
        (``name -> (kind, width)``, kind in int32/int64/float32/float64/str, width None for
        one value per row, an int or ``"max_length"`` for a row of values); ``static``
        stores whole arrays once (e.g. retokenized prefixes)."""
        path = Path(path)
        if path.exists():
            raise MiaError(f"{path} already exists; refusing to overwrite it (use --resume to continue it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        declared: dict[str, tuple[str, int | None]] = {}
        for name, (kind, width) in {**STANDARD_COLUMNS, **(columns or {})}.items():
            if kind not in KINDS:
                raise ValueError(f"column {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
            declared[name] = (kind, max_length if width == "max_length" else width)
        try:
            f = h5py.File(path, "w-")  # fails if a concurrent run claimed the name since the check
        except (FileExistsError, OSError) as exc:
            raise MiaError(f"{path} cannot be created: {exc}") from None
        try:
            for name, (kind, width) in declared.items():
                dtype = KINDS[kind][0]
                shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
                chunks = (1024,) if width is None else (max(1, min(1024, 2**18 // max(width, 1))), width)
                f.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks,
                                 compression=None if kind == "str" else "gzip")
            for name, array in (static or {}).items():
                f.create_dataset(name, data=array)
            f.attrs.update(encode_attrs({
                **attrs, "format_version": RUN_FORMAT_VERSION, "mia_version": __version__,
                "max_length": max_length, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "complete": False, "rows": 0, "columns": json.dumps(declared),
            }))
            f.flush()
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
        return cls(f, path)

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> RunWriter:
        """Reopen a run to continue it: rows past the last flushed batch are cut off."""
        path = Path(path)
        if not path.is_file():
            raise MiaError(f"run {str(path)!r} not found")
        try:
            f = h5py.File(path, "r+")
        except OSError as exc:
            raise MiaError(f"{path} cannot be opened for resuming: {exc}") from None
        if "columns" not in f.attrs or "rows" not in f.attrs:
            f.close()
            raise MiaError(f"{path} is not a mia run file")
        writer = cls(f, path)
        writer.was_complete = bool(f.attrs.get("complete", False))
        for name in writer.columns:
            if f[name].shape[0] != writer.rows_done:
                f[name].resize(writer.rows_done, axis=0)
        f.attrs["complete"] = False
        f.flush()
        return writer

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: decode_attr(v) for k, v in self.file.attrs.items()}

    @property
    def max_length(self) -> int:
        return int(self.file.attrs["max_length"])

    def set_attrs(self, **attrs: Any) -> None:
        """Update attributes and flush (used for e.g. the batch-API state and costs)."""
        self.file.attrs.update(encode_attrs(attrs))
        self.file.flush()

    def append(self, columns: Mapping[str, Any]) -> None:
        """Append one batch of rows and flush. ``tokens``/``prefix_row`` are required;
        ``lengths`` and ``text`` default to the token counts and ""; other declared
        columns not given are filled with -1 / NaN / ""."""
        if "tokens" not in columns or "prefix_row" not in columns:
            raise ValueError("append needs at least 'tokens' and 'prefix_row'")
        unknown = set(columns) - set(self.columns)
        if unknown:
            raise ValueError(f"undeclared run columns: {sorted(unknown)}")
        n = len(columns["prefix_row"])
        if n == 0:
            return
        values = dict(columns)
        values.setdefault("lengths", [min(len(t), self.max_length) for t in columns["tokens"]])
        start, end = self.rows_done, self.rows_done + n
        for name, (kind, width) in self.columns.items():
            dtype, fill = KINDS[kind]
            ds = self.file[name]
            if name in values:
                data = values[name]
                if len(data) != n:
                    raise ValueError(f"column {name!r} has {len(data)} rows, expected {n}")
                if width is not None:
                    data = pad_rows(data, width, fill, dtype)[0]
                elif kind == "str":
                    data = ["" if v is None else str(v) for v in data]
                else:
                    data = np.asarray([fill if v is None else v for v in data], dtype=dtype)
            else:
                data = np.full((n,) if width is None else (n, width), fill, dtype=dtype) if kind != "str" \
                    else [fill] * n
            ds.resize(end, axis=0)
            ds[start:end] = data
        self.rows_done = end
        self.file.attrs["rows"] = end
        self.file.flush()

    def finish(self, **attrs: Any) -> None:
        """Mark the run complete (with timing and other final attributes)."""
        self.set_attrs(**attrs, complete=True)

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Run:
    """Read access to a run file. Arrays are read from the file on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MiaError(f"run {str(path)!r} not found")
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs: dict[str, Any] = {k: decode_attr(v) for k, v in f.attrs.items()}
                if "rows" not in self.attrs or "tokens" not in f:
                    raise MiaError(f"{self.path} is not a mia run file")
                self.columns: list[str] = [k for k in json.loads(f.attrs["columns"])]
                self.datasets: list[str] = list(f.keys())
                self.size = min([int(self.attrs["rows"])] + [f[c].shape[0] for c in self.columns])
        except OSError as exc:
            raise MiaError(f"{self.path} is not a readable HDF5 file: {exc}") from None
        self._map: PrefixMap | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def method(self) -> str:
        return str(self.attrs.get("method", "generate"))

    @property
    def retokenized(self) -> bool:
        return bool(self.attrs.get("retokenized", False))

    def has(self, name: str) -> bool:
        return name in self.datasets

    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        """One column (only the finished rows) or static dataset; strings come back as ``str``."""
        with h5py.File(self.path, "r") as f:
            ds = f[name]
            if name in self.columns:
                rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
                data = ds[rows]
            else:
                data = ds[()] if rows is None else ds[rows]
            if ds.dtype.kind == "O":
                data = as_strings(data)
            return data

    def tokens(self) -> list[np.ndarray]:
        """The generated (or, teacher-forced, argmax) tokens of each row, trimmed to its length."""
        tokens, lengths = self.read("tokens"), self.read("lengths")
        return [tokens[i, :n] for i, n in enumerate(lengths)]

    def prefix_rows(self) -> np.ndarray:
        return self.read("prefix_row")

    @property
    def prefix_map(self) -> PrefixMap:
        """The map this run was made from (its recorded folder, else the folder above runs/)."""
        if self._map is None:
            recorded = self.attrs.get("prefix_map")
            candidates = [Path(recorded)] if recorded else []
            candidates.append(self.path.resolve().parent.parent)
            last: Exception | None = None
            for folder in candidates:
                try:
                    self._map = PrefixMap(folder)
                    break
                except MiaError as exc:
                    last = exc
            else:
                raise MiaError(f"the prefix map of run {self.path} is missing: {last}")
        return self._map

    def _per_row(self, name: str, lengths_name: str) -> list[np.ndarray]:
        prefix_rows = self.prefix_rows()
        if self.has(name):  # the run's own (retokenized) arrays, one row per map row
            data, lengths = self.read(name), self.read(lengths_name)
        else:
            unique = np.unique(prefix_rows)
            picked = self.prefix_map.read(name, unique)
            lengths = (self.prefix_map.read(lengths_name, unique) if lengths_name == "suffix_lengths"
                       else np.full(len(unique), picked.shape[1]))
            index = {int(r): i for i, r in enumerate(unique)}
            return [picked[index[int(r)], :lengths[index[int(r)]]] for r in prefix_rows]
        return [data[r, :lengths[r]] for r in prefix_rows]

    def prefixes(self) -> list[np.ndarray]:
        """The prefix tokens each row was prompted with (in the run's tokenizer)."""
        return self._per_row("prefixes", "prefix_lengths")

    def suffixes(self) -> list[np.ndarray]:
        """The true suffix of each row (in the run's tokenizer: retokenized when the run was)."""
        return self._per_row("suffixes", "suffix_lengths")

    def map_column(self, name: str) -> np.ndarray:
        """A per-prefix column of the map (``sample_id``, ``sample_label``, ...) for each run row."""
        return self.prefix_map.read(name, self.prefix_rows())

    def to_dicts(self, with_map: bool = True) -> list[dict[str, Any]]:
        """The seed's "list of dictionaries": one per row, with the prefix and generated tokens."""
        rows = self.prefix_rows()
        tokens = self.tokens()
        texts = self.read("text")
        extra = [c for c in self.columns if c not in STANDARD_COLUMNS]
        extra_data = {c: self.read(c) for c in extra}
        out: list[dict[str, Any]] = []
        prefixes = self.prefixes() if with_map else None
        ids = labels = None
        if with_map:
            ids, labels = self.map_column("sample_id"), self.map_column("sample_label")
        lengths = self.read("lengths")
        for i in range(self.size):
            row: dict[str, Any] = {"index": i, "prefix_index": int(rows[i])}
            if with_map:
                row.update(sample_id=str(ids[i]), sample_label=str(labels[i]),
                           prefix_tokens=[int(t) for t in prefixes[i]])
            row.update(generated_tokens=[int(t) for t in tokens[i]], text=str(texts[i]))
            for c in extra:
                value = extra_data[c][i]
                if isinstance(value, np.ndarray):
                    value = [_plain(v) for v in value[:lengths[i]]]
                row[c] = _plain(value)
            out.append(row)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _clip(rows: slice, size: int) -> slice:
    start, stop, step = rows.indices(size)
    return slice(start, stop, step)


def open_run(path: str | os.PathLike) -> Run:
    """Open a run file for reading (a clear error when it is missing or not a run)."""
    return Run(path)
