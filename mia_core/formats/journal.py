"""The append-only journal beside a run being written: ``<run>.h5.journal``.

One record per finished batch (or attribute change), each framed as
``MIAJ | payload length (u64) | crc32 (u32) | payload`` and fsynced before the batch is
reported. A record holds the batch's rows *and* the run's counters after it, so the two
are committed together. Records carry increasing sequence numbers; the run file records
the last one compacted into it (``journal_seq``), so replaying a journal twice is harmless.

:func:`scan` reads every intact record and says what else it found: a record cut short at
the end (what a kill leaves: ignored, and cut off by the next writer), and damage a kill
cannot make (a record failing its checksum, bytes that are no record, the same record twice
with different contents). The scan resynchronises on the next ``MIAJ`` header whose checksum
holds, so one damaged record never hides the intact ones after it; what to do about the
damage is the run's business (``mia_core.formats.runs``).

The process writing a run holds an exclusive ``flock`` on its journal; readers and a
second writer test it, so a run being written is recognised as such (a killed writer's
lock is released by the kernel).

Payload: ``u32 meta length | meta JSON | npz of the numeric columns`` (no pickle); string
columns travel in the meta JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mia_core.formats.safeio import fsync, fsync_dir, step, write_all

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are still journaled
    fcntl = None  # type: ignore[assignment]

MAGIC = b"MIAJ"
HEADER = struct.Struct("<4sQI")
META_LEN = struct.Struct("<I")
SUFFIX = ".journal"


def journal_path(run_path: str | os.PathLike) -> Path:
    p = Path(run_path)
    return p.with_name(p.name + SUFFIX)


@dataclass
class Record:
    """One journal entry: ``op`` is ``append`` (rows from ``start``), ``replace`` (rows
    ``rows``, for retried requests) or ``attrs`` (attributes only).

    A record found by :func:`scan` leaves its columns in the journal (``stored``: where, ``count``: its
    rows) and :meth:`data` reads them back when they are needed, one record at a time: a scan of a
    journal of any size holds only the records' headers."""

    seq: int
    op: str
    start: int = 0
    rows: list[int] | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    count: int | None = None
    stored: tuple[Path, int] | None = None

    @property
    def size(self) -> int:
        if self.count is not None:
            return self.count
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def data(self) -> dict[str, Any]:
        """Its columns: those it holds, else read back from its place in the journal (checked again)."""
        if self.stored is None:
            return self.columns
        path, offset = self.stored
        with open(path, "rb") as f:
            found = _record_at(_Bytes(f), offset)
        if not isinstance(found, tuple) or found[0].seq != self.seq:
            raise OSError(f"journal {path} changed while it was read (record {self.seq} at offset {offset})")
        return found[0].columns


def encode(record: Record) -> bytes:
    strings = {k: list(v) for k, v in record.columns.items() if not isinstance(v, np.ndarray)}
    arrays = {k: v for k, v in record.columns.items() if isinstance(v, np.ndarray)}
    meta = json.dumps({"seq": record.seq, "op": record.op, "start": record.start, "rows": record.rows,
                       "attrs": record.attrs, "strings": strings}, default=_plain).encode()
    buffer = io.BytesIO()
    if arrays:
        np.savez(buffer, **arrays)
    payload = META_LEN.pack(len(meta)) + meta + buffer.getvalue()
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _plain(value: Any) -> Any:
    """``json.dumps``'s hook for numpy values in a record: exact (NaN stays NaN), and anything else
    refused; not ``formats.hdf5.plain``, which makes output for people and turns NaN into None."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a run journal")


def decode(payload: bytes) -> Record:
    (n,) = META_LEN.unpack_from(payload)
    meta = json.loads(payload[META_LEN.size:META_LEN.size + n])
    columns: dict[str, Any] = dict(meta["strings"])
    rest = payload[META_LEN.size + n:]
    if rest:
        with np.load(io.BytesIO(rest), allow_pickle=False) as npz:
            columns.update({k: npz[k] for k in npz.files})
    return Record(int(meta["seq"]), meta["op"], int(meta["start"]), meta["rows"], columns, meta["attrs"])


@dataclass
class Scan:
    """What a journal holds: ``records`` are the intact ones in file order (``offsets[i]`` is
    where record ``i`` starts; an identical duplicate is kept once), ``damaged`` the byte ranges
    holding no intact record (``framed[i]``: how many record headers whose length fits lie in range
    ``i``, i.e. records failing their checksum), ``conflicts`` the sequence numbers found twice with different
    contents (neither copy is in ``records``), ``torn`` the offset of a record cut short at the
    end (None when there is none) and ``end`` where the intact data ends."""

    records: list[Record] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)
    framed: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    torn: int | None = None
    end: int = 0
    size: int = 0

    @property
    def damage(self) -> bool:
        return bool(self.damaged or self.conflicts)


class _Bytes:
    """A journal file read at offsets, a record at a time (never the whole file: a journal may hold
    hundreds of MiB); ``find`` searches it in bounded windows."""

    WINDOW = 1 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(max(0, min(n, self.size - offset)))

    def find(self, needle: bytes, start: int, stop: int | None = None) -> int:
        stop = self.size if stop is None else min(stop, self.size)
        while start < stop:
            window = self.read(start, min(self.WINDOW, stop - start) + len(needle) - 1)[:stop - start]
            found = window.find(needle)
            if found >= 0:
                return start + found
            start += self.WINDOW
        return -1


def _record_at(data: _Bytes, offset: int) -> tuple[Record, bytes, int] | str:
    """The intact record starting at ``offset`` (record, payload, end), else ``"torn"`` when the
    bytes there are the start of a record running past the end of the data, else ``"bad"``."""
    rest = len(data) - offset
    head = data.read(offset, HEADER.size)
    if rest < HEADER.size:
        return "torn" if MAGIC.startswith(head[:len(MAGIC)]) else "bad"
    magic, length, crc = HEADER.unpack(head)
    if magic != MAGIC:
        return "bad"
    end = offset + HEADER.size + length
    if end > len(data):
        return "torn"
    payload = data.read(offset + HEADER.size, length)
    if zlib.crc32(payload) != crc:
        return "bad"
    try:
        return decode(payload), payload, end
    except (ValueError, KeyError, TypeError, struct.error, OSError):
        return "bad"


def scan(path: str | os.PathLike) -> Scan:
    """Read a journal record by record, keeping every intact record's header, wherever the damage is
    (see the module doc); the records' columns stay in the file (:meth:`Record.data`)."""
    try:
        with open(path, "rb") as f:
            return _scan(_Bytes(f), Path(path))
    except FileNotFoundError:
        return Scan()


