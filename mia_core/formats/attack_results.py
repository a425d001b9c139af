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
from collections.abc import Callable, Iterator
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


class AttackResults:
    """Read access to a results file: ``columns``, ``signals`` (name → array) and ``attrs``."""

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
            self.columns: dict[str, np.ndarray] = {}
            for name, ds in f.items():
                if isinstance(ds, h5py.Dataset):
                    data = ds[()]
                    if ds.dtype.kind == "O":
                        data = as_strings(data)
                    self.columns[LEGACY_COLUMNS.get(name, name)] = data
            self.signals = {name: ds[()] for name, ds in f["signals"].items()}

    def __len__(self) -> int:
        return len(self.columns.get("sample_id", []))

    def rows(self) -> Iterator[dict[str, Any]]:
        """One dict per row: the columns, then the signals."""
        for i in range(len(self)):
            # JSON has no NaN or infinity; an empty CSV cell reads as missing too
            row = {name: plain(values[i], finite=True) for name, values in self.columns.items()}
            row.update({name: plain(values[i], finite=True) for name, values in self.signals.items()})
            yield row


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
