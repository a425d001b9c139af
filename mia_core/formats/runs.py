"""Run files (output of ``mia prompt`` / ``mia check``, docs/prompt.md): writer and reader.

A run lives at ``Prefixes/<map>/runs/{model}_{timestamp}.h5``. Row ``i`` of a run used
prefix row ``prefix_row[i]`` of the map (``i mod N`` with wraparound). Each finished
batch is one fsynced record of the journal ``<run>.h5.journal`` (rows and counters
together, see ``mia_core.formats.journal``); the journal is folded into the HDF5 file by an atomic
rewrite (``mia_core.formats.safeio``) when it grows, when the run ends and when it is resumed.
Readers see the journal's rows too, so a killed run keeps every finished batch and
``--resume`` continues from exactly there.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mia_core import __version__
from mia_core.errors import MiaError
from mia_core.formats.hdf5 import STR_DTYPE, as_strings, decode_attr, encode_attrs, plain
from mia_core.formats.integrity import DamagedFile, open_hdf5
from mia_core.formats.journal import Journal, JournalBusy, Record, Scan, being_written, journal_path, scan
from mia_core.formats.names import safe_name, timestamp, unused_path
from mia_core.formats.prefixmap import PrefixMap
from mia_core.formats.provenance import provenance
from mia_core.formats.safeio import (
    disk_error,
    is_disk_error,
    remove_stale_temps,
    write_atomically,
    write_hdf5_atomically,
    write_hdf5_streamed,
)
from mia_core.redact import redact
from mia_core.token_rows import PAD, pad_rows

NUL_SYMBOL = "\u2400"  # what a NUL character in a text column is stored as

RUN_FORMAT_VERSION = 1
DAMAGED_RUN = "restore it from a copy, or delete it and start a new run"
RUNS_DIR = "runs"


class RunKind(Enum):
    """What kind of run a file holds, read from what it records (``method``, ``strategy``, its columns);
    the one tag every step dispatches on (``mia score``'s scorer and summary, ``mia export``'s fields)."""

    GENERATION = "generation"  # a local model generated continuations of a map's prefixes
    API = "api"  # an API model answered the map's prefixes as text (cost, usage and errors per row)
    TEACHER_FORCED = "teacher-forced"  # one forward pass over prefix + true suffix (mia check)
    DIVERGENCE = "divergence"  # a chat model asked to repeat a word forever: no map, no true suffixes

    @classmethod
    def of(cls, attrs: Mapping[str, Any], columns: Sequence[str]) -> RunKind:
        if str(attrs.get("strategy") or "") == "divergence":
            return cls.DIVERGENCE
        if str(attrs.get("method") or "generate") == "teacher-forced":
            return cls.TEACHER_FORCED
        return cls.API if "error" in columns else cls.GENERATION

    @property
    def has_map(self) -> bool:
        """Whether its rows are a prefix map's rows (with true suffixes to compare with)."""
        return self is not RunKind.DIVERGENCE


def failed_mask(errors: np.ndarray | None, rows: int) -> np.ndarray:
    """Rows whose request failed (API error, malformed reply, refusal, empty reply): a non-empty ``error``.
    ``errors`` None: a run without that column (local models) has no failed rows."""
    if errors is None:
        return np.zeros(rows, dtype=bool)
    return np.array([bool(str(e).strip()) for e in errors], dtype=bool)

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


def default_run_path(map_folder: Path, model: str, when: datetime | None = None) -> Path:
    """``<map>/runs/{model}_{timestamp}.h5``; a numbered suffix avoids clobbering a run made the same second."""
    # Names are built as strings: Path.with_suffix would cut a dotted model name (Qwen2.5-0.5B).
    return unused_path(Path(map_folder) / RUNS_DIR, f"{safe_name(model)}_{timestamp(when)}", ".h5")