def _scan(data: _Bytes, path: Path) -> Scan:
    out = Scan(size=len(data))
    payloads: dict[int, bytes] = {}
    bad_from: int | None = None  # start of the damaged bytes being skipped
    torn: int | None = None  # a record cut short: a kill's work unless an intact record follows
    offset = 0
    while offset < len(data):
        found = _record_at(data, offset)
        if isinstance(found, tuple):
            record, payload, end = found
            record.count, record.stored, record.columns = record.size, (path, offset), {}
            if torn is not None or bad_from is not None:
                _damaged(out, data, min(x for x in (torn, bad_from) if x is not None), offset)
                torn = bad_from = None
            _keep(out, payloads, record, payload, offset)
            out.end = offset = end
            continue
        if found == "torn" and bad_from is None and torn is None:
            torn = offset
        elif bad_from is None and torn is None:
            bad_from = offset
        following = data.find(MAGIC, offset + 1)
        offset = len(data) if following < 0 else following
    if bad_from is not None:
        _damaged(out, data, min(x for x in (torn, bad_from) if x is not None), len(data))
    else:
        out.torn = torn
    return out


def _damaged(out: Scan, data: _Bytes, start: int, stop: int) -> None:
    """Record the damaged range ``start..stop`` and how many framed records (header and length intact) it holds."""
    framed, offset = 0, start
    while 0 <= offset < stop:
        if offset + HEADER.size <= stop:
            magic, length, _ = HEADER.unpack(data.read(offset, HEADER.size))
            if magic == MAGIC and offset + HEADER.size + length <= stop:
                framed += 1
                offset += HEADER.size + length
                continue
        offset = data.find(MAGIC, offset + 1, stop)
    out.damaged.append((start, stop))
    out.framed.append(framed)


def _keep(out: Scan, payloads: dict[int, bytes], record: Record, payload: bytes, offset: int) -> None:
    """Add an intact record; the same sequence number again is dropped when identical, a conflict if not
    (compared by digest: the payloads themselves are not kept, so a scan holds the journal once)."""
    seen = payloads.get(record.seq)
    payload = hashlib.blake2b(payload, digest_size=16).digest()
    if seen is None:
        payloads[record.seq] = payload
        out.records.append(record)
        out.offsets.append(offset)
    elif seen != payload and record.seq not in out.conflicts:
        out.conflicts.append(record.seq)
        index = next(i for i, r in enumerate(out.records) if r.seq == record.seq)
        del out.records[index], out.offsets[index]


def read_records(path: str | os.PathLike) -> tuple[list[Record], int]:
    """Every intact record of a journal, and the offset where the intact data ends."""
    found = scan(path)
    return found.records, found.end


def being_written(run_path: str | os.PathLike) -> bool:
    """Whether a live process holds the run's journal (is writing the run right now)."""
    path = journal_path(run_path)
    if fcntl is None or not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


class JournalBusy(Exception):
    """Another live process holds the journal."""


class Journal:
    """The writer's end: an exclusive lock and durable appends."""

    def __init__(self, run_path: str | os.PathLike) -> None:
        self.path = journal_path(run_path)
        existed = self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self.fd)
                raise JournalBusy(str(self.path)) from None
        if not existed:
            fsync_dir(self.path.parent)
        self.size = os.fstat(self.fd).st_size

    def cut(self, offset: int) -> None:
        """Drop everything from ``offset`` on (a torn last record; or all, after compaction)."""
        if offset != self.size:
            step("truncate journal")
            os.ftruncate(self.fd, offset)
            fsync(self.fd)
            self.size = offset

    def append(self, record: Record) -> None:
        """Write one record durably; on failure the journal is cut back to what it was."""
        data = encode(record)
        start = self.size
        try:
            os.lseek(self.fd, start, os.SEEK_SET)
            write_all(self.fd, data, "journal record")
            fsync(self.fd)
        except BaseException:
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass  # a torn record is ignored by every reader anyway
            raise
        self.size = start + len(data)

    def close(self, remove: bool = False) -> None:
        if self.fd < 0:
            return
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self.fd)  # releases the lock
        self.fd = -1
