"""Dataset ``files``: the user's own files or folders, streamed.

``.txt`` (one sample per file, line or paragraph), ``.jsonl``/``.ndjson``, ``.json``,
``.csv``/``.tsv`` and ``.parquet``; folders are walked recursively in sorted order. JSON
Lines, CSV and Parquet are read record by record (Parquet in batches), so a large file is
never held in memory; a ``.json`` file is one JSON document and is read whole.
"""

import codecs
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.progress import note
from mia_core.types import MEMBER, NONMEMBER, Sample
from mia_corpus.options import non_empty, normalize_label

TEXT = (".txt",)
STRUCTURED = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
SUPPORTED = TEXT + STRUCTURED
_FOLDER_LABELS = {"member": MEMBER, "nonmember": NONMEMBER}


#: Fields read as the membership label without options (in this order), unless label_field=none.
LABEL_FIELDS = ("label", "is_member", "member", "membership")
#: Fields read as the sample id without options (in this order), unless id_field=none.
ID_FIELDS = ("id", "_id", "doc_id", "sample_id")


def _field_option(options: dict[str, Any], key: str) -> tuple[bool, str | None]:
    """(found automatically?, the field named): no option means automatic, ``none`` means no field."""
    field = options.get(key)
    if field is None:
        return True, None
    return False, None if str(field).strip().lower() in ("", "none") else str(field)


