"""Set-level test results (``mia dataset-inference``, ``mia contamination``): one JSON file each, written
whole and never over another, with the provenance every mia file records."""

import json
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.formats.names import unused_path
from mia_core.formats.safeio import write_atomically

KINDS = ("dataset-inference", "contamination")


def write_setlevel_results(folder: Path, stem: str, record: dict[str, Any]) -> Path:
    """``record`` (with its ``kind``) as ``folder/stem.json`` (``_2``, ... when taken)."""
    if record.get("kind") not in KINDS:
        raise ValueError(f"unknown set-level result kind {record.get('kind')!r}")
    folder.mkdir(parents=True, exist_ok=True)
    path = unused_path(folder, stem, ".json")
    text = json.dumps(record, indent=2, ensure_ascii=False, default=_plain) + "\n"
    return write_atomically(path, text.encode("utf-8"), overwrite=False)


def read_setlevel_results(path: str | Path) -> dict[str, Any]:
    """A results file, or a one-line error when it is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MiaError(f"cannot read set-level results {str(path)!r}: {exc}") from None
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise MiaError(f"{str(path)!r} is not a set-level results file (no kind {' or '.join(KINDS)})")
    return record


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
