"""Corpus index: shards of tokens with a suffix table and fixed-window fingerprints, queried as one.

An index folder (format 2, see docs/index.md) holds ``index.json`` (tokenizer name and
fingerprint, vocabulary size, dtype, token and document counts, shards, windows, source) and
``shards/00000``, ``shards/00001``…, each a self-contained shard: ``tokens.bin`` (little-endian
u16 or u32 tokens, one separator token after each document so no match spans two documents),
``table.bin`` (the suffix table, one u64 per token, readable by tokengrams' ``MemmapIndex``),
``windows.W.hash``/``windows.W.pos`` (sorted fingerprints of every ``W``-token window, see
window_table.py), ``doc_offsets.npy``, ``doc_ids.json`` and ``shard.json``. A document never
spans two shards, so a string occurs in the corpus iff it occurs in one shard. An index of several
shards also has, at its root, one fingerprint table across them per window length (global_table.py).

Format 1 (one flat folder, an index built by mia before shards) is still read, and an index
folder may instead point at an infini-gram index (infinigram.py).

Membership (Nasr et al. 2023): a generation is memorized if it contains a window of at
least ``window`` tokens found verbatim in the corpus. ``longest_matches`` computes, for
every start position i, the longest prefix of ``gen[i:]`` present in the corpus.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.corpus_index.global_table import GlobalWindowTable, open_global_tables
from mia_core.formats.corpus_index.layout import (
    DOC_IDS_FILE,
    DOCS_FILE,
    META_FILE,
    SHARDS_DIR,
    TABLE_FILE,
    TOKENS_FILE,
)
from mia_core.formats.corpus_index.suffix_search import SuffixSearch
from mia_core.formats.corpus_index.window_table import WindowTable, query_fingerprints
from mia_core.formats.integrity import sha256_file
from mia_core.formats.recorded import recorded

TABLE_ITEMSIZE = 8  # tokengrams stores suffix positions as u64
BATCH_ROWS = 1 << 16  # windows searched together (bounds the temporary arrays)


_TOKENGRAMS: Any = None


def tokengrams_module() -> Any:
    """The compiled tokengrams extension (used by tests to cross-check the suffix tables mia writes).

    ``import tokengrams`` also imports its HF-dataset helper, which pulls in ``datasets`` and
    ``transformers`` (seconds, and torch); the index classes live in the extension module
    alone, so it is loaded straight from its file when possible.
    """
    global _TOKENGRAMS
    if _TOKENGRAMS is None:
        import importlib.machinery
        import importlib.util

        spec = importlib.util.find_spec("tokengrams")
        if spec is None or not spec.submodule_search_locations:
            raise MiaError("the tokengrams package is not installed (pip install tokengrams)")
        folder = Path(next(iter(spec.submodule_search_locations)))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            so = folder / f"tokengrams{suffix}"
            if so.is_file():
                ext_spec = importlib.util.spec_from_file_location("tokengrams", so)
                if ext_spec is not None and ext_spec.loader is not None:
                    module = importlib.util.module_from_spec(ext_spec)
                    ext_spec.loader.exec_module(module)
                    _TOKENGRAMS = module
                    break
        else:  # unusual layout: the ordinary (slower) import
            import tokengrams

            _TOKENGRAMS = tokengrams
    return _TOKENGRAMS


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MiaError(f"{path.parent} is not a mia index (no {path.name}; interrupted build?)") from None
    except (OSError, ValueError) as exc:
        raise MiaError(f"{what} {path} is corrupt: {exc}") from None
    if not isinstance(data, dict):
        raise MiaError(f"{what} {path} is corrupt: not a JSON object")
    return data


def _valid_rows(q: np.ndarray, vocab: int) -> np.ndarray:
    """Rows whose ids all lie in [0, vocab) (negative int64 ids read as huge unsigned ones)."""
    return (q.view(np.uint64) < np.uint64(vocab)).all(axis=1)


class Shard:
    """One mia shard folder, opened read-only (memory-mapped)."""

    def __init__(self, folder: Path, n_tokens: int, dtype: np.dtype, vocab_size: int, tokengrams_vocab: int,
                 windows: Sequence[int] = (), hash_bits: int = 64, doc_base: int = 0,
                 checksums: dict[str, str] | None = None) -> None:
        self.folder, self.tokens, self.dtype, self.vocab_size = folder, n_tokens, dtype, vocab_size
        self.checksums = checksums  # file name -> SHA-256, recorded at build (None: an older index)
        self.tokengrams_vocab, self.hash_bits, self.doc_base = tokengrams_vocab, hash_bits, doc_base
        for name, size in ((TOKENS_FILE, n_tokens * dtype.itemsize), (TABLE_FILE, n_tokens * TABLE_ITEMSIZE)):
            path = folder / name
            if not path.is_file():
                raise MiaError(f"index {folder} is corrupt: {name} is missing")
            if path.stat().st_size != size:
                raise MiaError(f"index {folder} is corrupt: {name} has {path.stat().st_size} bytes, expected {size}")
        self.windows: dict[int, WindowTable] = {}
        self._window_views: dict[int, np.ndarray] = {}  # window length -> every window of the tokens (a view)
        for w in windows:
            if not WindowTable.exists(folder, w):
                raise MiaError(f"index {folder} is corrupt: its {w}-token window table is missing")
            try:
                self.windows[int(w)] = WindowTable(folder, int(w), n_tokens, hash_bits)
            except ValueError as exc:
                raise MiaError(f"index {folder} is corrupt: {exc}") from None
    def check_files(self) -> None:
        """Compare every file of the shard with the checksum its build recorded, once, before its first use:
        one read of the shard (a damaged index file is one line, never a wrong match)."""
        if not self.checksums:
            return
        for name, expected in self.checksums.items():
            try:
                actual = sha256_file(self.folder / name)
            except OSError as exc:
                raise MiaError(f"index {self.folder} is corrupt: {name} cannot be read ({exc.strerror or exc})") \
                    from None
            if actual != expected:
                raise MiaError(f"index {self.folder} is corrupt: {name} does not match the checksum its build "
                               "recorded (bytes changed on disk); build the index again with mia index")
        self.checksums = None

    def _arrays(self) -> tuple[np.ndarray, SuffixSearch]:
        """Memory-mapped tokens and a vectorised search over the suffix table."""
        if not hasattr(self, "_search"):
            self.check_files()
            tok = np.asarray(np.memmap(self.folder / TOKENS_FILE, dtype=self.dtype, mode="r")) if self.tokens \
                else np.zeros(0, dtype=self.dtype)
            table = np.asarray(np.memmap(self.folder / TABLE_FILE, dtype="<u8", mode="r")) if self.tokens \
                else np.zeros(0, dtype="<u8")
            # suffixes are sorted by their first token, the separator (largest value) last
            counts = np.bincount(np.minimum(tok, self.vocab_size), minlength=self.vocab_size + 1)
            buckets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._tok = tok
            self._search = SuffixSearch(tok, lambda ranks: table[ranks].astype(np.int64), len(tok),
                                        buckets=buckets)
        return self._tok, self._search

    def verify(self) -> None:
        if not self._arrays()[1].verify():
            raise MiaError(f"index {self.folder} is corrupt: its suffix table is not sorted")

    def _one(self, query: list[int]) -> np.ndarray:
        return np.array([query], dtype=np.int64)

    def contains(self, query: list[int]) -> bool:
        return bool(self._arrays()[1].contains(self._one(query))[0])

    def count(self, query: list[int]) -> int:
        lo, hi = self._arrays()[1].ranges(self._one(query))
        return int(hi[0] - lo[0])

    def positions(self, query: list[int]) -> np.ndarray:
        search = self._arrays()[1]
        lo, hi = search.ranges(self._one(query))
        return np.sort(search.suffix_at(np.arange(lo[0], hi[0])))

    def search_windows(self, q: np.ndarray) -> np.ndarray:
        """Exact membership of equal-length windows (valid ids) by the vectorised suffix-table search."""
        return self._arrays()[1].contains(q)

    def contains_windows(self, q: np.ndarray, fingerprints: np.ndarray | None = None) -> np.ndarray:
        """Membership of equal-length windows of valid ids: fingerprint table when one fits, else suffix table."""
        self.check_files()
        table = self.windows.get(q.shape[1])
        if table is None:
            return self.search_windows(q)
        cand = table.candidates(q, fingerprints)
        found = np.zeros(len(q), dtype=bool)
        hit = np.flatnonzero(cand >= 0)
        if hit.size:
            same = self.windows_equal(cand[hit], q[hit].astype(self.dtype))  # valid ids fit the tokens' dtype
            found[hit[same]] = True
            collided = hit[~same]  # same fingerprint, other tokens: ask the suffix table
            if collided.size:
                found[collided] = self.search_windows(q[collided])
        return found

    def windows_equal(self, positions: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Whether the corpus window at each position equals the matching row of ``q`` (one row copy each;
        ``q`` in the tokens' dtype compares fastest)."""
        view = self._window_views.get(q.shape[1])
        if view is None:  # kept: making the view costs more than verifying a few rows
            view = self._window_views[q.shape[1]] = np.lib.stride_tricks.sliding_window_view(self._arrays()[0],
                                                                                             q.shape[1])
        return (view[positions] == q).all(axis=1)

    def matching_statistics_many(self, gens: Sequence[list[int]], oks: Sequence[list[bool]]) -> list[np.ndarray]:
        return self._arrays()[1].matching_statistics_many(gens, oks)

    def document_ids(self) -> tuple[list[str], np.ndarray]:
        if not hasattr(self, "_doc_ids"):
            self.check_files()
            try:
                self._doc_ids = json.loads((self.folder / DOC_IDS_FILE).read_text())
                self._doc_starts = np.load(self.folder / DOCS_FILE)
            except (OSError, ValueError):
                self._doc_ids, self._doc_starts = [], np.zeros(1, dtype=np.int64)
        return self._doc_ids, self._doc_starts


