"""mia plugin: dataset loaders.

Registers three datasets (see docs/datasets.md):

- ``corpus`` — the embedded default corpus (package data, member/nonmember labels);
- ``files`` — the user's local files or folders (also matched by typing a path);
- ``hf:NAME`` — Hugging Face ``datasets`` (``hf:NAME``), imported lazily.

Factories are lazy ``"module:attr"`` strings, so ``mia --help`` imports none of this.
"""

import os

from mia_core import hookimpl


def _is_path(name: str) -> bool:
    # An existing file or folder typed as the dataset name uses the local-files loader.
    return not name.lower().startswith("hf:") and os.path.exists(name)


def _is_hf(name: str) -> bool:
    return name.lower().startswith("hf:")


@hookimpl
def mia_register_datasets(register) -> None:
    register("corpus", "mia_corpus.embedded:create_corpus",
             description="Embedded default corpus: licenses, Zen of Python, US founding documents (member) "
                         "+ generated control text (nonmember)")
    register("files", "mia_corpus.files:create_files", match=_is_path,
             description="Local files or folders (.txt, .jsonl, .json, .csv, .parquet): path=... or type the path")
    register("hf:NAME", "mia_corpus.hf:create_hf", match=_is_hf,
             description="Hugging Face datasets: hf:NAME, hf:/saved/folder, or data_files=...")
