"""Building a sharded corpus index: bounded memory, atomic shards, resumable between shards.

Documents stream in (``add``) and are buffered until the shard holds ``shard_tokens`` tokens
(documents are never split, so a shard may exceed the bound by one document); the shard is then
sorted (suffix_sort.py), its window fingerprints written (window_table.py), and it is written
in ``OUT.partial/shards/NNNNN.tmp``, each file fsynced, and renamed to ``NNNNN`` (then the folder
fsynced). ``build.json`` in ``OUT.partial`` records what is being built. A build that stops
(killed, crashed, Ctrl-C) leaves ``OUT.partial`` with its finished shards; rerun with
``resume=True`` and the same source: the documents of the finished shards are skipped and the
build goes on from the first unfinished shard, ending with exactly the index an uninterrupted
build writes. The finished index is renamed from ``OUT.partial`` to ``OUT``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import __version__
from mia_core.errors import MiaError
from mia_core.formats.corpus_index.global_table import TABLES_KEY, merge_window_tables
from mia_core.formats.corpus_index.layout import (
    DOC_IDS_FILE,
    DOCS_FILE,
    INDEX_FORMAT,
    META_FILE,
    SHARD_META,
    SHARDS_DIR,
    TABLE_FILE,
    TOKENS_FILE,
    storage_for,
    write_json_atomic,
)
from mia_core.formats.corpus_index.suffix_sort import suffix_array
from mia_core.formats.corpus_index.window_table import build_window_table, table_paths
from mia_core.formats.integrity import sha256_file
from mia_core.formats.names import PARTIAL_SUFFIX
from mia_core.formats.safeio import fsync_dir, is_temporary
from mia_core.progress import progress

BUILD_FILE = "build.json"
DEFAULT_WINDOWS = (50,)
# peak bytes per buffered token while a shard is sorted and fingerprinted (measured 86-94: docs/index.md)
BUILD_BYTES_PER_TOKEN = 96
DEFAULT_MAX_MEMORY = 2 << 30


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller renames the folder that holds it)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def shard_tokens_for(max_memory: int) -> int:
    """Tokens per shard so that building one stays within ``max_memory`` bytes."""
    return max(1, max_memory // BUILD_BYTES_PER_TOKEN)


class IndexBuilder:
    """Streams documents' tokens into shards; ``finish`` completes the index."""

    def __init__(self, folder: str | os.PathLike, tokenizer: str, fingerprint: str, vocab_size: int,
                 source: dict[str, Any], shard_tokens: int | None = None, windows: Sequence[int] = DEFAULT_WINDOWS,
                 resume: bool = False, quiet: bool = True, hash_bits: int = 64) -> None:
        self.folder = Path(folder)
        if self.folder.exists():
            raise MiaError(f"{self.folder} already exists; refusing to overwrite it")
        if any(int(w) < 1 for w in windows):
            raise MiaError("window lengths must be at least 1")
        self.partial = self.folder.with_name(self.folder.name + PARTIAL_SUFFIX)
        self.dtype, self.vocab, self.separator = storage_for(vocab_size)
        self.shard_tokens = int(shard_tokens or shard_tokens_for(DEFAULT_MAX_MEMORY))
        if self.shard_tokens < 1:
            raise MiaError("the shard size must be at least 1 token")
        self.quiet = quiet
        self.build: dict[str, Any] = {
            "format": INDEX_FORMAT, "tokenizer": tokenizer, "tokenizer_fingerprint": fingerprint,
            "vocab_size": int(vocab_size), "dtype": self.dtype.name, "tokengrams_vocab": self.vocab,
            "separator": self.separator, "windows": sorted({int(w) for w in windows}), "hash_bits": int(hash_bits),
            "shard_tokens": self.shard_tokens, "source": source}
        self.shards: list[dict[str, Any]] = []
        self._prepare(resume)
        self.skip = sum(s["documents"] for s in self.shards)  # documents already in finished shards
        self.resumed_documents = self.skip
        self._parts: list[np.ndarray] = []
        self._ids: list[str] = []
        self._lengths: list[int] = []
        self._buffered = 0
        self.documents = self.skip
        self.tokens = sum(s["tokens"] for s in self.shards)
        self._t0 = time.perf_counter()

    def _prepare(self, resume: bool) -> None:
        if not self.partial.exists():
            (self.partial / SHARDS_DIR).mkdir(parents=True)
            write_json_atomic(self.partial / BUILD_FILE, self.build)
            return
        build_path = self.partial / BUILD_FILE
        finished = self._finished_shards()
        if not build_path.is_file():
            ours = {TOKENS_FILE, TABLE_FILE, META_FILE, DOCS_FILE, DOC_IDS_FILE, SHARDS_DIR,
                    BUILD_FILE + ".tmp"}  # the temporary name of builds by mia before formats.safeio
            if any(p.name not in ours and not is_temporary(p.name, BUILD_FILE) for p in self.partial.iterdir()):
                raise MiaError(f"{self.partial} exists and holds files mia did not write; move it away first")
            shutil.rmtree(self.partial)  # an interrupted build that finished nothing: start again
            self._prepare(resume)
            return
        try:
            recorded = json.loads(build_path.read_text())
        except (OSError, ValueError) as exc:
            raise MiaError(f"{build_path} is corrupt ({exc}); remove {self.partial} to start again") from None
        if not resume:
            if finished:
                docs = sum(s["documents"] for s in finished)
                raise MiaError(f"{self.partial} holds an interrupted build ({len(finished)} finished shards, "
                               f"{docs} documents): rerun with --resume to continue it, or remove it to start again")
            shutil.rmtree(self.partial)
            self._prepare(resume)
            return
        differ = sorted(k for k in self.build if recorded.get(k) != self.build[k])
        if differ:
            raise MiaError(f"cannot resume {self.partial}: it was started with other settings ({', '.join(differ)}); "
                           "rerun with the same ones, or remove it to start again")
        self.shards = finished
        for leftover in (self.partial / SHARDS_DIR).glob("*.tmp"):  # a shard being written when it stopped
            shutil.rmtree(leftover)

    def _finished_shards(self) -> list[dict[str, Any]]:
        folder = self.partial / SHARDS_DIR
        if not folder.is_dir():
            return []
        out = []
        for i, path in enumerate(sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())):
            if path.name != f"{i:05d}":
                raise MiaError(f"{self.partial} is corrupt: shard {path.name} follows {i} shards; remove it")
            try:
                out.append(json.loads((path / SHARD_META).read_text()))
            except (OSError, ValueError) as exc:
                raise MiaError(f"{path} is corrupt ({exc}); remove {self.partial} to start again") from None
        return out

    def add(self, tokens: Sequence[int] | np.ndarray, doc_id: str | None = None) -> int:
        """One document (its tokens), followed by the separator; returns the tokens it adds (0 if skipped)."""
        if self.skip:  # resuming: this document is in a finished shard
            self.skip -= 1
            return 0
        arr = np.asarray(tokens, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.separator):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise MiaError(f"token id out of range for a {self.dtype.name} index "
                           f"(vocabulary {self.build['vocab_size']}): {bad}")
        self._parts.append(np.append(arr, self.separator).astype(self.dtype))
        self._ids.append(str(self.documents) if doc_id is None else str(doc_id))
        self._lengths.append(arr.size + 1)
        self._buffered += arr.size + 1
        self.documents += 1
        if self._buffered >= self.shard_tokens:
            self._write_shard()
        return arr.size + 1

    def add_many(self, flat: np.ndarray, offsets: np.ndarray, doc_ids: Sequence[str] | None = None) -> int:
        """Many documents from CSR arrays (a map's saved dataset); returns the tokens added."""
        offsets = np.asarray(offsets, dtype=np.int64)
        flat = np.asarray(flat)
        base = offsets[0]
        added = 0
        for i in range(len(offsets) - 1):
            added += self.add(flat[offsets[i] - base:offsets[i + 1] - base], None if doc_ids is None else doc_ids[i])
        return added

    def _write_shard(self) -> None:
        if not self._parts:
            return
        index = len(self.shards)
        tokens = np.concatenate(self._parts)
        final = self.partial / SHARDS_DIR / f"{index:05d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_file(tmp / TOKENS_FILE, tokens.tobytes())
        starts = np.r_[0, np.cumsum(self._lengths)].astype(np.int64)
        with open(tmp / DOCS_FILE, "wb") as f:
            np.save(f, starts)
            f.flush()
            os.fsync(f.fileno())
        write_file(tmp / DOC_IDS_FILE, json.dumps(self._ids).encode())
        with progress(len(tokens), f"sorting shard {index}", "suffix", self.quiet, leave=False) as bar:
            table = suffix_array(tokens, bar.update)
        write_file(tmp / TABLE_FILE, table.astype("<u8").tobytes())
        del table
        for w in self.build["windows"]:
            build_window_table(tmp, tokens, w, self.separator, self.build["hash_bits"])
            for path in table_paths(tmp, w):
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        # the checksum of every file, checked by the reader on the shard's first use (formats.integrity)
        checksums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        entry = {"name": final.name, "tokens": int(len(tokens)), "documents": len(self._ids), "sha256": checksums}
        write_file(tmp / SHARD_META, json.dumps(entry).encode())
        fsync_dir(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self.shards.append(entry)
        self.tokens += len(tokens)
        self._parts, self._ids, self._lengths, self._buffered = [], [], [], 0

    def finish(self) -> dict[str, Any]:
        """Write the last shard and the metadata, and give the folder its final name."""
        if self.skip:
            raise MiaError(f"the source has fewer documents than the finished shards of {self.partial} hold "
                           f"({self.skip} missing): is it the same source?")
        self._write_shard()
        if self.tokens == 0:
            self.abort()
            raise MiaError("the corpus is empty: nothing to index")
        tables = self._merge_window_tables()
        elapsed = time.perf_counter() - self._t0
        meta = {**self.build, "mia_version": __version__, "tokens": int(self.tokens), "documents": self.documents,
                "shards": self.shards, TABLES_KEY: tables, "build_s": round(elapsed, 3),
                "resumed_documents": self.resumed_documents,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json_atomic(self.partial / META_FILE, meta)
        os.replace(self.partial, self.folder)
        fsync_dir(self.folder.parent)
        (self.folder / BUILD_FILE).unlink()  # after the rename: a kill between the two leaves a whole index
        return meta

    def _merge_window_tables(self) -> dict[str, Any]:
        """The index-level fingerprint table of each window length (global_table.py), merged from the shards'
        (also when a resumed build finishes: the files are written anew, byte for byte the same)."""
        folders = [self.partial / SHARDS_DIR / s["name"] for s in self.shards]
        counts = [int(s["tokens"]) for s in self.shards]
        tables = {}
        for w in self.build["windows"]:
            with progress(None, f"merging the {w}-token fingerprint tables", "table", self.quiet, leave=False):
                record = merge_window_tables(self.partial, folders, counts, w, self.build["hash_bits"])
            if record is not None:
                tables[str(w)] = record
        return tables

    def abort(self) -> None:
        """Forget an unfinished build (used on errors before any shard was written; finished shards stay)."""
        if not self.shards:
            shutil.rmtree(self.partial, ignore_errors=True)


def build_index(folder: str | os.PathLike, documents: Iterable[Sequence[int]], tokenizer: str,
                fingerprint: str, vocab_size: int, source: dict[str, Any], **options: Any) -> dict[str, Any]:
    """Index an iterable of tokenized documents; returns the metadata written."""
    builder = IndexBuilder(folder, tokenizer, fingerprint, vocab_size, source, **options)
    try:
        for doc in documents:
            builder.add(doc)
        return builder.finish()
    except BaseException:
        builder.abort()
        raise
