"""One fingerprint table across all shards, per window length, so a lookup costs the same for 1 or 1000 shards.

Files at the index root: ``windows.W.hash`` (sorted, distinct u64 fingerprints of every ``W``-token window
of every shard, the same fingerprints as the shards' tables) and ``windows.W.loc`` (u64, same order:
``shard << 40 | position`` of one window with that fingerprint). ``index.json`` records, under
``window_tables``, each table's entry count and the SHA-256 of both files, checked before the first use.

It is built when the index is finished by merging the shards' sorted tables range by range of the
fingerprint space (each shard's slice of a range found by binary search), so the merge holds about
``RANGE_ENTRIES`` entries at a time whatever the size of the index. A lookup scans this one table and
verifies a hit against the tokens of the shard it names (reader.py); the answers stay the suffix
table's, as with the shards' own tables (window_table.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.corpus_index.window_table import SortedFingerprints, WindowTable, read_array
from mia_core.formats.integrity import sha256_file

TABLES_KEY = "window_tables"  # in index.json: {"W": {"entries": n, "sha256": {file name: digest}}}
SHARD_SHIFT = 40  # positions below 2^40 tokens per shard, shards below 2^23
POSITION_MASK = np.uint64((1 << SHARD_SHIFT) - 1)
MAX_SHARDS = 1 << (63 - SHARD_SHIFT)  # lookups read locations as int64 (-1: absent), so the top bit stays clear
RANGE_ENTRIES = 1 << 22  # entries merged at once: ~4 M x 16 bytes, plus the sort's temporaries


def global_paths(root: Path, width: int) -> tuple[Path, Path]:
    return root / f"windows.{width}.hash", root / f"windows.{width}.loc"


def range_bounds(tables: Sequence[np.ndarray], range_entries: int) -> np.ndarray:
    """Fingerprints that cut the merge into ranges of at most ``range_entries`` entries in all.

    Every ``stride``-th fingerprint of each shard is a sample; a cut every ``per`` samples leaves each
    shard at most ``stride`` entries per sample of its own in the range, plus one ``stride``, and at most
    ``per + shards`` samples fall in a range (a shard's fingerprints are distinct, so at most ``shards``
    samples tie): ``stride * (per + 2 * shards) <= range_entries``.
    """
    shards = max(len(tables), 1)
    stride = max(1, range_entries // (4 * shards))
    per = max(1, range_entries // (2 * stride))
    samples = np.sort(np.concatenate([t[::stride] for t in tables])) if tables else np.zeros(0, np.uint64)
    return samples[per::per]


def _merge_range(tables: Sequence[WindowTable], cuts: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct fingerprints, locations) of range ``i``: the first shard's window where shards share one."""
    hashes, locs = [], []
    for s, table in enumerate(tables):
        lo, hi = cuts[s, i], cuts[s, i + 1]
        if hi > lo:
            hashes.append(table.hashes[lo:hi])
            locs.append(table.positions[lo:hi].astype(np.uint64) | np.uint64(s << SHARD_SHIFT))
    if not hashes:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    h, loc = np.concatenate(hashes), np.concatenate(locs)
    order = np.argsort(h, kind="stable")  # stable: among equal fingerprints the lowest shard comes first
    h, loc = h[order], loc[order]
    first = np.ones(len(h), dtype=bool)
    np.not_equal(h[1:], h[:-1], out=first[1:])
    return h[first], loc[first]


def merge_window_tables(root: Path, shard_folders: Sequence[Path], shard_tokens: Sequence[int], width: int,
                        bits: int, range_entries: int = RANGE_ENTRIES) -> dict[str, Any] | None:
    """Write ``root``'s table for ``width`` from the shards' tables; its record for index.json.

    None (no table; lookups ask each shard) for one shard (its own table is the index's: no copy on disk), or
    when a shard or position does not fit the 23 + 40-bit location.
    """
    if len(shard_folders) < 2 or len(shard_folders) > MAX_SHARDS or any(n >= 1 << SHARD_SHIFT for n in shard_tokens):
        return None
    tables = [WindowTable(f, width, n, bits) for f, n in zip(shard_folders, shard_tokens, strict=True)]
    bounds = range_bounds([t.hashes for t in tables], range_entries)
    cuts = np.array([np.r_[0, np.searchsorted(t.hashes, bounds), len(t.hashes)] for t in tables], dtype=np.int64)
    hash_path, loc_path = global_paths(root, width)
    digests = {hash_path.name: hashlib.sha256(), loc_path.name: hashlib.sha256()}
    entries = 0
    with open(hash_path, "wb") as fh, open(loc_path, "wb") as fl:
        for i in range(len(bounds) + 1):
            h, loc = _merge_range(tables, cuts, i)
            for f, array in ((fh, h.astype("<u8")), (fl, loc.astype("<u8"))):
                data = array.tobytes()
                f.write(data)
                digests[Path(f.name).name].update(data)
            entries += len(h)
        for f in (fh, fl):
            f.flush()
            os.fsync(f.fileno())
    return {"entries": entries, "sha256": {name: d.hexdigest() for name, d in digests.items()}}


class GlobalWindowTable(SortedFingerprints):
    """The index-level table of one window length (memory-mapped); its values are ``shard << 40 | position``."""

    def __init__(self, root: Path, width: int, record: dict[str, Any], bits: int) -> None:
        self.root, self.width = root, width
        try:
            entries, self.checksums = int(record["entries"]), dict(record["sha256"])
        except (KeyError, TypeError, ValueError):
            raise MiaError(f"index metadata {root}/index.json is corrupt: its {width}-token window table record "
                           "is malformed") from None
        paths = global_paths(root, width)
        for path in paths:
            if not path.is_file():
                raise MiaError(f"index {root} is corrupt: {path.name} is missing")
            if path.stat().st_size != entries * 8:
                raise MiaError(f"index {root} is corrupt: {path.name} has {path.stat().st_size} bytes, "
                               f"expected {entries * 8}")
        super().__init__(read_array(paths[0], "<u8"), read_array(paths[1], "<u8"), bits)

    def check_files(self) -> None:
        """Both files against the checksums the build recorded, once, before the first lookup."""
        if not self.checksums:
            return
        for name, expected in self.checksums.items():
            try:
                actual = sha256_file(self.root / name)
            except OSError as exc:
                raise MiaError(f"index {self.root} is corrupt: {name} cannot be read ({exc.strerror or exc})") \
                    from None
            if actual != expected:
                raise MiaError(f"index {self.root} is corrupt: {name} does not match the checksum its build "
                               "recorded (bytes changed on disk); build the index again with mia index")
        self.checksums = {}

    def locate(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows whose fingerprint the table holds, the shard and the position of a window with it)."""
        self.check_files()
        loc = self.candidates(windows)
        hit = np.flatnonzero(loc >= 0)
        loc = loc[hit]
        return hit, loc >> SHARD_SHIFT, loc & np.int64(POSITION_MASK)


def open_global_tables(root: Path, meta: dict[str, Any], bits: int) -> dict[int, GlobalWindowTable]:
    """The index's tables by window length ({} for an index built before them: lookups ask each shard)."""
    records = meta.get(TABLES_KEY) or {}
    if not isinstance(records, dict):
        raise MiaError(f"index metadata {root}/index.json is corrupt: {TABLES_KEY!r} is not an object")
    if not all(str(w).isdigit() for w in records):
        raise MiaError(f"index metadata {root}/index.json is corrupt: {TABLES_KEY!r} has a key that is not a length")
    return {int(w): GlobalWindowTable(root, int(w), rec, bits) for w, rec in records.items()}
