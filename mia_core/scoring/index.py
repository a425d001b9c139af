"""Token suffix-array index of a corpus (EleutherAI ``tokengrams``) and verbatim-match lookups.

An index folder holds ``tokens.bin`` (the corpus tokens, little-endian u16 or u32, one
separator token after each document so no match spans two documents), ``table.bin``
(tokengrams' suffix table, one u64 per token) and ``index.json`` (tokenizer name and
fingerprint, vocabulary size, dtype, token and document counts, source, build time).
It is built in ``<folder>.partial`` and renamed when complete.

Membership (Nasr et al. 2023): a generation is memorized if it contains a window of at
least ``window`` tokens found verbatim in the corpus. ``longest_matches`` computes, for
every start position i, the longest prefix of ``gen[i:]`` present in the corpus (matching
statistics: each step reuses the previous length minus one, so about 2 lookups per token).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import __version__
from mia_core.errors import MiaError

INDEX_FORMAT = 1
META_FILE = "index.json"
TOKENS_FILE = "tokens.bin"
TABLE_FILE = "table.bin"
DOCS_FILE = "doc_offsets.npy"
DOC_IDS_FILE = "doc_ids.json"
PARTIAL_SUFFIX = ".partial"
TABLE_ITEMSIZE = 8  # tokengrams stores suffix positions as u64
BATCH_ROWS = 1 << 16  # windows searched together (bounds the temporary arrays)


_TOKENGRAMS: Any = None


def tokengrams_module() -> Any:
    """The compiled tokengrams extension.

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


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # Rust's println! writes to file descriptor 1 directly: redirect the descriptor, so
    # ``--json`` output stays clean.
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded use): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def storage_for(vocab_size: int) -> tuple[np.dtype, int, int]:
    """(token dtype, tokengrams ``vocab`` argument, separator id) for a vocabulary.

    u16 when every id and the separator (the largest value of the type) fit, else u32.
    """
    if vocab_size < 2**16 - 1:
        return np.dtype("<u2"), 2**16, 2**16 - 1
    if vocab_size < 2**32 - 1:
        return np.dtype("<u4"), 2**32, 2**32 - 1
    raise MiaError(f"vocabulary of {vocab_size} tokens is too large for a tokengrams index")


