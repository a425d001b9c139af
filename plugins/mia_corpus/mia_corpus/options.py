"""The datasets' options, declared once for the core (``register(..., options=...)``), labels,
and the check for empty datasets.

The core checks every ``--dataset-option`` against these declarations before a loader runs
and hands the loaders typed values (``mia datasets --options NAME`` prints them).
"""

from collections.abc import Iterable, Iterator
from typing import Any

from mia_core import Option
from mia_core.errors import MiaError
from mia_core.labels import ACCEPTED, is_blank, label_from_text
from mia_core.types import Sample

SPLITS = ("all", "member", "nonmember")
BY = ("file", "line", "paragraph")
DEFAULT_SEED = 2026

_PATH = Option("path", str, None, "a file or folder (.txt, .jsonl, .json, .csv, .tsv, .parquet)")
_TEXT_FIELD = Option("text_field", str, "text", "the field (column) holding the text")
_ID_FIELD = Option("id_field", str, None, "the field holding the sample id; auto: the first of id, _id, doc_id, "
                                          "sample_id present; none: number the records")
_LABEL_FIELD = Option("label_field", str, None, "the field holding the membership label; auto: the first of "
                                                "label, is_member, member, membership present; none: no labels")
# Alphabetical: the order `mia datasets --options` and the errors list them in.
FILE_OPTIONS = (
    Option("by", default="file", choices=BY, help="one sample per .txt file, line or paragraph"),
    Option("encoding", str, "utf-8", "text encoding of the files (latin-1, utf-16, cp1252, ...)"),
    _ID_FIELD,
    Option("label", str, None, f"the label of every sample without one ({ACCEPTED})"),
    _LABEL_FIELD,
    _PATH,
    _TEXT_FIELD,
)
# The corpus's own options first; the files options apply with path= (the corpus's layout on your files).
CORPUS_OPTIONS = (
    Option("path", str, None, "your own files in the corpus layout (member/, nonmember/ folders or labels); "
                              "then the files options below apply"),
    Option("seed", str, str(DEFAULT_SEED), "seed of the generated control split (any integer or text)"),
    Option("split", default="all", choices=SPLITS, help="which samples: all, member or nonmember"),
    *(o for o in FILE_OPTIONS if o.name != "path"),
)
HF_OPTIONS = (
    Option("config", str, None, "the dataset's configuration (subset) name"),
    Option("data_files", str, None, "comma-separated data files, for hf:json, hf:csv, hf:parquet, hf:text"),
    _ID_FIELD,
    _LABEL_FIELD,
    Option("path", str, None, "a hub id or folder, instead of hf:NAME"),
    Option("split", str, "train", "the split to read"),
    Option("streaming", bool, False, "stream the records instead of downloading/caching them whole"),
    _TEXT_FIELD,
)
FILE_ONLY = tuple(o.name for o in FILE_OPTIONS if o.name != "path")


def normalize_label(value: Any, where: str) -> str | None:
    """``member``/``nonmember`` for a spelling of the core's label table (``mia_core.labels``);
    ``None`` when empty. Anything else is an error rather than a silent guess, since labels
    decide the evaluation."""
    if is_blank(value):
        return None
    label = label_from_text(value)
    if label is None:
        raise MiaError(f"{where}: label {value!r} is neither member nor nonmember (accepted: {ACCEPTED})")
    return label


def non_empty(samples: Iterable[Sample], what: str, hint: str = "") -> Iterator[Sample]:
    """Pass ``samples`` through; an error at the end if there were none (an empty dataset
    would otherwise surface later as a puzzling "no usable sample")."""
    empty = True
    for sample in samples:
        empty = False
        yield sample
    if empty:
        raise MiaError(f"{what} has no samples" + (f" ({hint})" if hint else ""))
