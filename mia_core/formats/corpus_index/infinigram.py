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
from mia_core.formats.corpus_index.suffix_search import SuffixSearch

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
        """A full O(n) check that the table is the sorted order of the suffixes (suffix_search.py)."""
        if not self.search.verify():
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

    def contains_windows(self, q: np.ndarray, fingerprints: np.ndarray | None = None) -> np.ndarray:
        return self.search.contains(q)  # infini-gram has no fingerprint tables

    def document_ids(self) -> tuple[list[str], np.ndarray]:
        """infini-gram documents have no ids: their number in the shard, as ``s:i``."""
        if not hasattr(self, "_ids"):
            self._ids = [f"{self.number}:{i}" for i in range(len(self.doc_starts))]
        return self._ids, self.doc_starts

    def matching_statistics_many(self, gens: Sequence[list[int]], oks: Sequence[list[bool]]) -> list[np.ndarray]:
        return self.search.matching_statistics_many(gens, oks)


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
    from mia_core.formats.corpus_index.layout import META_FILE, write_json_atomic

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
