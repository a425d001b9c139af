"""How mia names what it writes: ``{part}_{part}_..._{timestamp}``, each part a :func:`safe_name`, and
never a name that is taken or being written (:func:`unused_path`).

Names are for people: mia never parses one back (a file records what made it in its attributes),
so files named by an older mia (runs as ``hf_org_model_...``, attack results as ``model_...``) are
found and read as before.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a file or folder being written has this suffix until it is complete
NAME_PART_LIMIT = 64  # a file name has 255 bytes at most; model paths can be longer


def safe_name(name: str, limit: int = NAME_PART_LIMIT) -> str:
    """A model or dataset name as one part of a file or folder name: ``hf:org/model`` → ``hf-org-model``.

    Every run of characters other than letters, digits, ``.``, ``_`` and ``-`` becomes one ``-`` (so
    ``_`` keeps separating the parts of mia's names); leading and trailing ``-``/``.`` go (no hidden
    file, no ``..``). A name longer than ``limit`` keeps its end (a path's most telling part) and a
    hash of the whole, so a long local model path never makes a name too long for the file system.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if len(cleaned) > limit:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[-(limit - 9):].lstrip('-.')}-{digest}"
    return cleaned or "unnamed"


def timestamp(now: datetime | None = None) -> str:
    """The ``%Y%m%d_%H%M%S`` stamp in map, run and attack file names (local time)."""
    return (now or datetime.now()).strftime("%Y%m%d_%H%M%S")


def unused_path(folder: Path, stem: str, suffix: str = "") -> Path:
    """``folder/{stem}{suffix}``, else ``{stem}_2{suffix}``, ``_3``, ...: the first name that is
    neither taken nor being written (a ``.partial`` twin), so nothing is ever overwritten."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists() or path.with_name(path.name + PARTIAL_SUFFIX).exists():
        n += 1
        path = folder / f"{stem}_{n}{suffix}"
    return path
