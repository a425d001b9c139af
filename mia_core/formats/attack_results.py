"""The attack results file (one row per scored string) and its CSV/JSONL export.

``{model}_{timestamp}.h5`` holds per-row columns (``sample_id``, ``label``, ``text``,
``n_tokens``, ``truncated``, ``nll``, one ``signals/<name>`` per signal and, for prefix maps,
``row``, ``suffix_length``, ``matched_length``, ``extracted``, ``next_token_accuracy``) and
attributes (model, signals, k, metrics as JSON, ...). Written with
``mia_core.formats.safeio.write_hdf5_atomically`` (temporary name, fsync, link into place), so a
file with the final name is always whole and never overwritten.
"""

import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.hdf5 import STR_DTYPE, as_strings, decode_attr, encode_attrs, plain
from mia_core.formats.integrity import NotHDF5, open_hdf5, verify
from mia_core.formats.provenance import provenance
from mia_core.formats.safeio import disk_error, open_atomically, write_hdf5_atomically, write_hdf5_streamed

EXPORT_FORMATS = ("csv", "jsonl")
AGAIN = "run mia attack again"
#: Columns an older mia wrote under another name, read under today's (one name per quantity).
LEGACY_COLUMNS = {"teacher_forced_token_accuracy": "next_token_accuracy"}


#: Rows per chunk of a results file's datasets: a file written block by block grows a chunk at a time.
CHUNK_ROWS = 4096


class ResultsWriter:
    """Rows appended to an open results file one block at a time (:meth:`append`), then the signals that need
    every row (:meth:`add_signal`) and the attributes (:meth:`finish`)."""

    def __init__(self, f: h5py.File) -> None:
        self.f = f
        self.rows = 0

    def append(self, columns: dict[str, np.ndarray | list], signals: dict[str, np.ndarray]) -> None:
        """One block of rows: ``columns`` hold one value per row (lists of str for text columns, numpy
        arrays for numbers), ``signals`` one float per row each."""
        sizes = {len(v) for v in [*columns.values(), *signals.values()]}
        if len(sizes) != 1:
            raise ValueError(f"a block's columns differ in length: {sorted(sizes)}")
        n = sizes.pop()
        for name, values in columns.items():
            if isinstance(values, list):  # text columns come as lists of str
                _extend(self.f, name, np.array(values, dtype=object), self.rows, STR_DTYPE, {})
            else:
                values = np.asarray(values)
                _extend(self.f, name, values, self.rows, values.dtype, {"compression": "gzip", "fletcher32": True})
        group = self.f.require_group("signals")
        for name, values in signals.items():
            _extend(group, name, np.asarray(values, dtype=np.float64), self.rows, np.float64, {"fletcher32": True})
        self.rows += n

    def add_signal(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """A signal computed after the last block (the blind baseline) for some of the rows written (``rows``,
        increasing); the others read NaN."""
        ds = self.f.require_group("signals").create_dataset(
            name, shape=(self.rows,), dtype=np.float64, chunks=(min(CHUNK_ROWS, max(self.rows, 1)),),
            fillvalue=np.nan, fletcher32=True)
        if len(rows):
            ds[np.asarray(rows, dtype=np.int64)] = np.asarray(values, dtype=np.float64)

    def read_text(self, rows: np.ndarray) -> list[str]:
        """The ``text`` column at ``rows`` (increasing row numbers), read back from the file being written."""
        return [str(v) for v in as_strings(self.f["text"][np.asarray(rows, dtype=np.int64)])] if len(rows) else []

    def finish(self, attrs: dict[str, Any]) -> None:
        self.f.attrs.update(encode_attrs({**attrs, "provenance": provenance(attrs.get("backend"))}))


def _extend(group: h5py.Group, name: str, values: np.ndarray, at: int, dtype: Any, options: dict[str, Any]) -> None:
    if name not in group:
        group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK_ROWS,), **options)
    ds = group[name]
    ds.resize((at + len(values),))
    ds[at:at + len(values)] = values


def write_results(path: Path, columns: dict[str, np.ndarray | list], signals: dict[str, np.ndarray],
                  attrs: dict[str, Any]) -> Path:
    """Write one results file atomically. ``columns`` hold one value per row: lists of str
    for text columns, numpy arrays for numbers."""
    def fill(f: h5py.File) -> None:
        writer = ResultsWriter(f)
        writer.append(columns, signals)
        writer.finish(attrs)

    try:
        return write_hdf5_atomically(path, fill, overwrite=False)
    except FileExistsError:
        raise MiaError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise disk_error(exc, path, "no results file was written") from None


