"""Factories the registry calls: ``make_tokenizer(name, options)`` and ``make_backend(name, options)``."""

from __future__ import annotations

from typing import Any

from mia_core.errors import MiaError
from mia_llamacpp import files
from mia_llamacpp.native import Model, default_threads
from mia_llamacpp.tokenizer import GGUFTokenizer

DEFAULT_N_CTX = 16384  # KV cells shared by a batch: 128 rows of 32 + 32 tokens (+BOS) fit in one group
DEFAULT_N_BATCH = 512  # tokens per llama_decode call (llama.cpp's default)
MIN_N_CTX = 16


def _positive(options: dict[str, Any], key: str, default: int, least: int = 1) -> int:
    value = options.get(key)
    value = default if value is None else int(value)
    if value < least:
        raise MiaError(f"option {key} must be an integer >= {least}, got {value}")
    return value


def make_tokenizer(name: str, options: dict[str, Any] | None = None) -> Any:
    """An embedded model: mia-hf's tokenizer of the same GGUF (same vocabulary, and the segmentation every
    map of that model was made with: ``mia_llamacpp.tokenizer``). Any other GGUF: its own vocabulary
    through llama.cpp (``vocab_only``: the weights are not read)."""
    embedded = files.embedded_name(name)
    if embedded is not None:
        from mia_hf.loading import make_tokenizer as hf_tokenizer

        return hf_tokenizer(embedded)
    return GGUFTokenizer(name, files.gguf_path(name))


def make_backend(name: str, options: dict[str, Any] | None = None) -> Any:
    """An ``LlamaCppLM``; ``options``: the typed values of ``mia_llamacpp.OPTIONS`` (absent: defaults)."""
    from mia_llamacpp.backend import LlamaCppLM

    options = dict(options or {})
    threads = _positive(options, "threads", default_threads())
    n_ctx = _positive(options, "n_ctx", DEFAULT_N_CTX, MIN_N_CTX)
    n_batch = _positive(options, "n_batch", DEFAULT_N_BATCH)
    path = files.gguf_path(name)
    model = Model(path)
    embedded = files.embedded_name(name)
    tokenizer = make_tokenizer(name) if embedded is not None else GGUFTokenizer(name, path, model=model)
    return LlamaCppLM(name, model, tokenizer, n_ctx=n_ctx, n_batch=n_batch, threads=threads,
                      add_bos=options.get("add_bos"))