def _dataset_layout(kind: str, width: int | None) -> dict[str, Any]:
    """Resizable, chunked columns; numbers gzip-compressed with a Fletcher-32 checksum per chunk
    (a flipped byte is then an error, not a wrong number); a chunk stays well under HDF5's 4 GB."""
    shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
    chunks = (1024,) if width is None else (max(1, min(1024, 2**18 // max(width, 1))), min(width, 2**18))
    numeric = kind != "str"
    return {"maxshape": maxshape, "chunks": chunks, "compression": "gzip" if numeric else None,
            "fletcher32": numeric, "shape": shape}


def _base(f: h5py.File) -> tuple[dict[str, Any], dict[str, tuple[str, int | None]], int, int]:
    """A run file's attributes, declared columns, rows and last compacted journal record."""
    attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
    if "columns" not in f.attrs or "rows" not in f.attrs or "tokens" not in f:
        raise MiaError(f"{f.filename} is not a mia run file (it has no run columns); give a run made by mia prompt "
                       "or mia check")
    columns = {k: (v[0], v[1]) for k, v in json.loads(f.attrs["columns"]).items()}
    rows = min([int(attrs["rows"])] + [f[c].shape[0] for c in columns])
    return attrs, columns, rows, int(attrs.get("journal_seq", 0))


@dataclass
class Salvage:
    """How ``RunWriter.reopen`` fills the rows of damaged journal records it drops (``mia prompt --salvage``):
    ``placeholders(rows)`` gives the columns of those rows (at least ``tokens`` and ``prefix_row``),
    ``counters(columns)`` the run's counters recomputed from the rows kept."""

    placeholders: Callable[[np.ndarray], Mapping[str, Any]]
    counters: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]


@dataclass
class Pending:
    """The journal records not yet compacted into the run file, in sequence order, and their damage:
    ``lost_rows`` are rows of damaged records (intact rows follow them), ``lost_from`` the first row
    that damage at the end of the journal may have held, ``problem`` the one line saying so (None
    when every record is intact; a record cut short at the end by a kill is no damage)."""

    records: list[Record]
    end: int
    base_rows: int
    lost_rows: list[int] = field(default_factory=list)
    lost_from: int | None = None
    problem: str | None = None


def _pending(path: Path, seq: int, base_rows: int) -> Pending:
    """Journal records not yet compacted into the run file (see :class:`Pending`)."""
    found = scan(journal_path(path))
    if any(r.seq <= seq for r in found.records):
        # Left by a kill between compaction's rename and the journal's cut: every record (the damaged
        # ones too, since one journal never mixes compacted and new records) is in the file already.
        return Pending([], found.end, base_rows)
    order = sorted(range(len(found.records)), key=lambda i: found.records[i].seq)
    records = [found.records[i] for i in order]
    pending = Pending(records, found.end, base_rows)
    groups = _lost_groups(records, seq, base_rows)
    last_offset = max(found.offsets, default=-1)
    trailing = any(start > last_offset for start, _ in found.damaged) or \
        any(c > max((r.seq for r in records), default=seq) for c in found.conflicts)
    if not (groups or trailing or found.damage):
        return pending
    pending.lost_rows = [row for _, rows in groups for row in rows]
    appended = _appended_rows(records)
    if trailing:
        pending.lost_from = max([base_rows] + [r.start + r.size for r in records if r.op == "append"])
    parts = [_describe_group(seqs, rows, found.conflicts, [r for r in appended if r >= rows.stop]
                             if len(rows) else _rows_after(records, max(seqs)))
             for seqs, rows in groups]
    if trailing:
        parts.append(_describe_tail(found, records, seq, pending.lost_from))
    if not parts:
        first, stop = found.damaged[0]
        parts.append(f"{stop - first} unreadable bytes at offset {first} (no record lost; journaled rows "
                     f"{_ranges(appended)} intact)")
    pending.problem = (f"damaged journal {journal_path(path)}: {'; '.join(parts)}; the run is unchanged and nothing "
                       f"was asked again. Keep every intact record and ask only the lost rows again with: "
                       f"mia prompt --resume {path} --salvage")
    return pending


def _lost_groups(records: list[Record], seq: int, base_rows: int) -> list[tuple[list[int], range]]:
    """Missing sequence numbers before each intact record, with the rows missing before it."""
    groups: list[tuple[list[int], range]] = []
    expected_seq, expected_row, missing = seq + 1, base_rows, []
    for r in records:
        missing += list(range(expected_seq, r.seq))
        expected_seq = r.seq + 1
        if r.op != "append":
            continue
        gap = range(expected_row, max(expected_row, r.start))
        if missing or len(gap):
            groups.append((missing, gap))
            missing = []
        expected_row = max(expected_row, r.start + r.size)
    if missing:  # records missing before a replace/attrs record, with no append after them
        groups.append((missing, range(expected_row, expected_row)))
    return groups


def _describe_tail(found: Scan, records: list[Record], seq: int, lost_from: int) -> str:
    """Damage after the last intact record: the records it frames by number, when their headers hold."""
    last = records[-1].seq if records else seq
    last_offset = max(found.offsets, default=-1)
    framed = sum(n for (start, _), n in zip(found.damaged, found.framed, strict=True) if start > last_offset)
    if framed:
        which = f"record {last + 1} is" if framed == 1 else f"records {last + 1}..{last + framed} are"
        return (f"{which} damaged ({'it' if framed == 1 else 'they'} held rows from {lost_from} on; "
                f"no intact record after {'it' if framed == 1 else 'them'})")
    return f"the journal is damaged after record {last} (rows from {lost_from} on, if they were journaled, are lost)"


def _appended_rows(records: list[Record]) -> list[int]:
    return [row for r in records if r.op == "append" for row in range(r.start, r.start + r.size)]


def _rows_after(records: list[Record], seq: int) -> list[int]:
    return [row for r in records if r.op == "append" and r.seq > seq for row in range(r.start, r.start + r.size)]


def _ranges(rows: Sequence[int]) -> str:
    """``0..5, 9, 12..13``: sorted rows as ranges."""
    rows = sorted(set(int(r) for r in rows))
    if not rows:
        return "none"
    out, start = [], rows[0]
    for prev, row in zip(rows, rows[1:] + [None], strict=True):
        if row != prev + 1:
            out.append(str(start) if start == prev else f"{start}..{prev}")
            start = row
    return ", ".join(out)


def _describe_group(seqs: list[int], rows: range, conflicts: list[int], intact_after: list[int]) -> str:
    many = len(seqs) > 1
    which = f"record{'s' if many else ''} {_ranges(seqs)}" if seqs else "a record"
    clash = [s for s in seqs if s in conflicts]
    what = f"appear{'' if many else 's'} twice with different contents" if clash and len(clash) == len(seqs) \
        else f"{'are' if many else 'is'} damaged"
    held = f"held rows {_ranges(rows)}" if len(rows) else \
        "appended no rows (attributes, or retried rows, which stay as they were before)"
    return f"{which} {what} ({'they' if many else 'it'} {held}; intact after {'them' if many else 'it'}: " \
        f"rows {_ranges(intact_after)})"


def _placeholder_records(columns: dict[str, tuple[str, int | None]], rows: Sequence[int],
                         given: Callable[[np.ndarray], Mapping[str, Any]] | None) -> list[Record]:
    """One ``append`` record per contiguous block of lost ``rows``: the columns ``given`` returns,
    fill values (-1, NaN, "") for the others."""
    out: list[Record] = []
    for block in _blocks(rows):
        n = len(block)
        values = dict(given(np.asarray(block, dtype=np.int64))) if given else {}
        if "tokens" in values:
            values.setdefault("lengths", [len(t) for t in values["tokens"]])
        data: dict[str, Any] = {}
        for name, (kind, width) in columns.items():
            dtype, fill = KINDS[kind]
            if name in values:
                value = values[name]
                data[name] = pad_rows(value, width, fill, dtype)[0] if width is not None else (
                    [str(v) for v in value] if kind == "str" else np.asarray(value, dtype=dtype))
            else:
                data[name] = [fill] * n if kind == "str" else np.full((n,) if width is None else (n, width), fill,
                                                                      dtype)
        if "lengths" not in values:  # no tokens (not the -1 fill)
            data["lengths"] = np.zeros(n, dtype=np.int32)
        out.append(Record(0, "append", start=block[0], columns=data))
    return out


def _blocks(rows: Sequence[int]) -> list[list[int]]:
    blocks: list[list[int]] = []
    for row in sorted(rows):
        if blocks and row == blocks[-1][-1] + 1:
            blocks[-1].append(row)
        else:
            blocks.append([row])
    return blocks


def _with_placeholders(records: list[Record], placeholders: list[Record]) -> list[Record]:
    """The appends in row order (placeholders in the gaps), then the other records in sequence order."""
    appends = sorted([r for r in records if r.op == "append"] + placeholders, key=lambda r: r.start)
    return appends + [r for r in records if r.op != "append"]


def _merge(f: h5py.File, columns: dict[str, tuple[str, int | None]], rows: int, records: list[Record],
           names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The full columns: the file's rows, then the journal's appends and replacements (each record's
    columns read once)."""
    names = names or list(columns)
    parts: dict[str, list[Any]] = {}
    for name in names:
        data = f[name][:rows]
        parts[name] = [as_strings(data) if columns[name][0] == "str" else data]
    for r in records:
        if r.op == "append":
            data = r.data()
            for name in names:
                parts[name].append(_as_column(data[name], columns[name][0]))
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind = columns[name][0]
        merged = np.concatenate(parts.pop(name)) if len(parts[name]) > 1 else parts.pop(name)[0]
        out[name] = merged if kind == "str" else merged.astype(KINDS[kind][0], copy=False)
    for r in records:
        if r.op == "replace":
            data = r.data()
            for name in names:
                out[name][np.asarray(r.rows, dtype=np.int64)] = _as_column(data[name], columns[name][0])
    return out


def _as_column(value: Any, kind: str) -> np.ndarray:
    """A record's values of one column as an array (strings as objects, which HDF5 writes as utf-8)."""
    return np.array(value, dtype=object) if kind == "str" else np.asarray(value)


def _write_or_refusal(path: Path, fill: Callable[[h5py.File], None]) -> OSError | None:
    """Write the compacted file; a disk's refusal (full, read-only, ...) is returned, not raised."""
    try:
        write_hdf5_streamed(path, fill)
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        return exc
    return None


#: Rows of journal records gathered before a compaction writes them to the run's columns (fewer, larger
#: writes into the compressed chunks; memory: this many rows and one record).
FOLD_ROWS = 4_096


def _fold_records(datasets: dict[str, h5py.Dataset], columns: dict[str, tuple[str, int | None]], rows: int,
                  records: list[Record]) -> None:
    """Copied columns cut to the file's ``rows``, then the journal's appends after them and its
    replacements in place (in record order, as :func:`_merge` reads them). Each record's columns are
    read from the journal once, when they are written: memory does not grow with the journal."""
    appends = [r for r in records if r.op == "append"]
    total = rows + sum(r.size for r in appends)
    for ds in datasets.values():
        ds.resize((total,) + ds.shape[1:])
    block: list[dict[str, Any]] = []
    at, gathered = rows, 0
    for r in appends:
        block.append(r.data())
        gathered += r.size
        if gathered >= FOLD_ROWS:
            at = _write_block(datasets, columns, at, block)
            block, gathered = [], 0
    _write_block(datasets, columns, at, block)
    for r in records:
        if r.op == "replace":
            data = r.data()
            for name, ds in datasets.items():
                for row, value in zip(r.rows or [], _as_column(data[name], columns[name][0]), strict=True):
                    ds[int(row)] = value


def _write_block(datasets: dict[str, h5py.Dataset], columns: dict[str, tuple[str, int | None]], at: int,
                 block: list[dict[str, Any]]) -> int:
    """Write consecutive records' rows from row ``at``; the row after them."""
    n = 0
    for name, ds in datasets.items():
        values = [_as_column(data[name], columns[name][0]) for data in block]
        n = sum(len(v) for v in values)
        if n:
            ds[at:at + n] = np.concatenate(values) if len(values) > 1 else values[0]
    return at + n


def _intact(path: Path, seq: int, base_rows: int) -> list[Record]:
    """The pending records of a journal that must be intact (one line when it is not)."""
    pending = _pending(path, seq, base_rows)
    if pending.problem is not None:
        raise MiaError(pending.problem)
    return pending.records


def _replay_attrs(attrs: dict[str, Any], records: list[Record]) -> tuple[dict[str, Any], int, int]:
    """Attributes after the journal, rows and last sequence number (of the file or of its records: a
    reopened writer numbers on from there, and its compaction records it, so a copy of the old journal
    left by a kill before the journal was emptied is not replayed twice)."""
    attrs = dict(attrs)
    for r in records:
        attrs.update(r.attrs)
    seq = max([int(attrs.get("journal_seq", 0))] + [r.seq for r in records])
    return attrs, int(attrs["rows"]), seq


def _exists(path: Path) -> MiaError:
    """Never overwrite: say whether the file there can be resumed or must be removed by hand."""
    try:
        with open_hdf5(path) as f:
            _base(f)
    except MiaError:
        return MiaError(f"{path} exists but is not a readable mia run (a run killed while being created by an "
                        "older mia?); nothing in it can be resumed: delete it or choose another --out")
    return MiaError(f"{path} already exists; refusing to overwrite it (use --resume to continue it)")


#: Rows per slice when a reader checks every column of a run (HDF5's per-chunk checksums).
CHECK_ROWS = 4_096

#: The most journal bytes between compactions. A compaction's memory does not depend on it (records are
#: read back one block at a time); it bounds the journal's disk space and what a reader of a killed run
#: replays into memory.
MAX_JOURNAL_BYTES = 256 * 2**20
#: Journal bytes between two hand-backs of freed memory (:func:`release_freed_memory`) while rows are written.
TRIM_BYTES = 32 * 2**20


def compact_threshold(base_size: int) -> int:
    """Journal bytes that trigger a compaction: the file's size (amortised linear while the file is
    small), at least 16 MiB and at most ``MAX_JOURNAL_BYTES`` (a large file is then
    copied once per 256 MiB of new rows, raw chunks without recompression); ``MIA_RUN_COMPACT_BYTES``
    sets it outright (tests: 1 compacts after every batch)."""
    forced = os.environ.get("MIA_RUN_COMPACT_BYTES")
    return int(forced) if forced else min(max(16 * 2**20, base_size), MAX_JOURNAL_BYTES)


class RunWriter:
    """Creates a run file (or reopens one to resume) and commits rows batch by batch.

    Every :meth:`append` is one journal record (rows and counters together, fsynced);
    the journal is compacted into the HDF5 file (built in memory, written to a temporary
    name, fsynced, renamed) when it outgrows the file, on :meth:`finish` and on
    :meth:`close`. See docs/prompt.md, "Crash safety".
    """

    def __init__(self, path: Path, journal: Journal, attrs: dict[str, Any],
                 columns: dict[str, tuple[str, int | None]]) -> None:
        self.path = path
        self.journal = journal
        self._attrs = attrs
        self.columns = columns
        self.rows_done = int(attrs["rows"])
        self.seq = int(attrs.get("journal_seq", 0))
        self.was_complete = False

    @classmethod
    def create(cls, path: str | os.PathLike, attrs: Mapping[str, Any], max_length: int,
               columns: Mapping[str, tuple[str, int | str | None]] | None = None,
               static: Mapping[str, np.ndarray] | None = None) -> RunWriter:
        """A new run at ``path`` (never overwrites). ``columns`` adds declared columns
        (``name -> (kind, width)``, kind in int32/int64/float32/float64/str, width None for
        one value per row, an int or ``"max_length"`` for a row of values); ``static``
        stores whole arrays once (e.g. retokenized prefixes). The file appears whole
        (written aside, then linked into place) or not at all."""
        path = Path(path)
        if path.exists():
            raise _exists(path)
        declared: dict[str, tuple[str, int | None]] = {}
        for name, (kind, width) in {**STANDARD_COLUMNS, **(columns or {})}.items():
            if kind not in KINDS:
                raise ValueError(f"column {name!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
            declared[name] = (kind, max_length if width == "max_length" else width)
        full = {**attrs, "format_version": RUN_FORMAT_VERSION, "mia_version": __version__,
                "max_length": max_length, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "complete": False, "rows": 0, "journal_seq": 0, "provenance": provenance(attrs.get("backend"))}

        def fill(f: h5py.File) -> None:
            for name, (kind, width) in declared.items():
                f.create_dataset(name, dtype=KINDS[kind][0], **_dataset_layout(kind, width))
            for name, array in (static or {}).items():
                f.create_dataset(name, data=array)
            f.attrs.update(encode_attrs({**full, "columns": json.dumps(declared)}))

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_hdf5_atomically(path, fill, overwrite=False)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            raise disk_error(exc, path, "no run file was created") from None
        try:
            journal = Journal(path)
        except (OSError, JournalBusy) as exc:
            path.unlink(missing_ok=True)  # empty, just made by us
            raise disk_error(exc, journal_path(path), "no run file was created") if isinstance(exc, OSError) \
                else MiaError(f"{path} was claimed by another process") from None
        return cls(path, journal, {k: decode_attr(v) for k, v in encode_attrs(full).items()}, declared)

    @classmethod
    def reopen(cls, path: str | os.PathLike, salvage: Salvage | None = None) -> RunWriter:
        """Reopen a run to continue it: the journal of a killed writer is replayed and compacted.
        A damaged journal is refused with one line (nothing changed) unless ``salvage`` says how to
        fill the rows of its damaged records: then a copy of the journal is kept beside the run
        (``RUN.h5.journal.damaged``, never overwriting an earlier copy), every intact record is
        compacted into the run, and the lost rows are listed in the ``salvage_rows`` attribute."""
        path = Path(path)
        if not path.is_file():
            raise MiaError(f"run {str(path)!r} not found")
        try:
            journal = Journal(path)
        except JournalBusy:
            raise MiaError(f"{path} is being written by another running mia process; wait for it to end "
                           "(or stop it, then resume)") from None
        except OSError as exc:
            raise disk_error(exc, journal_path(path), "the run is unchanged") from None
        try:
            with open_hdf5(path, DAMAGED_RUN) as f:
                attrs, columns, rows, seq = _base(f)
            pending = _pending(path, seq, rows)
            if pending.problem is not None and salvage is None:
                raise MiaError(pending.problem)
            records = pending.records
            if pending.problem is None:
                # A torn last record (killed mid-write) is dropped; records already in the file too.
                journal.cut(pending.end if records else 0)
            attrs, rows, seq = _replay_attrs({**attrs, "rows": rows, "journal_seq": seq}, records)
            writer = cls(path, journal, {**attrs, "journal_seq": seq}, columns)
            writer.was_complete = bool(attrs.get("complete", False))
            if pending.problem is not None:
                writer._salvage(pending, salvage)
            elif writer.was_complete:
                writer.set_attrs(complete=False)
            writer._compact()
        except OSError as exc:
            journal.close(remove=journal.size == 0)
            raise disk_error(exc, path, "the run is unchanged; free space and resume again") from None
        except BaseException:
            journal.close(remove=journal.size == 0)  # no empty journal left beside a refused file
            raise
        return writer

    @classmethod
    def finish_compaction(cls, path: str | os.PathLike) -> bool:
        """Finish what a writer killed during its last compaction left: fold its journal into the run
        and remove its temporary files, changing no row or attribute. True if anything was done."""
        path = Path(path)
        removed = remove_stale_temps(path)
        if not journal_path(path).exists():
            return removed > 0
        writer = cls.reopen(path)
        if writer.was_complete:
            writer.set_attrs(complete=True)  # reopen marked it incomplete, as for a resumed run
        writer.close()
        return True

    def _salvage(self, pending: Pending, salvage: Salvage) -> None:
        """Keep a copy of the damaged journal, then compact the intact records with placeholders in the
        lost rows, the counters recomputed and the lost rows recorded (``salvage_rows``), and empty it."""
        copy = unused_path(self.path.parent, self.path.name + ".journal", ".damaged")
        write_atomically(copy, self.journal.path.read_bytes(), overwrite=False)
        placeholders = _placeholder_records(self.columns, pending.lost_rows, salvage.placeholders)
        records = _with_placeholders(pending.records, placeholders)
        with open_hdf5(self.path, DAMAGED_RUN) as f:
            merged = _merge(f, self.columns, pending.base_rows, records)
        earlier = [int(r) for r in self._attrs.get("salvage_rows") or []]
        self.rows_done = len(merged["prefix_row"])
        self._attrs.update(salvage.counters(merged))
        self._attrs.update(rows=self.rows_done, complete=False,
                           salvage_rows=sorted(set(earlier) | set(pending.lost_rows)),
                           salvaged=[*(self._attrs.get("salvaged") or []), {"journal_copy": copy.name,
                                     "rows_lost": pending.lost_rows, "rows_lost_from": pending.lost_from}])
        self._compact(records)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    @property
    def max_length(self) -> int:
        return int(self._attrs["max_length"])

    def _commit(self, record: Record) -> None:
        before = self.journal.size
        try:
            self.journal.append(record)
        except OSError as exc:
            raise disk_error(exc, self.journal.path, self._kept()) from None
        self.seq = record.seq
        self._attrs.update(record.attrs)
        self.rows_done = int(self._attrs["rows"])
        if self.journal.size > compact_threshold(self.path.stat().st_size):
            self._compact_or_keep()
        elif self.journal.size // TRIM_BYTES > before // TRIM_BYTES:
            release_freed_memory()  # the batches' buffers, freed between long-lived allocations

    def _kept(self) -> str:
        return (f"{self.rows_done} finished rows are kept in {self.path}; free space, then continue with "
                f"mia prompt --resume {self.path}")

    def set_attrs(self, **attrs: Any) -> None:
        """Record attributes durably (e.g. the batch-API state)."""
        self._commit(Record(self.seq + 1, "attrs", attrs=_jsonable(attrs)))

    def _normalize(self, columns: Mapping[str, Any], n: int) -> dict[str, Any]:
        unknown = set(columns) - set(self.columns)
        if unknown:
            raise ValueError(f"undeclared run columns: {sorted(unknown)}")
        values = dict(columns)
        values.setdefault("lengths", [min(len(t), self.max_length) for t in columns["tokens"]])
        out: dict[str, Any] = {}
        for name, (kind, width) in self.columns.items():
            dtype, fill = KINDS[kind]
            if name in values:
                data = values[name]
                if len(data) != n:
                    raise ValueError(f"column {name!r} has {len(data)} rows, expected {n}")
                if width is not None:
                    data = pad_rows(data, width, fill, dtype)[0]
                elif kind == "str":
                    # HDF5 strings cannot hold NUL (a byte-level tokenizer can decode one): shown as U+2400;
                    # the row's token ids, stored beside it, stay exact.
                    data = ["" if v is None else str(v).replace("\x00", NUL_SYMBOL) for v in data]
                else:
                    data = np.asarray([fill if v is None else v for v in data], dtype=dtype)
            else:
                data = [fill] * n if kind == "str" else np.full((n,) if width is None else (n, width), fill, dtype)
            out[name] = data
        return out

    def append(self, columns: Mapping[str, Any], **attrs: Any) -> None:
        """Commit one batch of rows, and ``attrs`` (the run's counters after it) with them.
        ``tokens``/``prefix_row`` are required; ``lengths`` and ``text`` default to the token
        counts and ""; other declared columns not given are filled with -1 / NaN / ""."""
        if "tokens" not in columns or "prefix_row" not in columns:
            raise ValueError("append needs at least 'tokens' and 'prefix_row'")
        n = len(columns["prefix_row"])
        if n == 0:
            if attrs:
                self.set_attrs(**attrs)
            return
        data = self._normalize(columns, n)
        end = self.rows_done + n
        self._commit(Record(self.seq + 1, "append", start=self.rows_done, columns=data,
                            attrs={**_jsonable(attrs), "rows": end}))

    def replace(self, rows: Any, columns: Mapping[str, Any], **attrs: Any) -> None:
        """Commit new values for existing ``rows`` (retried requests), with ``attrs``."""
        rows = [int(r) for r in rows]
        if not rows:
            return
        if min(rows) < 0 or max(rows) >= self.rows_done:
            raise ValueError(f"rows to replace must be below {self.rows_done}")
        data = self._normalize(columns, len(rows))
        self._commit(Record(self.seq + 1, "replace", rows=rows, columns=data, attrs=_jsonable(attrs)))

    def has(self, name: str) -> bool:
        return name in self.columns

    def failed_rows(self) -> np.ndarray:
        """Boolean mask of the rows committed so far whose request failed (:func:`failed_mask`)."""
        return failed_mask(self.read("error") if self.has("error") else None, self.rows_done)

    def discard(self) -> None:
        """Remove the run and its journal (a new run that failed before its first row)."""
        self.journal.close(remove=True)
        self.path.unlink(missing_ok=True)

    def read(self, name: str) -> np.ndarray:
        """One column as committed so far (file and journal)."""
        with open_hdf5(self.path, DAMAGED_RUN) as f:
            attrs, columns, rows, seq = _base(f)
            return _merge(f, columns, rows, _intact(self.path, seq, rows), [name])[name]

    def _compact(self, records: list[Record] | None = None) -> None:
        """Rewrite the run file with the journal's records (or ``records``) folded in, atomically; then
        empty the journal. Streamed: the file's columns are copied chunk by chunk as stored (HDF5's object
        copy, no decompression), then the records read back from the journal a block at a time and written
        after them (:func:`_fold_records`): memory holds neither the file nor the journal."""
        if self.journal.size == 0 and records is None:
            return
        attrs = {**self._attrs, "rows": self.rows_done, "journal_seq": self.seq}
        with open_hdf5(self.path, DAMAGED_RUN) as f:
            _, columns, rows, seq = _base(f)
            pending = _intact(self.path, seq, rows) if records is None else records

            def fill(out: h5py.File) -> None:
                for name in f:
                    out.copy(f[name], out, name=name)
                _fold_records({name: out[name] for name in columns}, columns, rows, pending)
                out.attrs.update(encode_attrs({**attrs, "columns": json.dumps(columns)}))

            refused = _write_or_refusal(self.path, fill)
        if refused is not None:  # raised here, outside open_hdf5, which would call it damage of the run
            raise refused
        self.journal.cut(0)
        release_freed_memory()

    def _compact_or_keep(self) -> None:
        """Compact; on a disk error the journal (already durable) simply stays."""
        try:
            self._compact()
        except OSError:
            pass

    def finish(self, **attrs: Any) -> None:
        """Mark the run complete (with timing and other final attributes) and compact it.
        ``complete`` may be given (False while failed rows remain)."""
        attrs.setdefault("complete", True)
        self.set_attrs(**attrs)
        try:
            self._compact()
        except OSError as exc:
            raise disk_error(exc, self.path, self._kept()) from None

    def close(self) -> None:
        """Compact what the journal holds (kept as is if the disk refuses) and release the run."""
        if self.journal.fd < 0:
            return
        try:
            self._compact()
        except OSError:
            self.journal.close()
            return
        except BaseException:
            self.journal.close()
            raise
        self.journal.close(remove=True)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def release_freed_memory() -> None:
    """Hand the memory a compaction freed back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    A compaction allocates and frees large buffers (HDF5's chunk and conversion buffers, the journal's
    records) between smaller long-lived allocations; glibc keeps the freed pages in its heap, so without this
    the process's resident memory grew by about 8 MB per compaction of a large run (13 bytes a row from 10^6
    to 10^7 rows in `mia prompt`) while the memory in use stayed flat (docs/scale.md)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _jsonable(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes for a journal record: plain Python, no secret (``mia_core.redact``)."""
    return redact({k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()})


class Run:
    """Read access to a run file. Arrays are read from the file on demand."""

    def __init__(self, path: str | os.PathLike, salvage: bool = False) -> None:
        """``salvage``: a damaged journal is read instead of refused: its intact records are the run,
        ``lost_rows`` the rows of damaged records (filled with -1/NaN/""), ``damage`` the line describing it."""
        self.path = Path(path)
        if not self.path.is_file():
            raise MiaError(f"run {str(path)!r} not found")
        if being_written(self.path):
            raise MiaError(f"{self.path} is being written by a running mia process; wait for it to end "
                           "(or stop it: its finished rows are kept and it can be resumed)")
        self._pending: list[Record] = []  # journal records of a killed writer, read back column by column
        self._merged: dict[str, np.ndarray] = {}
        self.damage: str | None = None
        self.lost_rows: list[int] = []
        with open_hdf5(self.path, DAMAGED_RUN) as f:
            attrs, columns, base_rows, seq = _base(f)
            pending = _pending(self.path, seq, base_rows)
            if pending.problem is not None and not salvage:
                raise MiaError(pending.problem)
            records = pending.records
            if pending.problem is not None:
                self.damage, self.lost_rows = pending.problem, pending.lost_rows
                records = _with_placeholders(records, _placeholder_records(columns, self.lost_rows, None))
            self.attrs: dict[str, Any] = _replay_attrs({**attrs, "rows": base_rows}, records)[0]
            if self.damage is not None:
                self.attrs["complete"] = False
            self.columns: list[str] = list(columns)
            self.datasets: list[str] = list(f.keys())
            # A killed writer's journal: its finished rows are part of the run (a column is merged when read).
            self._pending, self._base_rows = records, base_rows
            self.size = base_rows + sum(r.size for r in records if r.op == "append")
            for name in self.columns:  # every column is readable (checksums hold) before any work,
                for start in range(0, base_rows, CHECK_ROWS):  # read in slices: memory stays flat
                    f[name][start:start + CHECK_ROWS]
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

    @property
    def kind(self) -> RunKind:
        return RunKind.of(self.attrs, self.columns)

    def failed_rows(self, rows: slice | None = None) -> np.ndarray:
        """Boolean mask of the rows (of ``rows``, default all) whose request failed (:func:`failed_mask`)."""
        rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
        return failed_mask(self.read("error", rows) if self.has("error") else None, len(range(self.size)[rows]))

    def count_failed(self) -> int:
        """How many rows failed, counted ``CHECK_ROWS`` rows at a time (no mask of every row)."""
        if not self.has("error"):
            return 0
        return sum(int(self.failed_rows(rows).sum()) for rows in self.row_slices())

    def row_slices(self, size: int | None = None) -> Iterator[slice]:
        """The run's rows as consecutive slices of at most ``size`` rows (default ``CHECK_ROWS``)."""
        size = size or CHECK_ROWS
        return (slice(start, min(start + size, self.size)) for start in range(0, self.size, size))

    def has(self, name: str) -> bool:
        return name in self.datasets

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """One column (only the finished rows; ``rows`` a slice) or static dataset (``rows`` a slice or
        sorted unique indices); strings come back as ``str``."""
        if self._pending and name in self.columns and name not in self._merged:
            with open_hdf5(self.path, DAMAGED_RUN) as f:
                columns = {k: (v[0], v[1]) for k, v in json.loads(f.attrs["columns"]).items()}
                self._merged[name] = _merge(f, columns, self._base_rows, self._pending, [name])[name]
        if name in self._merged:
            rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
            return self._merged[name][rows]
        with open_hdf5(self.path, DAMAGED_RUN) as f:
            ds = f[name]
            if name in self.columns:
                rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
                data = ds[rows]
            else:
                data = ds[()] if rows is None else ds[rows]
            if ds.dtype.kind == "O":
                data = as_strings(data)
            return data

    def tokens(self, rows: slice | None = None) -> list[np.ndarray]:
        """The generated (or, teacher-forced, argmax) tokens of each row (of ``rows``, default all), trimmed to
        its length."""
        tokens, lengths = self.read("tokens", rows), self.read("lengths", rows)
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
                except DamagedFile:
                    raise  # there, but damaged: not "missing"
                except MiaError as exc:
                    last = exc
            else:
                raise MiaError(f"the prefix map of run {self.path} is missing: {last}")
        return self._map

    def _per_row(self, name: str, lengths_name: str, rows: slice | None = None) -> list[np.ndarray]:
        """Each run row's (of ``rows``, default all) prefix or suffix, trimmed: the run's own arrays when it
        retokenized them (one per map row), else the map's."""
        prefix_rows = self.read("prefix_row", rows)
        unique = np.unique(prefix_rows)
        if self.has(name):
            picked, lengths = self.read(name, unique), self.read(lengths_name, unique)
        else:
            picked = self.prefix_map.read(name, unique)
            lengths = (self.prefix_map.read(lengths_name, unique) if lengths_name == "suffix_lengths"
                       else np.full(len(unique), picked.shape[1]))
        index = np.searchsorted(unique, prefix_rows)
        return [picked[i, :lengths[i]] for i in index]

    def prefixes(self, rows: slice | None = None) -> list[np.ndarray]:
        """The prefix tokens each row (of ``rows``, default all) was prompted with (in the run's tokenizer)."""
        return self._per_row("prefixes", "prefix_lengths", rows)

    def suffixes(self, rows: slice | None = None) -> list[np.ndarray]:
        """The true suffix of each row (in the run's tokenizer: retokenized when the run was)."""
        return self._per_row("suffixes", "suffix_lengths", rows)

    def labels(self, rows: slice | None = None) -> np.ndarray:
        """Each row's (of ``rows``, default all) sample label (its map row's ``sample_label``, "" when unlabelled) as
        an object array in which each distinct label is one shared ``str``: 8 bytes a row, read ``CHECK_ROWS`` rows
        at a time."""
        rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
        span = range(self.size)[rows]
        out = np.empty(len(span), dtype=object)
        shared: dict[str, str] = {}
        for start in range(0, len(span), CHECK_ROWS):
            part = slice(span.start + start, span.start + min(start + CHECK_ROWS, len(span)))
            values, inverse = np.unique(self.prefix_map.read("sample_label", self.read("prefix_row", part)),
                                        return_inverse=True)
            distinct = np.empty(len(values), dtype=object)
            distinct[:] = [shared.setdefault(str(v), str(v)) for v in values]
            out[start:start + CHECK_ROWS] = distinct[inverse.reshape(-1)]
        return out

    def map_column(self, name: str, rows: slice | None = None) -> np.ndarray:
        """A per-prefix column of the map (``sample_id``, ``sample_label``, ...) for each run row (of ``rows``,
        default all), read ``CHECK_ROWS`` rows at a time into one array (a read of every row at once through HDF5's
        selection of scattered rows held ~60 bytes a row more than the result)."""
        rows = slice(0, self.size) if rows is None else _clip(rows, self.size)
        span = range(self.size)[rows]
        out: np.ndarray | None = None
        for start in range(0, len(span), CHECK_ROWS):
            part = slice(span.start + start, span.start + min(start + CHECK_ROWS, len(span)))
            values = self.prefix_map.read(name, self.read("prefix_row", part))
            if out is None:
                out = np.empty((len(span),) + values.shape[1:], dtype=values.dtype)
            out[start:start + CHECK_ROWS] = values
        return out if out is not None else self.prefix_map.read(name, self.read("prefix_row", rows))

    def to_dicts(self, with_map: bool = True) -> list[dict[str, Any]]:
        """The seed's "list of dictionaries": one per row, with the prefix and generated tokens."""
        return list(self.iter_dicts(with_map))

    def iter_dicts(self, with_map: bool = True, chunk_rows: int = 10_000) -> Iterator[dict[str, Any]]:
        """The same dictionaries, read from the file ``chunk_rows`` rows at a time: memory does not grow
        with the run."""
        extra = [c for c in self.columns if c not in STANDARD_COLUMNS]
        for start in range(0, self.size, chunk_rows):
            yield from self._chunk_dicts(slice(start, min(start + chunk_rows, self.size)), extra, with_map)

    def _chunk_dicts(self, rows: slice, extra: list[str], with_map: bool) -> Iterator[dict[str, Any]]:
        prefix_rows, lengths = self.read("prefix_row", rows), self.read("lengths", rows)
        tokens, texts = self.read("tokens", rows), self.read("text", rows)
        extra_data = {c: self.read(c, rows) for c in extra}
        if with_map:
            prefixes = self.prefixes(rows)
            ids = self.prefix_map.read("sample_id", prefix_rows)
            labels = self.prefix_map.read("sample_label", prefix_rows)
        for j, i in enumerate(range(rows.start, rows.stop)):
            row: dict[str, Any] = {"index": i, "prefix_index": int(prefix_rows[j])}
            if with_map:
                row.update(sample_id=str(ids[j]), sample_label=str(labels[j]),
                           prefix_tokens=[int(t) for t in prefixes[j]])
            row.update(generated_tokens=[int(t) for t in tokens[j, :lengths[j]]], text=str(texts[j]))
            for c in extra:
                value = extra_data[c][j]
                row[c] = plain(value[:lengths[j]] if isinstance(value, np.ndarray) else value)
            yield row


def _clip(rows: slice, size: int) -> slice:
    start, stop, step = rows.indices(size)
    return slice(start, stop, step)


def open_run(path: str | os.PathLike, salvage: bool = False) -> Run:
    """Open a run file for reading (a clear error when it is missing or not a run, or its journal is
    damaged; with ``salvage`` such a run is read from its intact records, see :class:`Run`)."""
    return Run(path, salvage)
