"""mia plugin: dataset loaders.

Registers three datasets (see docs/datasets.md):

- ``corpus`` — the embedded default corpus (package data, member/nonmember labels);
- ``files`` — the user's local files or folders (also matched by typing a path);
- ``hf:NAME`` — Hugging Face ``datasets`` (``hf:NAME``), imported lazily.

Factories are lazy ``"module:attr"`` strings, so ``mia --help`` imports none of this.
"""

import os

from mia_core import hookimpl
from mia_corpus.options import CORPUS_OPTIONS, FILE_OPTIONS, HF_OPTIONS

# What a file typed as the dataset name ends with (mia_corpus.files.SUPPORTED reads them).
_DATA_SUFFIXES = (".txt", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


def _is_path(name: str) -> bool:
    # A file or folder typed as the dataset name uses the local-files loader, and so does a
    # name that only looks like one (data/x.jsonl, ~/texts): a missing path is then "no such
    # file", not "unknown dataset".
    if name.lower().startswith("hf:"):
        return False
    looks_like_a_path = "/" in name or os.sep in name or name.startswith(("~", ".")) \
        or name.lower().endswith(_DATA_SUFFIXES)
    return looks_like_a_path or os.path.exists(name)


def _is_hf(name: str) -> bool:
    return name.lower().startswith("hf:")


@hookimpl
def mia_register_datasets(register) -> None:
    register("corpus", "mia_corpus.embedded:create_corpus", options=CORPUS_OPTIONS,
             description="Embedded default corpus: licenses, Zen of Python, US founding documents (member) "
                         "+ generated control text (nonmember)")
    register("files", "mia_corpus.files:create_files", match=_is_path, options=FILE_OPTIONS,
             description="Local files or folders (.txt, .jsonl, .json, .csv, .parquet): path=... or type the path")
    register("hf:NAME", "mia_corpus.hf:create_hf", match=_is_hf, options=HF_OPTIONS,
             description="Hugging Face datasets: hf:NAME, hf:/saved/folder, or data_files=...")