class Settings:
    """The options of one local-files dataset (typed by the core against ``FILE_OPTIONS``)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.by = options.get("by", "file")
        self.text_field = str(options.get("text_field", "text"))
        # No id_field/label_field option: a common field is found on its own; =none turns that off.
        self.id_field_auto, self.id_field = _field_option(options, "id_field")
        self.label_field_auto, self.label_field = _field_option(options, "label_field")
        self.label = normalize_label(options.get("label"), "option label")
        self.encoding = str(options.get("encoding", "utf-8"))
        self.detected: str | None = None  # the label field found automatically (said once on stderr)
        self.id_detected: str | None = None  # the id field found automatically (said once on stderr)
        try:  # an unknown name fails here, in one line, not at the first file read
            codecs.lookup(self.encoding)
        except LookupError:
            raise MiaError(f"unknown encoding {self.encoding!r} (dataset option encoding=; e.g. utf-8, "
                           "latin-1, utf-16, cp1252)") from None

    def label_field_of(self, fields: Iterable[str]) -> str | None:
        """The explicit label field, or the first common one among ``fields`` when none was given."""
        if self.label_field or not self.label_field_auto:
            return self.label_field
        found = next((f for f in LABEL_FIELDS if f in set(fields)), None)
        if found and self.detected is None:
            self.detected = found
            _said_found("membership labels", found, "label_field=none ignores it")
        return found

    def id_field_of(self, fields: Iterable[str]) -> str | None:
        """The explicit id field, or the first common one among ``fields`` when none was given."""
        if self.id_field or not self.id_field_auto:
            return self.id_field
        found = next((f for f in ID_FIELDS if f in set(fields)), None)
        if found and self.id_detected is None:
            self.id_detected = found
            _said_found("sample ids", found, "id_field=none numbers the records instead")
        return found


def _said_found(what: str, field: str, opt_out: str) -> None:
    """Say once on stderr which field was picked up without being named, and how to turn it off."""
    note(f"mia: {what} read from field {field!r} (found automatically; --dataset-option {opt_out})")


def list_files(root: Path) -> list[Path]:
    """The supported files under ``root`` (itself if a file), sorted; hidden entries skipped."""
    if not root.exists():
        raise MiaError(f"no such file: {root} (the dataset path does not exist)")
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED:
            raise MiaError(f"{root}: unsupported file type {root.suffix or '(none)'!r}; supported: "
                           f"{', '.join(SUPPORTED)}")
        return [root]
    found: list[Path] = []
    others: set[str] = set()
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            (found.append(Path(folder) / name) if suffix in SUPPORTED else others.add(suffix or "(none)"))
    found.sort(key=lambda f: f.relative_to(root).parts)  # by path: a/z.txt before b.txt
    if not found:
        seen = f" (found only: {', '.join(sorted(others))})" if others else " (it is empty)"
        raise MiaError(f"folder {str(root)!r} holds no supported file{seen}; supported: {', '.join(SUPPORTED)}")
    return found


class LocalFiles:
    """A :class:`mia_core.types.Dataset` over local files; iterating streams them again each time."""

    def __init__(self, name: str, root: Path, settings: Settings) -> None:
        self.name = name
        self.root = root
        self.settings = settings
        self.files = list_files(root)
        self.length: int | None = self._cheap_length()

    def _cheap_length(self) -> int | None:
        total = 0
        for f in self.files:
            suffix = f.suffix.lower()
            if suffix in TEXT and self.settings.by == "file":
                total += 1
            elif suffix == ".parquet":
                total += _parquet_file(f).metadata.num_rows
            else:
                return None  # counting would mean reading the whole file
        return total

    def _relative(self, f: Path) -> str:
        return f.name if self.root.is_file() else f.relative_to(self.root).as_posix()

    def _folder_label(self, rel: str) -> str | None:
        for part in reversed(rel.split("/")[:-1]):
            if part.lower() in _FOLDER_LABELS:
                return _FOLDER_LABELS[part.lower()]
        return None

    def __iter__(self) -> Iterator[Sample]:
        return non_empty(self._samples(), f"dataset {str(self.root)!r}",
                         "empty files, or lines/paragraphs that are all blank")

    def _samples(self) -> Iterator[Sample]:
        seen_ids: dict[str, str] = {}  # id → record, per pass: a repeated id is an error
        for f in self.files:
            rel = self._relative(f)
            default_label = self.settings.label or self._folder_label(rel)
            suffix = f.suffix.lower()
            try:
                if suffix in TEXT:
                    yield from _read_txt(f, rel, default_label, self.settings)
                else:
                    records = _READERS[suffix](f, self.settings)
                    yield from _records_to_samples(records, rel, default_label, self.settings, seen_ids)
            except UnicodeDecodeError as e:
                raise MiaError(f"{f}: not {self.settings.encoding} text ({e.reason} at byte {e.start}); "
                               "set --dataset-option encoding=NAME") from None


def _read_txt(f: Path, rel: str, label: str | None, s: Settings) -> Iterator[Sample]:
    if s.by == "file":
        yield Sample(rel, f.read_text(encoding=s.encoding), label)
        return
    with f.open(encoding=s.encoding, newline="") as handle:
        if s.by == "line":
            for number, line in enumerate(handle, 1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield Sample(f"{rel}:{number}", text, label)
            return
        paragraph: list[str] = []
        count = 0
        for line in handle:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                count += 1
                yield Sample(f"{rel}#{count}", "".join(paragraph).rstrip("\r\n"), label)
                paragraph = []
        if paragraph:
            yield Sample(f"{rel}#{count + 1}", "".join(paragraph).rstrip("\r\n"), label)


# Readers yield (position, record): position names the record in default ids and errors.
def _read_jsonl(f: Path, s: Settings) -> Iterator[tuple[str, Any]]:
    with f.open(encoding=s.encoding) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield str(number), json.loads(line)
            except json.JSONDecodeError as e:
                raise MiaError(f"{f}:{number}: not valid JSON ({e.msg})") from None


def _read_json(f: Path, s: Settings) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(f.read_text(encoding=s.encoding))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved as .json
            yield from _read_jsonl(f, s)
            return
        raise MiaError(f"{f}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and s.text_field not in data:
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise MiaError(f"{f}: expected a list of records, or an object with one list of records "
                           f"(keys present: {', '.join(map(str, data)) or 'none'})")
        data = data[lists[0]]
    records = data if isinstance(data, list) else [data]
    for index, record in enumerate(records):
        yield str(index), record


def _read_csv(f: Path, s: Settings) -> Iterator[tuple[str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents are longer than csv's 128 KiB default
    with f.open(encoding=s.encoding, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if f.suffix.lower() == ".tsv" else ",")
        header = reader.fieldnames or []
        _require_fields(f, header, s)
        for number, row in enumerate(reader, 1):
            yield str(number), row


def _parquet_file(f: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise MiaError(f"{f}: not a readable Parquet file ({e})") from None


def _read_parquet(f: Path, s: Settings) -> Iterator[tuple[str, Any]]:
    pf = _parquet_file(f)
    names = pf.schema_arrow.names
    _require_fields(f, names, s)
    columns = [c for c in (s.text_field, s.id_field_of(names), s.label_field_of(names)) if c]
    index = 0
    for batch in pf.iter_batches(batch_size=1024, columns=list(dict.fromkeys(columns))):
        for record in batch.to_pylist():
            yield str(index), record
            index += 1


def _require_fields(f: Path, present: list[str], s: Settings) -> None:
    for option, field in (("text_field", s.text_field), ("id_field", s.id_field), ("label_field", s.label_field)):
        if field and field not in present:
            raise MiaError(f"{f}: no field {field!r} ({option}); fields present: {', '.join(present) or 'none'}. "
                           f"Choose one with --dataset-option {option}=NAME")


_READERS = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
            ".tsv": _read_csv, ".parquet": _read_parquet}


def record_sample(record: Any, where: str, default_id: str, default_label: str | None, s: Settings,
                  seen_ids: dict[str, str] | None = None) -> Sample:
    """One record (a mapping, or a bare string) as a Sample, with errors that name the fields present.

    ``seen_ids`` (id → where it was read) makes a repeated id from an id field an error naming both
    records: a label file or an export keyed by id could not tell them apart. (Position ids are
    unique by construction and not held, so a dataset without ids is still read in constant memory.)"""
    if isinstance(record, str):
        record = {s.text_field: record}
    if not isinstance(record, dict):
        raise MiaError(f"{where}: expected an object with a {s.text_field!r} field, got {type(record).__name__}")
    for option, field in (("text_field", s.text_field), ("id_field", s.id_field), ("label_field", s.label_field)):
        if field and field not in record:
            raise MiaError(f"{where}: no field {field!r} ({option}); fields present: "
                           f"{', '.join(map(str, record)) or 'none'}. Choose one with --dataset-option {option}=NAME")
    text = record[s.text_field]
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise MiaError(f"{where}: field {s.text_field!r} holds {type(text).__name__}, not text")
    sample_id = _record_id(record, s.id_field_of(record), default_id)
    if seen_ids is not None and sample_id != default_id:
        if sample_id in seen_ids:
            raise MiaError(f"duplicate sample id {sample_id!r}: {seen_ids[sample_id]} and {where} "
                           "(ids must be unique; --dataset-option id_field=none numbers the records instead)")
        seen_ids[sample_id] = where
    label_field = s.label_field_of(record)
    label = None
    if label_field:
        try:
            label = normalize_label(record[label_field], where)
        except MiaError as exc:
            if label_field == s.label_field:
                raise
            raise MiaError(f"{exc} (field {label_field!r} was read as the label automatically; "
                           "--dataset-option label_field=none ignores it)") from None
    return Sample(sample_id, text, label or default_label)


def _record_id(record: dict, id_field: str | None, default_id: str) -> str:
    """The record's id as text (an integer-valued float 3.0 as ``3``); its position when it has none."""
    value = record.get(id_field) if id_field else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_id
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _records_to_samples(records: Iterator[tuple[str, Any]], rel: str, label: str | None,
                        s: Settings, seen_ids: dict[str, str]) -> Iterator[Sample]:
    for position, record in records:
        yield record_sample(record, f"{rel}:{position}", f"{rel}:{position}", label, s, seen_ids)


def create_files(name: str, options: dict[str, Any]) -> LocalFiles:
    """Factory of the ``files`` dataset; a path typed as the dataset name works too."""
    path = options.get("path")
    if not path:
        if name.lower() in ("files", "corpus"):
            raise MiaError(f"dataset {name!r} needs --dataset-option path=FILE_OR_FOLDER")
        path = name
    return LocalFiles(name, Path(os.path.expanduser(str(path))), Settings(options))
