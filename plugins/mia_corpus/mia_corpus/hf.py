"""Dataset ``hf:NAME``: Hugging Face ``datasets`` (imported only when used).

NAME is a hub id (used from the local cache; this machine may be offline), a folder
written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, a folder of data files,
or a packaged builder (``json``, ``csv``, ``parquet``, ``text``) with ``data_files=``.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.types import Sample
from mia_corpus.files import Settings, record_sample
from mia_corpus.options import non_empty

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
            ".txt": "text", ".arrow": "arrow"}
PACKAGED = {"json", "csv", "parquet", "text", "arrow", "pandas", "imagefolder", "audiofolder"}


def _is_saved_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _hint(target: str) -> str:
    return (f"make it available offline: on a machine with network access run "
            f"python -c \"import datasets; datasets.load_dataset('{target}').save_to_disk('FOLDER')\" "
            f"and use --dataset hf:FOLDER (or copy the Hugging Face cache, ~/.cache/huggingface, here)")


class HFDataset:
    """A :class:`mia_core.types.Dataset` over a ``datasets.Dataset`` or ``IterableDataset``."""

    def __init__(self, name: str, data: Any, label: str, settings: Settings) -> None:
        self.name = name
        self._data = data
        self._label = label  # what errors and default ids call it: NAME/split
        self._settings = settings
        self.length: int | None = len(data) if hasattr(data, "__len__") else None
        columns = getattr(data, "column_names", None)  # None for a stream whose features are unknown
        if columns is not None:
            for option, field in (("text_field", settings.text_field), ("id_field", settings.id_field),
                                  ("label_field", settings.label_field)):
                if field and field not in columns:
                    raise MiaError(f"{label}: no column {field!r} ({option}); columns present: "
                                   f"{', '.join(columns)}. Choose one with --dataset-option {option}=NAME")

    def __iter__(self) -> Iterator[Sample]:
        return non_empty(self._samples(), f"dataset {self._label!r}")

    def _samples(self) -> Iterator[Sample]:
        seen_ids: dict[str, str] = {}  # id → record, per pass: a repeated id is an error
        for index, record in enumerate(self._data):
            where = f"{self._label}:{index}"
            yield record_sample(record, where, where, None, self._settings, seen_ids)


def _pick_split(data: Any, split: str, target: str) -> Any:
    """A saved DatasetDict holds several splits; a saved Dataset is one split already."""
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise MiaError(f"{target}: no split {split!r}; splits present: {', '.join(data)}. "
                           "Choose one with --dataset-option split=NAME")
        return data[split]
    return data


def create_hf(name: str, options: dict[str, Any]) -> HFDataset:
    """Factory of ``hf:NAME`` (options: typed by the core against ``mia_corpus.options.HF_OPTIONS``)."""
    settings = Settings({k: options[k] for k in ("text_field", "id_field", "label_field") if k in options})
    split = str(options.get("split", "train"))
    streaming = bool(options.get("streaming", False))
    config = options.get("config") or None
    data_files = options.get("data_files") or None
    target = str(options.get("path") or (name[3:] if name.lower().startswith("hf:") else "")).strip()
    if not target and data_files:
        first = str(data_files).split(",")[0]
        target = BUILDERS.get(Path(first).suffix.lower(), "")
        if not target:
            raise MiaError(f"data_files={data_files!r}: cannot tell the format from the extension; name it, "
                           f"e.g. hf:json (one of {', '.join(sorted(set(BUILDERS.values())))})")
    if not target:
        raise MiaError(f"dataset {name!r} needs a name: hf:NAME (hub id or folder), path=FOLDER or data_files=FILES")
    if data_files and "," in str(data_files):
        data_files = [p.strip() for p in str(data_files).split(",") if p.strip()]

    import datasets  # heavy: only now

    local = Path(os.path.expanduser(target))
    label = f"{target}/{split}"
    if _is_saved_folder(local):
        try:
            data = datasets.load_from_disk(str(local))
        except Exception as e:
            raise MiaError(f"{local}: cannot load the saved dataset ({e})") from None
        data = _pick_split(data, split, target)
        if streaming:
            data = data.to_iterable_dataset()
        return HFDataset(name, data, label, settings)
    if local.exists() and not local.is_dir():
        raise MiaError(f"{local} is a file: use --dataset-option data_files={local} with hf:json/csv/parquet/text, "
                       "or the local files loader (--dataset PATH)")
    is_local = local.is_dir() or target in PACKAGED
    if data_files and target in PACKAGED:
        missing = [p for p in ([data_files] if isinstance(data_files, str) else data_files)
                   if not any(ch in p for ch in "*?[") and not Path(os.path.expanduser(p)).exists()]
        if missing:
            raise MiaError(f"data_files: {', '.join(missing)} does not exist")
    try:
        data = datasets.load_dataset(str(local) if local.is_dir() else target, config, data_files=data_files,
                                     split=split, streaming=streaming)
    except (ValueError, KeyError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MiaError(f"Hugging Face dataset {target!r} (config={config}, split={split}): {message}") from None
    except Exception as e:  # network, missing cache, dataset scripts...: all mean "not here"
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if is_local:
            raise MiaError(f"Hugging Face dataset {target!r}: {message}") from None
        raise MiaError(f"Hugging Face dataset {target!r} is not available offline ({message}); "
                       f"{_hint(target)}") from None
    return HFDataset(name, data, label, settings)
