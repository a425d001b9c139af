"""The one way the tests write a prefix map of rows they made themselves (``PrefixMapWriter``, as
`mia prefix` does): each test module decides the rows, this writes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.formats.prefixmap import PrefixMapWriter


def write_map(folder: str | Path, prefixes: Any, suffixes: Sequence[Sequence[int]], *, suffix_tokens: int,
              tokenizer: str, fingerprint: str, labels: Sequence[str] | None = None, ids: Sequence[str] | None = None,
              starts: Sequence[int] | None = None, attrs: dict[str, Any] | None = None,
              dataset: tuple[list[str], list[Any]] | None = None, counts: dict[str, Any] | None = None) -> Path:
    """A finished map of these rows (``prefixes`` [N, P]; ``suffixes`` ragged, at most ``suffix_tokens``);
    ``dataset`` (texts, token lists) is saved into the map too when given. Returns its folder."""
    prefixes = np.asarray(prefixes)
    n, p = prefixes.shape
    ids = list(ids) if ids is not None else [f"s{i}" for i in range(n)]
    labels = list(labels) if labels is not None else [""] * n
    writer = PrefixMapWriter(Path(folder), p, suffix_tokens,
                             {"tokenizer": tokenizer, "tokenizer_fingerprint": fingerprint, **(attrs or {})},
                             save_dataset=dataset is not None)
    writer.add_rows(prefixes, [list(x) for x in suffixes], list(range(n)), ids, labels,
                    list(starts) if starts is not None else [0] * n)
    if dataset is not None:
        texts, tokens = dataset
        writer.add_dataset_samples(ids, texts, labels, tokens)
    return writer.finish(counts or {})
