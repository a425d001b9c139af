"""The prefix-map file (``prefix_map.h5``, docs/prefix.md): writer and reader.

The writer streams rows into chunked, compressed, resizable datasets inside a folder
with a ``.partial`` suffix and renames it only when complete (after an fsync), so an
interrupted run never leaves a folder that looks finished. HDF5 writes through a
``mia_core.formats.safeio.GuardedFile``: a full disk or read-only folder is reported in one line
by mia, never met inside HDF5. Numeric columns carry Fletcher-32 checksums, and
:meth:`PrefixMap.verify` reads the columns a command needs before it starts.
"""

import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mia_core import __version__
from mia_core.errors import MiaError
from mia_core.formats.hdf5 import STR_DTYPE, as_str, as_strings, decode_attr, encode_attrs
from mia_core.formats.integrity import READ_ERRORS, USERBLOCK_SIZE, DamagedFile, describe_error, open_hdf5, seal_file
from mia_core.formats.names import PARTIAL_SUFFIX
from mia_core.formats.provenance import provenance
from mia_core.formats.recorded import recorded
from mia_core.formats.safeio import GuardedFile, disk_error, fsync_dir
from mia_core.formats.sniff import describe_file
from mia_core.token_rows import TOKEN_DTYPE, pad_rows

FORMAT_VERSION = 1
MAP_FILE = "prefix_map.h5"
CHUNK_ROWS = 4096
#: Rows of a dataset read at a time when a map is verified (two chunks: 1.6 MB of 50-token suffixes).
VERIFY_ROWS = 2 * CHUNK_ROWS
REMAKE = "remake the map with mia prefix"


class MapNameTaken(MiaError):
    """The folder's ``.partial`` name is taken (another run writing, or a killed one)."""


