"""What a file that is not a mia file is, in a few words, so a refusal can say it ("data.jsonl is
a JSONL file, not a mia ...") instead of only what it is not. Reads at most the first 64 KiB."""

from __future__ import annotations

import json
import os
from pathlib import Path

_SAMPLE_BYTES = 65536
_MAGIC = {b"mia-sha256 ": "an HDF5 file mia wrote", b"\x89HDF\r\n\x1a\n": "an HDF5 file",
          b"PAR1": "a Parquet file", b"\x1f\x8b": "a gzip file", b"PK\x03\x04": "a zip file",
          b"%PDF": "a PDF file", b"\x89PNG": "a PNG image"}
_DATASET_SUFFIXES = {".jsonl": "a JSONL file", ".ndjson": "a JSONL file", ".json": "a JSON file",
                     ".csv": "a CSV file", ".tsv": "a TSV file", ".txt": "a text file", ".parquet": "a Parquet file"}


def describe_file(path: str | os.PathLike) -> str:
    """``"a JSONL file"``, ``"a text file"``, ``"an empty file"``, ``"a binary file"``, ...: what
    ``path``'s first bytes (and, for text, its name) say it is."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_SAMPLE_BYTES)
    except OSError:
        return "an unreadable file"
    if not head:
        return "an empty file"
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the sample's end
            return "a binary file"
        text = head[:exc.start].decode("utf-8")
    return _describe_text(text, p.suffix.lower())


def _describe_text(text: str, suffix: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        try:
            json.loads(first)
            return "a JSONL file"
        except ValueError:
            return "a JSON file" if suffix == ".json" or text.lstrip().startswith("{") else "a text file"
    return _DATASET_SUFFIXES.get(suffix, "a text file")