@dataclass
class WindowMatches:
    """Corpus-membership results for a list of generations."""

    window: int
    longest: np.ndarray  # int32 per generation: longest verbatim corpus match
    memorized: np.ndarray  # bool per generation: longest >= window
    windows: dict[tuple[int, ...], int] = field(default_factory=dict)  # memorized window -> occurrences


class CorpusIndex:
    """A built index (one or many shards, or a linked infini-gram index), opened read-only."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MiaError(f"index {str(folder)!r} not found")
        meta_path = self.folder / META_FILE
        if not meta_path.exists():
            from mia_core.formats.corpus_index.infinigram import looks_like_infini_gram

            if looks_like_infini_gram(self.folder):
                raise MiaError(f"{self.folder} is an infini-gram index, which does not record its tokenizer: "
                               f"link it first with `mia index OUT --infini-gram {self.folder} --model NAME`")
        self.meta: dict[str, Any] = read_json(meta_path, "index metadata")
        for key in ("tokens", "tokenizer_fingerprint"):
            if key not in self.meta:
                raise MiaError(f"index metadata {meta_path} is corrupt: missing {key!r}")
        self.shards: list[Any]
        self.global_windows: dict[int, GlobalWindowTable] = {}  # window length -> the table across shards
        if self.meta.get("kind") == "infini-gram":
            from mia_core.formats.corpus_index.infinigram import open_infini_gram

            self.shards = open_infini_gram(self.meta)
            return
        for key in ("dtype", "tokengrams_vocab", "separator"):
            if key not in self.meta:
                raise MiaError(f"index metadata {meta_path} is corrupt: missing {key!r}")
        dtype = np.dtype(self.meta["dtype"])
        common = {"dtype": dtype, "vocab_size": self.vocab_size, "tokengrams_vocab": int(self.meta["tokengrams_vocab"]),
                  "windows": [int(w) for w in self.meta.get("windows", [])],
                  "hash_bits": int(self.meta.get("hash_bits", 64))}
        if "shards" not in self.meta:  # format 1: the folder itself is the only shard
            self.shards = [Shard(self.folder, int(self.meta["tokens"]), **{**common, "windows": []})]
            return
        self.shards = []
        docs = 0
        for entry in self.meta["shards"]:
            self.shards.append(Shard(self.folder / SHARDS_DIR / entry["name"], int(entry["tokens"]), **common,
                                     doc_base=docs, checksums=entry.get("sha256")))
            docs += int(entry["documents"])
        if sum(s.tokens for s in self.shards) != int(self.meta["tokens"]):
            raise MiaError(f"index metadata {meta_path} is corrupt: its shards do not add up to its tokens")
        self.global_windows = open_global_tables(self.folder, self.meta, common["hash_bits"])

    tokens = recorded("tokens", int, "meta")
    fingerprint = recorded("tokenizer_fingerprint", str, "meta")

    @property
    def vocab_size(self) -> int:
        return int(self.meta.get("vocab_size", self.meta.get("separator", 0)))

    @property
    def windows(self) -> list[int]:
        """Window lengths with a fingerprint table in every shard (the fast ``contains_many`` path)."""
        return sorted(set.intersection(*(set(s.windows) for s in self.shards))) if self.shards else []

    def verify(self) -> None:
        """Full check that every suffix table is sorted (reads the whole index)."""
        for shard in self.shards:
            shard.verify()

    def _valid(self, query: Sequence[int]) -> list[int] | None:
        q = [int(t) for t in query]
        return q if all(0 <= t < self.vocab_size for t in q) else None

    def contains(self, query: Sequence[int]) -> bool:
        q = self._valid(query)
        return q is not None and any(s.contains(q) for s in self.shards)

    def count(self, query: Sequence[int]) -> int:
        q = self._valid(query)
        return 0 if q is None else sum(s.count(q) for s in self.shards)

    def documents_of(self, query: Sequence[int], limit: int = 5) -> list[str]:
        """Ids of (up to ``limit``) documents containing ``query`` (from doc_ids.json; else [])."""
        q = self._valid(query)
        out: list[str] = []
        if q is None:
            return out
        for shard in self.shards:
            ids, starts = shard.document_ids()
            if not ids:
                continue
            positions = shard.positions(q)
            for d in np.searchsorted(starts, positions, side="right") - 1:
                name = ids[int(d)] if 0 <= d < len(ids) else "?"
                if name not in out:
                    out.append(name)
                if len(out) >= limit:
                    return out
        return out

    def contains_many(self, windows: np.ndarray | Sequence[Sequence[int]], *, per_shard: bool = False) -> np.ndarray:
        """Whether each window occurs in the corpus, for many windows in one call.

        Equal-length windows (a 2-D array) are searched in bulk: through the index-level fingerprint
        table when the index has one for that length (global_table.py), else through each shard's
        (``per_shard=True`` forces this, for comparisons), both verified against the tokens
        (window_table.py), else by a vectorised binary search of the suffix tables. Ragged input
        falls back to one lookup per distinct window.
        """
        if isinstance(windows, np.ndarray) and windows.ndim == 2 and windows.shape[1] > 0:
            q = windows.astype(np.int64, copy=False)
            table = None if per_shard else self.global_windows.get(q.shape[1])
            block = self._contains_block if table is None else lambda b: self._contains_global(b, table)
            parts = [block(q[i:i + BATCH_ROWS]) for i in range(0, len(q), BATCH_ROWS)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        seen: dict[tuple[int, ...], bool] = {}
        out = np.empty(len(windows), dtype=bool)
        for i, row in enumerate(windows):
            key = tuple(int(t) for t in row)
            hit = seen.get(key)
            if hit is None:
                hit = seen[key] = self.contains(key)
            out[i] = hit
        return out

    def _contains_block(self, q: np.ndarray) -> np.ndarray:
        found = np.zeros(len(q), dtype=bool)
        valid = _valid_rows(q, self.vocab_size)
        todo = np.flatnonzero(valid)
        fingerprints = None
        if q.shape[1] in self.windows and len(self.shards) > 1:  # hash once for all shards
            fingerprints = query_fingerprints(q, int(self.meta.get("hash_bits", 64)))
        for shard in self.shards:
            if todo.size == 0:
                break
            rows = q if todo.size == len(q) else q[todo]
            hit = shard.contains_windows(rows, None if fingerprints is None else fingerprints[todo])
            found[todo[hit]] = True
            todo = todo[~hit]
        return found

    def _contains_global(self, q: np.ndarray, table: GlobalWindowTable) -> np.ndarray:
        """One scan of the index-level table for all rows, each hit verified in the shard it names."""
        found = np.zeros(len(q), dtype=bool)
        todo = np.flatnonzero(_valid_rows(q, self.vocab_size))
        rows = q if todo.size == len(q) else q[todo]
        hit, shard_of, position = table.locate(rows)
        same = np.zeros(hit.size, dtype=bool)
        # the hit rows in the tokens' dtype (valid ids fit): a quarter of the int64 rows to gather and compare
        hit_rows = rows[hit].astype(self.shards[0].dtype)
        # hits grouped by shard, one verification per shard (a stable sort of u16 keys is a radix sort)
        order = np.argsort(shard_of.astype(np.uint16) if len(self.shards) <= 1 << 16 else shard_of, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(shard_of[order])) + 1) if hit.size else []:
            same[group] = self.shards[int(shard_of[group[0]])].windows_equal(position[group], hit_rows[group])
        found[todo[hit[same]]] = True
        collided = todo[hit[~same]]  # a fingerprint shared with another window: the exact search, every shard
        if collided.size:
            found[collided] = self._search_shards(q[collided])
        return found

    def _search_shards(self, q: np.ndarray) -> np.ndarray:
        """Exact membership by each shard's suffix table in turn (rows found in one are not asked again)."""
        found = np.zeros(len(q), dtype=bool)
        todo = np.arange(len(q))
        for shard in self.shards:
            if todo.size == 0:
                break
            hit = shard.search_windows(q[todo])
            found[todo[hit]] = True
            todo = todo[~hit]
        return found

    def matching_statistics(self, gen: Sequence[int]) -> np.ndarray:
        """ms[i] = length of the longest prefix of ``gen[i:]`` found verbatim in the corpus.

        Per shard, then the largest: no document (so no match) spans two shards.
        """
        return self.matching_statistics_many([gen])[0]

    def matching_statistics_many(self, gens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        out = [np.zeros(len(g), dtype=np.int32) for g in gens]
        lists = [[int(t) for t in g] for g in gens]
        vocab = self.vocab_size
        oks = [[0 <= t < vocab for t in g] for g in lists]  # ids the corpus cannot hold never match
        for shard in self.shards:
            for ms, new in zip(out, shard.matching_statistics_many(lists, oks), strict=True):
                np.maximum(ms, new, out=ms)
        return out

    def longest_matches(self, generations: Sequence[np.ndarray], window: int) -> WindowMatches:
        """Longest corpus match of each generation, and the memorized ``window``-grams they contain.

        Identical generations among those given (common when sampling many times per prefix) are looked up once;
        every position of every generation is searched in bulk (suffix_search.py). Variable-length
        matches have no fingerprint to look up, so every shard's suffix table is searched: the cost
        grows linearly with the number of shards (measured per position and shard in docs/index.md).
        """
        keys = [tuple(int(t) for t in g) for g in generations]
        distinct = list(dict.fromkeys(keys))
        cache = dict(zip(distinct, self.matching_statistics_many(distinct), strict=True))
        longest = np.zeros(len(keys), dtype=np.int32)
        counts: Counter[tuple[int, ...]] = Counter()
        for row, key in enumerate(keys):
            ms = cache[key]
            longest[row] = int(ms.max()) if len(ms) else 0
            for i in np.flatnonzero(ms >= window):
                counts[key[i:i + window]] += 1
        return WindowMatches(window, longest, longest >= window, dict(counts))

