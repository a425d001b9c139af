"""The scores file written beside a run: ``<run>.scores.h5`` (the run itself is never touched).

Groups: ``match`` (suffix-match scores, one value per run row) and ``corpus`` (membership
against a suffix-array index: ``longest_match``/``memorized`` per row, the memorized
windows with their counts in the generations and in the corpus). Rescoring replaces the
file atomically (``mia_core.formats.safeio.write_hdf5_streamed``: written to a temporary name as it is
built, never whole in memory, fsynced, renamed); a ``corpus`` group from an
earlier scoring with an index is kept when the new scoring has none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.hdf5 import STR_DTYPE, decode_attr, encode_attrs
from mia_core.formats.integrity import open_hdf5
from mia_core.formats.provenance import provenance
from mia_core.formats.safeio import disk_error, write_hdf5_streamed

RESCORE = "score the run again with mia score"


def scores_path(run_path: str | os.PathLike) -> Path:
    """``runs/x_2026.h5`` → ``runs/x_2026.scores.h5``."""
    p = Path(run_path)
    return p.with_name(p.stem + ".scores.h5")


def write_scores(run_path: str | os.PathLike, attrs: dict[str, Any], match: dict[str, np.ndarray],
                 corpus: dict[str, Any] | None) -> Path:
    """Write (or replace) the scores file of a run; returns its path."""
    rows = len(next(v for v in match.values() if v is not None))
    return write_scores_blocks(run_path, attrs, rows, [(slice(0, rows), match)], corpus)


#: The per-row datasets of the ``corpus`` group (one value per run row); the others grow with what is memorized.
CORPUS_ROW_COLUMNS = ("longest_match", "memorized")


def write_scores_blocks(run_path: str | os.PathLike, attrs: dict[str, Any], rows: int,
                        blocks: Iterable[tuple[slice, dict[str, np.ndarray | None]]],
                        corpus: dict[str, Any] | Callable[[], dict[str, Any]] | None) -> Path:
    """:func:`write_scores` of ``rows`` rows whose per-row columns come one block of rows at a time (its rows, its
    columns: ``name`` in the ``match`` group, ``corpus/name`` in the ``corpus`` group; None: a column the run does
    not have): each block is written as it comes, never the whole. ``corpus`` (or what it returns once the blocks
    are written) holds the ``corpus`` group's attributes and its other datasets."""
    path = scores_path(run_path)
    keep_corpus = corpus is None and path.is_file()

    def fill(f: h5py.File) -> None:
        f.attrs.update(encode_attrs({**attrs, "provenance": provenance()}))
        f.create_group("match")
        for block_rows, columns in blocks:
            for name, values in columns.items():
                if values is None:
                    continue
                group, _, dataset = name.rpartition("/")
                g = f.require_group(group or "match")
                if dataset not in g:
                    g.create_dataset(dataset, shape=(rows,), dtype=values.dtype, chunks=True, compression="gzip",
                                     fletcher32=True)
                g[dataset][block_rows] = values
        if corpus is not None:
            made = corpus() if callable(corpus) else corpus
            c = f.require_group("corpus")
            c.attrs.update(encode_attrs(made["attrs"]))
            for name, values in made["data"].items():
                if values.dtype == object:  # strings (document ids)
                    c.create_dataset(name, data=[str(v) for v in values], dtype=STR_DTYPE)
                else:
                    c.create_dataset(name, data=values)
        elif keep_corpus:
            try:
                with open_hdf5(path) as old:
                    if "corpus" in old and old["corpus"]["longest_match"].shape[0] == attrs.get("rows"):
                        old.copy("corpus", f)
            except MiaError:
                pass  # a damaged or unreadable old scores file is simply replaced

    try:  # the old scores file stays as it was unless the new one is whole
        return write_hdf5_streamed(path, fill)
    except OSError as exc:
        raise disk_error(exc, path, "the previous scores file (if any) is unchanged") from None


#: The per-row agreement column an older mia wrote as ``memorization_score`` for both run kinds is
#: read under its own name: position agreement (generated) or next-token accuracy (teacher-forced).
LEGACY_AGREEMENT = "memorization_score"


def _agreement_name(method: Any) -> str:
    return "next_token_accuracy" if method == "teacher-forced" else "position_agreement"


def read_scores(path: str | os.PathLike) -> dict[str, Any]:
    """``{"attrs", "match": {...}, "corpus": {"attrs", "data"} | None}``; a damaged file is one
    :class:`~mia_core.formats.integrity.DamagedFile` line."""
    with open_hdf5(path, RESCORE) as f:
        out: dict[str, Any] = {"attrs": {k: decode_attr(v) for k, v in f.attrs.items()},
                               "match": {k: v[()] for k, v in f["match"].items()}, "corpus": _corpus_group(f)}
        if LEGACY_AGREEMENT in out["match"]:
            out["match"][_agreement_name(out["attrs"].get("method"))] = out["match"].pop(LEGACY_AGREEMENT)
    return out


def read_corpus_scores(path: str | os.PathLike, per_row: bool = True) -> dict[str, Any] | None:
    """Only the ``corpus`` group of :func:`read_scores` (None when the file has none): the per-row match scores,
    20 bytes a row, are not read; nor the per-row corpus columns unless ``per_row`` (:func:`read_row_scores`
    reads them a slice at a time)."""
    with open_hdf5(path, RESCORE) as f:
        return _corpus_group(f, per_row)


def _corpus_group(f: h5py.File, per_row: bool = True) -> dict[str, Any] | None:
    if "corpus" not in f:
        return None
    c = f["corpus"]
    return {"attrs": {k: decode_attr(v) for k, v in c.attrs.items()},
            "data": {k: v[()] for k, v in c.items() if per_row or k not in CORPUS_ROW_COLUMNS}}


def read_scores_head(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """A scores file's attributes and its rows (one per run row), without reading them (:func:`read_row_scores`)."""
    with open_hdf5(path, RESCORE) as f:
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        per_row = [ds.shape[0] for ds in f["match"].values() if ds.ndim == 1]
        return attrs, int(f["match"]["exact"].shape[0] if "exact" in f["match"] else max(per_row, default=0))


def row_score_names(path: str | os.PathLike, rows: int) -> dict[str, tuple[str, str]]:
    """The per-row columns of a scores file (one value per run row, ``rows`` of them):
    ``{group/name as read_scores names it: (group, dataset)}``, read by :func:`read_row_scores`."""
    with open_hdf5(path, RESCORE) as f:
        method = decode_attr(f.attrs["method"]) if "method" in f.attrs else None
        out = {}
        for group in ("match", "corpus"):
            for name, ds in (f[group].items() if group in f else ()):
                if ds.ndim == 1 and ds.shape[0] == rows:
                    shown = _agreement_name(method) if group == "match" and name == LEGACY_AGREEMENT else name
                    out[f"{group}/{shown}"] = (group, name)
    return out


def read_row_scores(path: str | os.PathLike, names: dict[str, tuple[str, str]], rows: slice) -> dict[str, np.ndarray]:
    """Rows ``rows`` of the per-row columns ``names`` (:func:`row_score_names`): a run of any size is read a
    slice at a time."""
    with open_hdf5(path, RESCORE) as f:
        return {key: f[group][name][rows] for key, (group, name) in names.items()}
