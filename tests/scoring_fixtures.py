"""Tiny synthetic prefix maps, runs and indexes for the scoring tests (no model needed)."""

from pathlib import Path

import numpy as np
from map_fixtures import write_map

from mia_core.formats.runs import RunWriter

FP = "toy-fingerprint"
VOCAB = 500


def make_docs(n_docs: int = 6, length: int = 120, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, length) for _ in range(n_docs)]


def make_map(folder: Path, docs: list[np.ndarray], prefix: int = 10, suffix: int = 20, loc: str = "start",
             starts: list[int] | None = None, fingerprint: str = FP, save: bool = True,
             size: int | str = "all") -> Path:
    """One prefix row per document at ``starts`` (default 0); even docs members, odd nonmembers."""
    starts = starts or [0] * len(docs)
    ids = [f"doc{i}" for i in range(len(docs))]
    return write_map(folder, [d[s:s + prefix] for d, s in zip(docs, starts, strict=True)],
                     [d[s + prefix:s + prefix + suffix] for d, s in zip(docs, starts, strict=True)],
                     suffix_tokens=suffix, tokenizer="toy", fingerprint=fingerprint,
                     labels=["member" if i % 2 == 0 else "nonmember" for i in range(len(docs))], ids=ids,
                     starts=starts, attrs={"dataset": "toyset", "prefix_loc": loc, "size_requested": size},
                     dataset=(["text"] * len(docs), docs) if save else None, counts={"samples_read": len(docs)})


def make_run(map_folder: Path, generations: list, prefix_rows: list[int] | None = None,
             method: str = "generate", name: str = "toy_20260101_000000.h5", fingerprint: str = FP,
             max_length: int | None = None, complete: bool = True, tokenizer: str = "toy",
             temperature: float = 0.0, model: str = "toy") -> Path:
    path = Path(map_folder) / "runs" / name
    max_length = max_length or max([len(g) for g in generations] + [1])
    w = RunWriter.create(path, {"model": model, "method": method, "prefix_map": str(map_folder),
                                "tokenizer": tokenizer, "tokenizer_fingerprint": fingerprint,
                                "temperature": temperature},
                         max_length, columns={"matched_length": ("int32", None)} if method != "generate" else None)
    if generations:
        rows = prefix_rows if prefix_rows is not None else list(range(len(generations)))
        w.append({"tokens": [list(map(int, g)) for g in generations], "prefix_row": rows,
                  "text": ["" for _ in generations]})
    if complete:
        w.finish()
    w.close()
    return path
