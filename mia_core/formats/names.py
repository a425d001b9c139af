"""How mia names what it writes: a timestamp, and never a name that is taken or being written."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a file or folder being written has this suffix until it is complete


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
