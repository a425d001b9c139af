"""Reading an existing infini-gram index (Liu et al. 2024) for ``mia score --index``.

infini-gram's on-disk layout (its ``indexing.py`` and engine), per shard ``s``:

- ``tokenized.s``: the corpus as little-endian tokens (u16 by default; u8/u32 in later versions),
  each document preceded by a separator of all-ones bytes (``\\xff\\xff`` for u16);
- ``table.s``: the suffix array, one entry per token, each ``ptr_size`` bytes little-endian
  (``ptr_size = file size of table / number of tokens``), holding **byte offsets** into
  ``tokenized.s``, sorted by comparing the suffixes' bytes;
- ``offset.s``: u64 byte offsets of each document in ``tokenized.s``
  (and optionally ``metadata.s`` / ``metaoff.s``, unused here).

Comparing little-endian bytes is comparing byte-swapped token values, so the vectorised
search of suffix_search.py reads the table with ``swap=True``. The index does not record its
tokenizer: ``mia index OUT --infini-gram DIR --model NAME`` writes a small mia index folder that
points at DIR and records the tokenizer the user names, so ``mia score`` can check it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.scoring.suffix_search import SuffixSearch

ROWS = 1 << 14  # query positions searched together (matching statistics)
CHECK_TOKENS = 1 << 24  # tokens per shard checked against the tokenizer's vocabulary when linking


def shard_numbers(folder: Path) -> list[int]:
    found = sorted(int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"tokenized\.(\d+)", p.name)))
    return found


def looks_like_infini_gram(folder: Path) -> bool:
    return folder.is_dir() and bool(shard_numbers(folder)) and (folder / f"table.{shard_numbers(folder)[0]}").exists()


class InfiniGramShard:
    """One ``tokenized.s``/``table.s``/``offset.s`` triple, memory-mapped."""

    def __init__(self, folder: Path, number: int, token_width: int) -> None:
        self.folder, self.number = folder, number
        paths = {kind: folder / f"{kind}.{number}" for kind in ("tokenized", "table", "offset")}
        for path in paths.values():
            if not path.is_file():
                raise MiaError(f"infini-gram index {folder} is incomplete: {path.name} is missing")
        size = paths["tokenized"].stat().st_size
        if size == 0 or size % token_width:
            raise MiaError(f"infini-gram index {folder}: tokenized.{number} has {size} bytes, not a whole number "
                           f"of {token_width}-byte tokens (wrong --token-width?)")
        self.tokens = size // token_width
        self.width = token_width
        table_size = paths["table"].stat().st_size
        if table_size % self.tokens:
            raise MiaError(f"infini-gram index {folder}: table.{number} has {table_size} bytes, not a multiple of "
                           f"its {self.tokens} tokens (wrong --token-width?)")
        self.ptr_size = table_size // self.tokens
        if not 1 <= self.ptr_size <= 8:
            raise MiaError(f"infini-gram index {folder}: table.{number} has {self.ptr_size}-byte entries")
        self.tok = np.asarray(np.memmap(paths["tokenized"], dtype=f"<u{token_width}", mode="r"))
        self._table = np.asarray(np.memmap(paths["table"], dtype=np.uint8, mode="r")).reshape(self.tokens,
                                                                                              self.ptr_size)
        self._weights = (np.uint64(1) << (np.uint64(8) * np.arange(self.ptr_size, dtype=np.uint64)))
        self.separator = (1 << (8 * token_width)) - 1
        self.search = SuffixSearch(self.tok, self._suffix_at, self.tokens, swap=True)
        self.doc_starts = np.asarray(np.memmap(paths["offset"], dtype="<u8", mode="r")).astype(np.int64) \
            // token_width if paths["offset"].stat().st_size else np.zeros(0, dtype=np.int64)
        self.windows: dict[int, Any] = {}

    def _suffix_at(self, ranks: np.ndarray) -> np.ndarray:
        """Token positions of the suffixes at ``ranks`` (the table holds byte offsets)."""
        raw = self._table[ranks].astype(np.uint64)
        offsets = (raw * self._weights).sum(axis=1, dtype=np.uint64)
        return (offsets // np.uint64(self.width)).astype(np.int64)

    def verify(self) -> None:
        """Checks that neighbouring suffixes are in order (a full pass, in blocks)."""
        block = 1 << 16
        for lo in range(0, self.tokens - 1, block):
            ranks = np.arange(lo, min(lo + block, self.tokens - 1))
            right = self._suffix_at(ranks + 1)
            q = self.search.key(self.tok[np.minimum(right[:, None] + np.arange(16), self.tokens - 1)])
            q[right[:, None] + np.arange(16) >= self.tokens] = -1
            if (self.search.compare(self._suffix_at(ranks), q) > 0).any():
                raise MiaError(f"infini-gram index {self.folder}: table.{self.number} is not sorted")

    def _ranges(self, query: list[int]) -> tuple[int, int]:
        lo, hi = self.search.ranges(np.array([query], dtype=np.int64))
        return int(lo[0]), int(hi[0])

    def contains(self, query: list[int]) -> bool:
        return bool(self.search.contains(np.array([query], dtype=np.int64))[0])

    def count(self, query: list[int]) -> int:
        lo, hi = self._ranges(query)
        return hi - lo

    def positions(self, query: list[int]) -> list[int]:
        lo, hi = self._ranges(query)
        return sorted(self._suffix_at(np.arange(lo, hi)).tolist())

    def contains_windows(self, q: np.ndarray) -> np.ndarray:
        return self.search.contains(q)

    def document_ids(self) -> tuple[list[str], np.ndarray]:
        """infini-gram documents have no ids: their number in the shard, as ``s:i``."""
        if not hasattr(self, "_ids"):
            self._ids = [f"{self.number}:{i}" for i in range(len(self.doc_starts))]
        return self._ids, self.doc_starts

    def matching_statistics_many(self, gens: Sequence[list[int]], oks: Sequence[list[bool]]) -> list[np.ndarray]:
        """Matching statistics of every position of every generation, searched in bulk."""
        rows: list[np.ndarray] = []
        for g, ok in zip(gens, oks, strict=True):
            arr = np.array(g, dtype=np.int64)
            arr[~np.array(ok, dtype=bool)] = -1  # ids the index cannot hold end a match
            rows.extend(arr[i:] for i in range(len(arr)))
        width = max((len(r) for r in rows), default=0)
        out = np.zeros(len(rows), dtype=np.int32)
        for lo in range(0, len(rows), ROWS):
            block = rows[lo:lo + ROWS]
            q = np.full((len(block), max(width, 1)), -1, dtype=np.int64)
            for i, r in enumerate(block):
                q[i, :len(r)] = r
            # a -1 inside a row (an impossible id) ends the match there, as padding does
            cut = np.where((q < 0).any(axis=1), (q < 0).argmax(axis=1), q.shape[1])
            q[np.arange(q.shape[1])[None, :] >= cut[:, None]] = -1
            out[lo:lo + len(block)] = self.search.longest_prefixes(q)
        result, at = [], 0
        for g in gens:
            result.append(out[at:at + len(g)])
            at += len(g)
        return result


def open_infini_gram(meta: dict[str, Any]) -> list[InfiniGramShard]:
    folder = Path(str(meta.get("path", "")))
    if not folder.is_dir():
        raise MiaError(f"the infini-gram index {str(folder)!r} this index points at is not found")
    width = int(meta.get("token_width", 2))
    numbers = shard_numbers(folder)
    if not numbers:
        raise MiaError(f"{folder} holds no infini-gram shard (tokenized.N)")
    return [InfiniGramShard(folder, s, width) for s in numbers]


def link_infini_gram(out: Path, folder: Path, tokenizer: str, fingerprint: str, vocab_size: int,
                     token_width: int) -> dict[str, Any]:
    """Write ``out/index.json`` pointing at the infini-gram index ``folder`` (nothing is copied)."""
    from mia_core import __version__
    from mia_core.scoring.index import META_FILE
    from mia_core.scoring.shard_writer import write_json_atomic

    if out.exists():
        raise MiaError(f"{out} already exists; refusing to overwrite it")
    if token_width not in (1, 2, 4):
        raise MiaError("--token-width must be 1, 2 or 4 (bytes per token, infini-gram's u8/u16/u32)")
    if vocab_size >= (1 << (8 * token_width)) - 1:
        raise MiaError(f"tokenizer {tokenizer!r} has {vocab_size} ids, more than a {8 * token_width}-bit "
                       "infini-gram index can hold: it was built with another tokenizer")
    if not looks_like_infini_gram(folder):
        raise MiaError(f"{folder} is not an infini-gram index (no tokenized.N and table.N files)")
    shards = [InfiniGramShard(folder, s, token_width) for s in shard_numbers(folder)]
    head = [s.tok[:CHECK_TOKENS] for s in shards]  # a sample: reading a trillion tokens would take hours
    top = max(int(h[h != s.separator].max(initial=0)) for h, s in zip(head, shards, strict=True))
    if top >= vocab_size:
        raise MiaError(f"{folder} holds token id {top}, outside tokenizer {tokenizer!r}'s {vocab_size} ids: "
                       "it was built with another tokenizer")
    meta = {"format": 2, "kind": "infini-gram", "path": str(folder.resolve()), "token_width": token_width,
            "tokenizer": tokenizer, "tokenizer_fingerprint": fingerprint, "vocab_size": int(vocab_size),
            "tokens": int(sum(s.tokens for s in shards)), "documents": int(sum(len(s.doc_starts) for s in shards)),
            "shards": [{"name": f"tokenized.{s.number}", "tokens": s.tokens} for s in shards],
            "windows": [], "mia_version": __version__, "build_s": 0.0}
    out.mkdir(parents=True)
    write_json_atomic(out / META_FILE, meta)
    return meta
