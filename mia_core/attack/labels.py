"""Membership labels: spellings accepted, and label files for datasets that carry none."""

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.labels import label_from_text


def normalize_label(value: Any) -> str:
    """``member``/``nonmember`` from any spelling of the one label table (``mia_core.labels``: 1/0,
    1.0/0.0, true/false, in/out, seen/unseen, train/test); ``""`` for anything else (unlabelled)."""
    return label_from_text(value) or ""


def label_codes(parts: Iterable[Any], rows: int) -> np.ndarray:
    """The membership codes (``metrics.membership_codes``: a byte a row) of a label column of ``rows`` rows given as
    consecutive slices (``parts``), each slice's distinct values normalized once: the labels of 10^7 rows as text
    would take some 600 MB."""
    from mia_core.attack.metrics import membership_codes

    out = np.empty(rows, dtype=np.int8)
    at = 0
    for part in parts:
        values, inverse = np.unique(np.asarray(part), return_inverse=True)
        out[at:at + len(inverse)] = membership_codes([normalize_label(v) for v in values])[inverse.ravel()]
        at += len(inverse)
    return out


def _label_rows(path: Path) -> list:
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: CSVs saved by Excel start with a BOM
        if path.suffix.lower() not in (".jsonl", ".json"):
            return list(csv.DictReader(fh, dialect="excel-tab" if path.suffix.lower() == ".tsv" else "excel"))
        rows = []
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise MiaError(f"{path}:{n} is not a JSON object") from None
        return rows


def read_label_file(path: str | Path) -> dict[str, str]:
    """Sample id → label from a CSV/TSV with ``id`` and ``label`` columns, or JSONL with
    ``{"id": ..., "label": ...}`` per line."""
    path = Path(path)
    if not path.is_file():
        raise MiaError(f"label file {str(path)!r} not found")
    labels: dict[str, str] = {}
    try:
        rows = _label_rows(path)
    except UnicodeDecodeError as exc:
        raise MiaError(f"label file {path} is not UTF-8 text (byte {exc.start} cannot be decoded; a binary "
                       "file?); give a CSV, TSV or JSONL file") from None
    except csv.Error as exc:
        raise MiaError(f"label file {path} is not a readable CSV/TSV file ({exc})") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "id" not in row or "label" not in row:
            raise MiaError(f"{path}: entry {n} lacks an 'id' or a 'label' field")
        label = normalize_label(row["label"])
        if not label:
            raise MiaError(f"{path}: entry {n} has label {row['label']!r}; use member/nonmember (or 1/0)")
        labels[str(row["id"])] = label
    return labels