def _growable(group: h5py.Group, name: str, width: int | None, dtype: Any) -> h5py.Dataset:
    shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
    chunks = (CHUNK_ROWS,) if width is None else (max(1, min(CHUNK_ROWS, 2**20 // max(width, 1))), width)
    compression = None if dtype is STR_DTYPE else "gzip"
    # Numbers carry a Fletcher-32 checksum per chunk: a flipped byte is an error, not a wrong token.
    return group.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks,
                                compression=compression, compression_opts=1 if compression else None,
                                fletcher32=compression is not None)


def _append(ds: h5py.Dataset, values: Any) -> None:
    n = len(values)
    if n == 0:
        return
    start = ds.shape[0]
    ds.resize(start + n, axis=0)
    ds[start:start + n] = values


class PrefixMapWriter:
    """Streams prefix rows (and optionally the dataset) into a new map folder."""

    def __init__(self, folder: Path, prefix_tokens: int, suffix_tokens: int,
                 attrs: dict[str, Any], save_dataset: bool) -> None:
        self.folder = Path(folder)
        if self.folder.exists():
            raise MiaError(f"{self.folder} already exists; refusing to overwrite it")
        self.partial = self.folder.with_name(self.folder.name + PARTIAL_SUFFIX)
        try:  # claiming the name is atomic: two runs never write into the same folder
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.partial.mkdir()
        except FileExistsError:
            raise MapNameTaken(f"{self.partial} exists: another run is writing it, or one was killed "
                           "(then delete it)") from None
        except OSError as exc:
            raise disk_error(exc, self.partial, "no map was written") from None
        self.prefix_tokens = prefix_tokens
        self.suffix_tokens = suffix_tokens
        self.file: h5py.File | None = None
        self._guard: GuardedFile | None = None
        try:
            self._create(attrs, save_dataset)
            self._check()
        except BaseException:  # never leave a half-made folder behind
            self.abort()
            raise

    def _create(self, attrs: dict[str, Any], save_dataset: bool) -> None:
        prefix_tokens, suffix_tokens = self.prefix_tokens, self.suffix_tokens
        # Written through a GuardedFile: a full disk is reported by mia, never met inside HDF5.
        self._guard = GuardedFile(self.partial / MAP_FILE, "w+b")
        self.file = h5py.File(self._guard, "w", userblock_size=USERBLOCK_SIZE)
        f = self.file
        self._prefixes = _growable(f, "prefixes", prefix_tokens, TOKEN_DTYPE)
        self._suffixes = _growable(f, "suffixes", max(suffix_tokens, 1), TOKEN_DTYPE)
        self._suffix_lengths = _growable(f, "suffix_lengths", None, np.int32)
        self._sample_index = _growable(f, "sample_index", None, np.int64)
        self._sample_id = _growable(f, "sample_id", None, STR_DTYPE)
        self._sample_label = _growable(f, "sample_label", None, STR_DTYPE)
        self._prefix_start = _growable(f, "prefix_start", None, np.int64)
        self.dataset_group = None
        if save_dataset:
            g = f.create_group("dataset")
            self._ds_tokens = _growable(g, "tokens", None, TOKEN_DTYPE)
            self._ds_offsets = _growable(g, "offsets", None, np.int64)
            _append(self._ds_offsets, [0])
            self._ds_ids = _growable(g, "sample_id", None, STR_DTYPE)
            self._ds_labels = _growable(g, "sample_label", None, STR_DTYPE)
            self._ds_texts = _growable(g, "text", None, STR_DTYPE)
            self.dataset_group = g
        f.attrs.update(encode_attrs({**attrs, "format_version": FORMAT_VERSION, "mia_version": __version__,
                                      "prefix_tokens": prefix_tokens, "suffix_tokens": suffix_tokens,
                                      "provenance": provenance(),
                                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}))

    def add_rows(self, prefixes: np.ndarray, suffixes: Sequence[Sequence[int]], sample_index: Sequence[int],
                 sample_id: Sequence[str], sample_label: Sequence[str], prefix_start: Sequence[int]) -> None:
        padded, lengths = pad_rows(suffixes, max(self.suffix_tokens, 1))
        _append(self._prefixes, np.asarray(prefixes, dtype=TOKEN_DTYPE).reshape(-1, self.prefix_tokens))
        _append(self._suffixes, padded)
        _append(self._suffix_lengths, lengths.astype(np.int32))
        _append(self._sample_index, np.asarray(sample_index, dtype=np.int64))
        _append(self._sample_id, list(sample_id))
        _append(self._sample_label, [label or "" for label in sample_label])
        _append(self._prefix_start, np.asarray(prefix_start, dtype=np.int64))
        self._check()

    def _check(self) -> None:
        """Stop at the first failed write (full disk, ...) with one line."""
        if self._guard is not None:
            self._guard.raise_if_failed(self.partial / MAP_FILE, "no map was written")

    def add_dataset_samples(self, ids: Sequence[str], texts: Sequence[str], labels: Sequence[str | None],
                            tokens: Sequence[Sequence[int]]) -> None:
        if self.dataset_group is None:
            return
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        base = self._ds_offsets[-1]
        _append(self._ds_offsets, base + np.cumsum(lengths))
        flat = np.concatenate([np.asarray(t, dtype=TOKEN_DTYPE) for t in tokens]) if len(tokens) else []
        _append(self._ds_tokens, flat)
        _append(self._ds_ids, list(ids))
        _append(self._ds_labels, [label or "" for label in labels])
        _append(self._ds_texts, list(texts))
        self._check()

    def finish(self, counts: dict[str, int]) -> Path:
        """Record the counts, close the file and give the folder its final name."""
        self.file.attrs.update(encode_attrs({**counts, "size": int(self._prefixes.shape[0]), "complete": True}))
        self.file.close()
        self._check()
        try:  # the checksum of the whole file, in its user block (formats.integrity)
            seal_file(self._guard)
        except OSError as exc:
            raise disk_error(exc, self.partial / MAP_FILE, "no map was written") from None
        self._guard.sync()
        self._guard.close()
        self._check()
        try:
            os.replace(self.partial, self.folder)
            fsync_dir(self.folder.parent)
        except OSError as exc:
            raise disk_error(exc, self.folder, "no map was written") from None
        return self.folder

    def abort(self) -> None:
        """Remove the partial folder (on errors and interrupts)."""
        try:
            if self.file is not None and self.file.id.valid:
                try:
                    self.file.close()
                except (OSError, RuntimeError, ValueError):
                    pass  # the folder is removed anyway
            if self._guard is not None:
                self._guard.close()
        finally:
            shutil.rmtree(self.partial, ignore_errors=True)


def resolve_map(name: str | os.PathLike, prefixes_dir: str | os.PathLike = "Prefixes") -> Path:
    """A map folder from a path or a folder name under ``prefixes_dir``; checks it is complete."""
    candidates = [Path(name), Path(prefixes_dir) / name]
    for folder in candidates:
        if folder.is_file() and folder.name == MAP_FILE:
            folder = folder.parent
        if folder.is_dir():
            break
    else:
        if candidates[0].is_file():  # a dataset or a run given as the map: say what it is
            raise MiaError(f"{name} is {describe_file(name)}, not a prefix map (a folder made by mia prefix, "
                           "or the prefix_map.h5 in it)")
        raise MiaError(f"prefix map {str(name)!r} not found (looked for {candidates[0]} and {candidates[1]})")
    if folder.name.endswith(PARTIAL_SUFFIX) or not (folder / MAP_FILE).is_file():
        raise MiaError(f"{folder} is not a complete prefix map (interrupted while being written?)")
    with open_hdf5(folder / MAP_FILE, REMAKE) as f:
        complete = bool(f.attrs.get("complete", False))
    if not complete:
        raise MiaError(f"{folder} is not a complete prefix map (interrupted while being written?)")
    return folder


class PrefixMap:
    """Read access to a complete prefix map. Arrays are read lazily from the file."""

    def __init__(self, folder: str | os.PathLike, prefixes_dir: str | os.PathLike = "Prefixes") -> None:
        self.folder = resolve_map(folder, prefixes_dir)
        self.path = self.folder / MAP_FILE
        with open_hdf5(self.path, REMAKE) as f:
            self.attrs: dict[str, Any] = {k: decode_attr(v) for k, v in f.attrs.items()}
            self.size = int(f["prefixes"].shape[0])
            self.has_dataset = "dataset" in f

    def verify(self, names: Sequence[str]) -> None:
        """Read each named dataset once, whole (checksums, decompression), so a damaged map is
        refused before any work starts rather than in the middle of it."""
        with open_hdf5(self.path, REMAKE) as f:
            for name in names:
                try:
                    ds = f[name]
                    for start in range(0, ds.shape[0], VERIFY_ROWS):
                        ds[start:start + VERIFY_ROWS]
                except READ_ERRORS as exc:  # an older map without the file checksum: say which dataset
                    raise DamagedFile(self.path, f"dataset {name!r} cannot be read ({describe_error(exc)})",
                                      REMAKE) from None

    prefix_tokens = recorded("prefix_tokens", int)
    suffix_tokens = recorded("suffix_tokens", int)
    tokenizer_name = recorded("tokenizer", str)
    tokenizer_fingerprint = recorded("tokenizer_fingerprint", str)

    def __len__(self) -> int:
        return self.size

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """One dataset of the map (``prefixes``, ``suffixes``, ``sample_id``, ...), optionally some rows."""
        with open_hdf5(self.path, REMAKE) as f:
            ds = f[name]
            data = ds[()] if rows is None else _take(ds, rows)
        return as_strings(data) if data.dtype.kind == "O" else data

    def lazy_rows(self, name: str, lengths: str | None = None) -> "MapRows":
        """The rows of ``name`` (``prefixes``, ``suffixes``), each trimmed to ``lengths`` when given,
        read from the file a block at a time: a run over a map of any size holds one block."""
        return MapRows(self, name, lengths)

    def suffixes(self, rows: slice | np.ndarray | None = None) -> list[np.ndarray]:
        """The true suffixes, each trimmed to its length."""
        padded = self.read("suffixes", rows)
        lengths = self.read("suffix_lengths", rows)
        return [padded[i, :n] for i, n in enumerate(lengths)]

    def iter_dataset(self) -> Iterator[tuple[str, str, str, np.ndarray]]:
        """Saved dataset samples as ``(id, text, label, tokens)`` (needs a map made with --save)."""
        if not self.has_dataset:
            raise MiaError(f"{self.folder} holds no saved dataset (it was made with --no-save)")
        with open_hdf5(self.path, REMAKE) as f:
            g = f["dataset"]
            offsets = g["offsets"][()]
            for i in range(len(offsets) - 1):
                yield (as_str(g["sample_id"][i]), as_str(g["text"][i]), as_str(g["sample_label"][i]),
                       g["tokens"][offsets[i]:offsets[i + 1]])


class MapRows(Sequence[np.ndarray]):
    """One per-row dataset of a map as a sequence of rows, read ``BLOCK`` rows at a time with the last
    block kept: a prompt loop walks the map in order (and wraps around), so memory is one block."""

    BLOCK = 16_384  # 2 MB of 32-token prefixes: enough to amortise a read, small beside the process

    def __init__(self, pmap: PrefixMap, name: str, lengths: str | None = None) -> None:
        self.pmap, self.name, self.lengths = pmap, name, lengths
        self._start, self._rows, self._lengths = -1, np.zeros((0, 0)), None

    def __len__(self) -> int:
        return len(self.pmap)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of a map of {len(self)} rows")
        start = i - i % self.BLOCK
        if start != self._start:
            block = slice(start, min(start + self.BLOCK, len(self)))
            self._rows = self.pmap.read(self.name, block)
            self._lengths = None if self.lengths is None else self.pmap.read(self.lengths, block)
            self._start = start
        row = self._rows[i - start]
        return row if self._lengths is None else row[:self._lengths[i - start]]


def _take(ds: h5py.Dataset, rows: slice | np.ndarray) -> np.ndarray:
    if isinstance(rows, slice):
        return ds[rows]
    rows = np.asarray(rows)
    order = np.argsort(rows)  # h5py fancy indexing needs increasing, unique indices
    unique, inverse = np.unique(rows[order], return_inverse=True)
    picked = ds[unique]
    out = picked[inverse]
    result = np.empty_like(out)
    result[order] = out
    return result
