"""``mia show``: what is inside a map, run, scores or attack file, without h5py.

:func:`describe_file` returns ``{"path", "kind", "attributes", "provenance", "counts", "columns",
"rows"}`` (JSON-ready); :func:`format_description` prints it as tables.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.filekinds import file_kind
from mia_core.formats.hdf5 import plain
from mia_core.formats.runs import RunKind
from mia_core.formats.sniff import describe_file as describe_content
from mia_core.text_table import text_table

CELL_WIDTH = 60


#: Rows read at a time where `mia show` counts over a whole file.
COUNT_ROWS = 65_536


def _label_counts_by_slice(read: Any, size: int) -> dict[str, int]:
    """Label counts of a column ``read(rows)`` gives ``COUNT_ROWS`` rows at a time (memory: one slice)."""
    counts: Counter[str] = Counter()
    for start in range(0, size, COUNT_ROWS):
        values, n = np.unique(read(slice(start, min(start + COUNT_ROWS, size))).astype(str), return_counts=True)
        counts.update({str(v) or "(none)": int(c) for v, c in zip(values, n, strict=True)})
    return dict(sorted(counts.items()))


def _sum_by_slice(read: Any, size: int, count: Any = np.sum) -> int:
    return sum(int(count(read(slice(start, min(start + COUNT_ROWS, size))))) for start in range(0, size, COUNT_ROWS))


def _rows_from(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return [{name: plain(values[i]) for name, values in columns.items()} for i in range(n)]


def _describe_map(path: Path, n: int) -> dict[str, Any]:
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(path.parent if path.is_file() else path)
    first = slice(0, min(n, len(pmap)))
    cols = {"sample_id": pmap.read("sample_id", first), "sample_label": pmap.read("sample_label", first),
            "prefix_start": pmap.read("prefix_start", first), "prefixes": pmap.read("prefixes", first),
            "suffix_lengths": pmap.read("suffix_lengths", first)}
    labels = _label_counts_by_slice(lambda rows: pmap.read("sample_label", rows), len(pmap))
    counts = {"rows": len(pmap), "labels": labels, "saved_dataset": pmap.has_dataset}
    return {"path": str(pmap.path), "attributes": pmap.attrs, "counts": counts,
            "columns": list(cols), "rows": _rows_from(cols, first.stop)}


def _describe_run(path: Path, n: int) -> dict[str, Any]:
    from mia_core.formats.runs import open_run

    run = open_run(path)
    first = slice(0, min(n, len(run)))
    cols: dict[str, Any] = {"prefix_row": run.read("prefix_row", first), "lengths": run.read("lengths", first)}
    if run.kind is RunKind.TEACHER_FORCED:  # the argmax text is no generation; matched length says what happened
        for name in ("matched_length",):
            if run.has(name):
                cols[name] = run.read(name, first)
    else:
        cols["text"] = run.read("text", first)
    if run.has("error"):
        cols["error"] = run.read("error", first)
    counts: dict[str, Any] = {"rows": len(run), "complete": run.complete, "method": run.method}
    if run.has("error"):
        counts["failed"] = _sum_by_slice(lambda rows: run.read("error", rows), len(run),
                                         lambda errors: sum(bool(str(e).strip()) for e in errors))
    return {"path": str(run.path), "attributes": run.attrs, "counts": counts,
            "columns": run.columns, "rows": _rows_from(cols, first.stop)}


def _describe_scores(path: Path, n: int) -> dict[str, Any]:
    from mia_core.formats.scores import read_row_scores, read_scores_head, row_score_names

    attrs, rows = read_scores_head(path)
    names = row_score_names(path, rows)
    match = {key.split("/", 1)[1]: where for key, where in names.items() if key.startswith("match/")}
    counts: dict[str, Any] = {"rows": rows}
    if "extracted" in match:
        counts["exact extractions"] = _sum_by_slice(
            lambda r: read_row_scores(path, {"x": match["extracted"]}, r)["x"], rows)
    if "corpus/memorized" in names:
        counts["rows with a memorized corpus window"] = _sum_by_slice(
            lambda r: read_row_scores(path, {"x": names["corpus/memorized"]}, r)["x"], rows)
    take = min(n, rows)
    return {"path": str(path), "attributes": attrs, "counts": counts, "columns": list(match),
            "rows": _rows_from(read_row_scores(path, match, slice(0, take)), take)}


def _describe_attack(path: Path, n: int) -> dict[str, Any]:
    from mia_core.formats.attack_results import AttackResults

    res = AttackResults(path)
    datasets = {**{k: res.columns.dataset(k) for k in res.columns},
                **{f"signal:{k}": res.signals.dataset(k) for k in res.signals}}
    size = len(res)
    counts: dict[str, Any] = {"strings": size}
    for name in ("label", "sample_label"):
        if name in res.columns:
            counts["labels"] = _label_counts_by_slice(partial(res.read, res.columns.dataset(name)), size)
            break
    counts["AUC"] = {m["signal"]: m.get("auc") for m in res.attrs.get("metrics") or []}
    take = min(n, size)
    first = {name: res.read(d, slice(0, take)) for name, d in datasets.items()}
    return {"path": str(path), "attributes": res.attrs, "counts": counts, "columns": list(datasets),
            "rows": _rows_from(first, take)}


DESCRIBERS = {"map": _describe_map, "run": _describe_run, "scores": _describe_scores, "attack": _describe_attack}


def describe_file(path: str | os.PathLike, rows: int = 5) -> dict[str, Any]:
    """The kind, attributes, provenance, counts and first ``rows`` rows of a mia file (or map folder)."""
    p = Path(path)
    if not p.exists():
        raise MiaError(f"{p} not found")
    kind = file_kind(p)
    if kind is None:
        what = "a folder" if p.is_dir() else describe_content(p)
        raise MiaError(f"{p} is {what}, not a mia map, run, scores or attack file (mia show reads those)")
    out = DESCRIBERS[kind](p, rows)
    attrs = {k: plain(v) for k, v in out["attributes"].items()}
    out["provenance"] = attrs.pop("provenance", None)
    attrs.pop("columns", None)
    out["attributes"] = attrs
    return {"kind": kind, **out}


def _cell(value: Any, width: int = CELL_WIDTH) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_description(d: dict[str, Any]) -> str:
    """Tables: attributes, provenance, counts, first rows."""
    parts = [f"{d['kind']}: {d['path']}", "",
             text_table(["attribute", "value"], [[k, _cell(v, 90)] for k, v in d["attributes"].items()])]
    if d.get("provenance"):
        parts += ["", text_table(["provenance", "value"], [[k, _cell(v, 90)] for k, v in d["provenance"].items()])]
    else:
        parts += ["", "provenance: not recorded (written by a mia older than this field)"]
    parts += ["", text_table(["count", "value"], [[k, _cell(v, 90)] for k, v in d["counts"].items()])]
    if d["rows"]:
        header = list(d["rows"][0])
        parts += ["", f"first {len(d['rows'])} rows:",
                  text_table(header, [[_cell(r[h], 40) for h in header] for r in d["rows"]])]
    return "\n".join(parts)
