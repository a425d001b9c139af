"""The corpus index folder's layout: its file names, format number, token storage and JSON writes,
shared by the reader, the shard writer and the infini-gram adapter (docs/index.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.formats.safeio import write_atomically

INDEX_FORMAT = 2
META_FILE = "index.json"
SHARD_META = "shard.json"
SHARDS_DIR = "shards"
TOKENS_FILE = "tokens.bin"
TABLE_FILE = "table.bin"
DOCS_FILE = "doc_offsets.npy"
DOC_IDS_FILE = "doc_ids.json"


def storage_for(vocab_size: int) -> tuple[np.dtype, int, int]:
    """(token dtype, tokengrams ``vocab`` argument, separator id) for a vocabulary.

    u16 when every id and the separator (the largest value of the type) fit, else u32.
    """
    if vocab_size < 2**16 - 1:
        return np.dtype("<u2"), 2**16, 2**16 - 1
    if vocab_size < 2**32 - 1:
        return np.dtype("<u4"), 2**32, 2**32 - 1
    raise MiaError(f"vocabulary of {vocab_size} tokens is too large for a tokengrams index")


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as the JSON file ``path``, through the one atomic write (``formats.safeio``)."""
    write_atomically(path, json.dumps(data, indent=2).encode())