class IndexBuilder:
    """Streams documents' tokens to disk, then sorts them into a suffix table."""

    def __init__(self, folder: str | os.PathLike, tokenizer: str, fingerprint: str, vocab_size: int,
                 source: dict[str, Any]) -> None:
        self.folder = Path(folder)
        if self.folder.exists():
            raise MiaError(f"{self.folder} already exists; refusing to overwrite it")
        self.partial = self.folder.with_name(self.folder.name + PARTIAL_SUFFIX)
        if self.partial.exists():  # left by an interrupted build: remove it only if it holds nothing else
            ours = {TOKENS_FILE, TABLE_FILE, META_FILE, DOCS_FILE, DOC_IDS_FILE}
            if any(p.name not in ours for p in self.partial.iterdir()):
                raise MiaError(f"{self.partial} exists and holds files mia did not write; move it away first")
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self.dtype, self.vocab, self.separator = storage_for(vocab_size)
        self.meta: dict[str, Any] = {"format": INDEX_FORMAT, "mia_version": __version__, "tokenizer": tokenizer,
                                     "tokenizer_fingerprint": fingerprint, "vocab_size": int(vocab_size),
                                     "dtype": self.dtype.name, "tokengrams_vocab": self.vocab,
                                     "separator": self.separator, "source": source}
        self._file = open(self.partial / TOKENS_FILE, "wb")
        self._offsets = [0]
        self._ids: list[str] = []
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self.tokens = 0
        self._t0 = time.perf_counter()

    def add(self, tokens: Sequence[int] | np.ndarray, doc_id: str | None = None) -> None:
        """One document (its tokens), followed by the separator."""
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.separator):
            raise MiaError(f"token id out of range for a {self.dtype.name} index "
                           f"(vocabulary {self.meta['vocab_size']}): {int(arr.max())}")
        self._pending.append(arr.astype(self.dtype))
        self._pending.append(np.array([self.separator], dtype=self.dtype))
        self._pending_len += arr.size + 1
        self.tokens += arr.size + 1
        self._offsets.append(self.tokens)
        self._ids.append(str(len(self._ids)) if doc_id is None else str(doc_id))
        if self._pending_len >= 1 << 22:
            self._flush()

    def add_many(self, flat: np.ndarray, offsets: np.ndarray, doc_ids: Sequence[str] | None = None) -> None:
        """Many documents at once from CSR arrays (a map's saved dataset): fast path."""
        flat = np.asarray(flat, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= self.separator):
            raise MiaError(f"token id out of range for a {self.dtype.name} index: {int(flat.max())}")
        n_docs = len(offsets) - 1
        if n_docs <= 0:
            return
        # insert one separator after each document: np.insert at the document ends (relative to flat,
        # which starts at offsets[0])
        ends = offsets[1:] - offsets[0]
        out = np.insert(flat[:ends[-1]].astype(self.dtype), ends, self.separator)
        self._pending.append(out)
        self._pending_len += out.size
        base = self.tokens
        self.tokens += out.size
        self._offsets.extend((base + ends + np.arange(1, n_docs + 1)).tolist())
        if doc_ids is None:
            first = len(self._ids)
            self._ids.extend(str(first + i) for i in range(n_docs))
        else:
            self._ids.extend(str(d) for d in doc_ids)
        self._flush()

    def _flush(self) -> None:
        for arr in self._pending:
            self._file.write(arr.tobytes())
        self._pending, self._pending_len = [], 0

    def finish(self) -> dict[str, Any]:
        """Build the suffix table, write the metadata and give the folder its final name."""
        tokengrams = tokengrams_module()
        self._flush()
        self._file.close()
        if self.tokens == 0:
            self.abort()
            raise MiaError("the corpus is empty: nothing to index")
        np.save(self.partial / DOCS_FILE, np.asarray(self._offsets, dtype=np.int64))
        (self.partial / DOC_IDS_FILE).write_text(json.dumps(self._ids))
        with _stdout_to_stderr():  # tokengrams prints "Sorting indices..." even when not verbose
            tokengrams.MemmapIndex.build(str(self.partial / TOKENS_FILE), str(self.partial / TABLE_FILE),
                                         vocab=self.vocab, verbose=False)
        elapsed = time.perf_counter() - self._t0
        self.meta.update(tokens=int(self.tokens), documents=len(self._offsets) - 1, build_s=round(elapsed, 3),
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        (self.partial / META_FILE).write_text(json.dumps(self.meta, indent=2))
        os.replace(self.partial, self.folder)
        return self.meta

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        shutil.rmtree(self.partial, ignore_errors=True)


def _compare(tok: np.ndarray, pos: np.ndarray, q: np.ndarray, chunk: int = 8) -> np.ndarray:
    """Sign of (corpus suffix at ``pos``)[:w] against each row of ``q``: -1, 0 or +1.

    Lexicographic on token values, a suffix that ends first being smaller (the suffix table's
    order). Columns are compared a chunk at a time, and only for rows still tied.
    """
    n = len(tok)
    width = q.shape[1]
    out = np.zeros(len(q), dtype=np.int8)
    rows = np.arange(len(q))
    for start in range(0, width, chunk):
        if rows.size == 0:
            break
        cols = start + np.arange(min(chunk, width - start))
        idx = pos[rows, None] + cols[None, :]
        inside = idx < n
        values = np.where(inside, tok[np.minimum(idx, n - 1)].astype(np.int64), -1)
        expected = q[rows[:, None], cols[None, :]]
        differ = values != expected
        decided = differ.any(axis=1)
        at = differ.argmax(axis=1)
        d = np.flatnonzero(decided)
        out[rows[d]] = np.where(values[d, at[d]] < expected[d, at[d]], -1, 1)
        rows = rows[~decided]
    return out


@dataclass
class WindowMatches:
    """Corpus-membership results for a list of generations."""

    window: int
    longest: np.ndarray  # int32 per generation: longest verbatim corpus match
    memorized: np.ndarray  # bool per generation: longest >= window
    windows: dict[tuple[int, ...], int] = field(default_factory=dict)  # memorized window -> occurrences


class CorpusIndex:
    """A built index, opened read-only (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MiaError(f"index {str(folder)!r} not found")
        meta_path = self.folder / META_FILE
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise MiaError(f"{self.folder} is not a mia index (no {META_FILE}; interrupted build?)") from None
        except (OSError, ValueError) as exc:
            raise MiaError(f"index metadata {meta_path} is corrupt: {exc}") from None
        for key in ("tokens", "dtype", "tokengrams_vocab", "tokenizer_fingerprint", "separator"):
            if key not in self.meta:
                raise MiaError(f"index metadata {meta_path} is corrupt: missing {key!r}")
        self.dtype = np.dtype(self.meta["dtype"])
        n = int(self.meta["tokens"])
        for name, size in ((TOKENS_FILE, n * self.dtype.itemsize), (TABLE_FILE, n * TABLE_ITEMSIZE)):
            path = self.folder / name
            if not path.is_file():
                raise MiaError(f"index {self.folder} is corrupt: {name} is missing")
            if path.stat().st_size != size:
                raise MiaError(f"index {self.folder} is corrupt: {name} has {path.stat().st_size} bytes, "
                               f"expected {size}")
        tokengrams = tokengrams_module()
        try:
            self._index = tokengrams.MemmapIndex(str(self.folder / TOKENS_FILE), str(self.folder / TABLE_FILE),
                                                 vocab=int(self.meta["tokengrams_vocab"]))
        except Exception as exc:  # noqa: BLE001 - tokengrams raises plain exceptions from Rust
            raise MiaError(f"index {self.folder} cannot be opened: {exc}") from None

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["tokenizer_fingerprint"])

    def verify(self) -> None:
        """Full check that the suffix table is sorted (reads the whole index)."""
        if not self._index.is_sorted():
            raise MiaError(f"index {self.folder} is corrupt: its suffix table is not sorted")

    def contains(self, query: Sequence[int]) -> bool:
        return bool(self._index.contains(list(query)))

    def count(self, query: Sequence[int]) -> int:
        return int(self._index.count(list(query)))

    def documents_of(self, query: Sequence[int], limit: int = 5) -> list[str]:
        """Ids of (up to ``limit``) documents containing ``query`` (needs doc_ids.json; else [])."""
        if not hasattr(self, "_doc_ids"):
            try:
                self._doc_ids = json.loads((self.folder / DOC_IDS_FILE).read_text())
                self._doc_starts = np.load(self.folder / DOCS_FILE)
            except (OSError, ValueError):
                self._doc_ids, self._doc_starts = [], np.zeros(1, dtype=np.int64)
        if not self._doc_ids:
            return []
        positions = sorted(self._index.positions(list(map(int, query))))
        docs = np.searchsorted(self._doc_starts, positions, side="right") - 1
        out: list[str] = []
        for d in docs:
            name = self._doc_ids[int(d)] if 0 <= d < len(self._doc_ids) else "?"
            if name not in out:
                out.append(name)
            if len(out) >= limit:
                break
        return out

    def contains_many(self, windows: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Whether each window occurs in the corpus, for many windows in one call.

        Equal-length windows (a 2-D array) are searched all at once: a vectorised binary search
        over tokengrams' suffix table, started inside the bucket of the window's first token, so
        each step is a few numpy operations over the whole batch instead of one Python call per
        window (tokengrams holds the GIL, so threads would not help). Ragged input falls back to
        one tokengrams lookup per distinct window.
        """
        if isinstance(windows, np.ndarray) and windows.ndim == 2 and windows.shape[1] > 0:
            q = windows.astype(np.int64, copy=False)
            return np.concatenate([self._search(q[i:i + BATCH_ROWS]) for i in range(0, len(q), BATCH_ROWS)]
                                  or [np.zeros(0, dtype=bool)])
        contains = self._index.contains
        vocab = self.vocab_size
        seen: dict[tuple[int, ...], bool] = {}
        out = np.empty(len(windows), dtype=bool)
        for i, row in enumerate(windows):
            key = tuple(int(t) for t in row)
            hit = seen.get(key)
            if hit is None:
                valid = all(0 <= t < vocab for t in key)
                hit = seen[key] = bool(valid and contains(list(key)))
            out[i] = hit
        return out

    @property
    def vocab_size(self) -> int:
        return int(self.meta.get("vocab_size", self.meta["separator"]))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory-mapped tokens and suffix table, and where each first token's suffixes start."""
        if not hasattr(self, "_tok"):
            tok = np.asarray(np.memmap(self.folder / TOKENS_FILE, dtype=self.dtype, mode="r"))
            table = np.asarray(np.memmap(self.folder / TABLE_FILE, dtype="<u8", mode="r"))
            vocab = self.vocab_size
            # suffixes are sorted by their first token, the separator (largest value) last
            counts = np.bincount(np.minimum(tok, vocab), minlength=vocab + 1)
            self._tok, self._table = tok, table
            self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._tok, self._table, self._starts

    def _search(self, q: np.ndarray) -> np.ndarray:
        tok, table, starts = self._arrays()
        n, vocab = len(tok), len(starts) - 2
        first = q[:, 0]
        valid = (q >= 0).all(axis=1) & (q < vocab).all(axis=1)
        lo = np.zeros(len(q), dtype=np.int64)
        hi = np.zeros(len(q), dtype=np.int64)
        lo[valid], hi[valid] = starts[first[valid]], starts[first[valid] + 1]
        active = np.flatnonzero(lo < hi)
        while active.size:  # lower bound of the window among the suffixes of its first-token bucket
            mid = (lo[active] + hi[active]) // 2
            less = _compare(tok, table[mid].astype(np.int64) + 1, q[active, 1:]) < 0
            lo[active[less]] = mid[less] + 1
            hi[active[~less]] = mid[~less]
            active = active[lo[active] < hi[active]]
        found = np.zeros(len(q), dtype=bool)
        check = np.flatnonzero(valid & (lo < n))
        if check.size:
            found[check] = _compare(tok, table[lo[check]].astype(np.int64), q[check]) == 0
        return found

    def matching_statistics(self, gen: Sequence[int]) -> np.ndarray:
        """ms[i] = length of the longest prefix of ``gen[i:]`` found verbatim in the corpus."""
        g = [int(t) for t in gen]
        n = len(g)
        ms = np.zeros(n, dtype=np.int32)
        contains = self._index.contains
        vocab = self.vocab_size
        ok = [0 <= t < vocab for t in g]  # ids the corpus cannot hold never match
        length = 0
        for i in range(n):
            while i + length < n and ok[i + length] and contains(g[i:i + length + 1]):
                length += 1
            ms[i] = length
            length = max(length - 1, 0)  # gen[i+1 : i+length] is a substring of a match
        return ms

    def longest_matches(self, generations: Sequence[np.ndarray], window: int) -> WindowMatches:
        """Longest corpus match of each generation, and the memorized ``window``-grams they contain.

        Identical generations (common when sampling many times per prefix) are looked up once.
        Matching statistics ask mostly short queries, one at a time per generation: there one
        tokengrams call per lookup measured about twice as fast as a lockstep vectorised search
        over all generations, so this path does not use :meth:`contains_many`.
        """
        keys = [tuple(int(t) for t in g) for g in generations]
        cache: dict[tuple[int, ...], np.ndarray] = {}
        longest = np.zeros(len(keys), dtype=np.int32)
        counts: Counter[tuple[int, ...]] = Counter()
        for row, key in enumerate(keys):
            ms = cache.get(key)
            if ms is None:
                ms = cache[key] = self.matching_statistics(key)
            longest[row] = int(ms.max()) if len(ms) else 0
            for i in np.flatnonzero(ms >= window):
                counts[key[i:i + window]] += 1
        return WindowMatches(window, longest, longest >= window, dict(counts))


def build_index(folder: str | os.PathLike, documents: Iterable[Sequence[int]], tokenizer: str,
                fingerprint: str, vocab_size: int, source: dict[str, Any]) -> dict[str, Any]:
    """Index an iterable of tokenized documents; returns the metadata written."""
    builder = IndexBuilder(folder, tokenizer, fingerprint, vocab_size, source)
    try:
        for doc in documents:
            builder.add(doc)
        return builder.finish()
    except BaseException:
        builder.abort()
        raise