def write_results_streamed(path: Path, fill: Callable[[ResultsWriter], None]) -> Path:
    """Write a results file as ``fill`` produces it, block by block, straight into a temporary file that
    gets the name ``path`` once whole (never over an existing file): memory does not grow with its rows."""
    try:
        return write_hdf5_streamed(path, lambda f: fill(ResultsWriter(f)), overwrite=False)
    except FileExistsError:
        raise MiaError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise disk_error(exc, path, "no results file was written") from None


class _Columns(Mapping[str, np.ndarray]):
    """Datasets of a results file by name, each read whole on first access (and kept): opening a file of millions
    of rows reads none of them."""

    def __init__(self, results: "AttackResults", datasets: dict[str, str]) -> None:
        self._results, self._datasets, self._read = results, datasets, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            self._read[name] = self._results.read(self._datasets[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._datasets)

    def __len__(self) -> int:
        return len(self._datasets)

    def dataset(self, name: str) -> str:
        return self._datasets[name]


#: Rows a results file is read at a time by :meth:`AttackResults.rows`.
READ_ROWS = 4096


class AttackResults:
    """Read access to a results file: ``columns``, ``signals`` (name → array, each read when first used) and
    ``attrs``; :meth:`rows` reads it a slice at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MiaError(f"{self.path} is not a readable attack results file: not found")
        try:
            verify(self.path, AGAIN)
        except NotHDF5:
            raise MiaError(f"{self.path} is not a readable attack results file: not an HDF5 file") from None
        with open_hdf5(self.path, AGAIN) as f:
            if "signals" not in f:
                raise MiaError(f"{self.path} is not a readable attack results file: it has no signals")
            self.attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            columns = {LEGACY_COLUMNS.get(name, name): name for name, ds in f.items() if isinstance(ds, h5py.Dataset)}
            signals = {name: f"signals/{name}" for name in f["signals"]}
            self._rows = int(f[columns["sample_id"]].shape[0]) if "sample_id" in columns else 0
        self.columns = _Columns(self, columns)
        self.signals = _Columns(self, signals)

    def __len__(self) -> int:
        return self._rows

    def read(self, dataset: str, rows: slice | None = None) -> np.ndarray:
        """One dataset (``signals/name`` for a signal), whole or its ``rows``; text as ``str``."""
        with open_hdf5(self.path, AGAIN) as f:
            return _values(f[dataset], rows)

    def slices(self, dataset: str, size: int = READ_ROWS) -> Iterator[np.ndarray]:
        """One dataset's values, ``size`` rows at a time, from one opening of the file."""
        with open_hdf5(self.path, AGAIN) as f:
            for start in range(0, len(self), size):
                yield _values(f[dataset], slice(start, min(len(self), start + size)))

    def rows(self) -> Iterator[dict[str, Any]]:
        """One dict per row: the columns, then the signals; read ``READ_ROWS`` rows at a time."""
        names = [(name, self.columns.dataset(name)) for name in self.columns]
        names += [(name, self.signals.dataset(name)) for name in self.signals]
        with open_hdf5(self.path, AGAIN) as f:
            for start in range(0, len(self), READ_ROWS):
                part = slice(start, min(len(self), start + READ_ROWS))
                block = {name: _values(f[dataset], part) for name, dataset in names}
                for i in range(part.stop - part.start):
                    # JSON has no NaN or infinity; an empty CSV cell reads as missing too
                    yield {name: plain(values[i], finite=True) for name, values in block.items()}


def _values(ds: h5py.Dataset, rows: slice | None) -> np.ndarray:
    data = ds[()] if rows is None else ds[rows]
    return as_strings(data) if ds.dtype.kind == "O" else data


def export_results(path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Write a results file as CSV or JSONL (beside it unless ``out`` is given)."""
    if fmt not in EXPORT_FORMATS:
        raise MiaError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    results = AttackResults(path)
    target = Path(out) if out else results.path.with_suffix(f".{fmt}")
    rows = results.rows()
    try:  # the export appears whole or not at all
        with open_atomically(target) as fh:
            if fmt == "jsonl":
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                fields = list(results.columns) + list(results.signals)
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: "" if v is None else v for k, v in row.items()})
    except OSError as exc:
        raise disk_error(exc, target, "no export written") from None
    return target
