"""Factories the registry calls: ``make_tokenizer(name, options)`` and ``make_backend(name, options)``.

A GGUF model's weights are dequantized once into ``$MIA_CACHE/hf/<name>-<version>/model``
(safetensors + config + tokenizer); later loads read that folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.progress import note, stages
from mia_hf import sources
from mia_hf.tokenizer import HFTokenizer, SentencePieceTokenizer, gguf_tokenizer_dir, load_tokenizer

TOKENIZER_OPTIONS: dict[str, str] = {}
BACKEND_OPTIONS = {
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps",
    "dtype": "auto (bfloat16 on CUDA/MPS, float32 on CPU), float32, bfloat16, float16",
    "add_bos": "auto (when the tokenizer adds BOS), true, false",
    "threads": "CPU threads for torch (default: torch's choice, one per core)",
}


def _check_options(name: str, options: dict[str, Any], known: dict[str, str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(f"{k} ({v})" for k, v in known.items()) or "none"
        raise MiaError(f"unknown option(s) {', '.join(unknown)} for model {name!r}; allowed: {allowed}")


def _parse_bool(value: Any, key: str) -> bool | None:
    if value is None or str(value).lower() in ("", "auto"):
        return None
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise MiaError(f"option {key} must be auto, true or false, got {value!r}")


def _set_threads(value: Any) -> None:
    import torch

    try:
        threads = int(value)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1:
        raise MiaError(f"option threads must be a positive integer, got {value!r}")
    torch.set_num_threads(threads)


def make_tokenizer(name: str, options: dict[str, Any] | None = None) -> HFTokenizer | SentencePieceTokenizer:
    """The tokenizer of a model name (``gemma-3-270m``, ``hf:ID``, a folder, ...)."""
    options = dict(options or {})
    # The model's options may be passed along to its tokenizer: accepted, and irrelevant here.
    _check_options(name, options, {**TOKENIZER_OPTIONS, **BACKEND_OPTIONS})
    return load_tokenizer(sources.resolve(name))


def gguf_model_dir(name: str) -> Path:
    """The cached safetensors folder of a GGUF model, dequantizing the GGUF once if needed."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok_dir = gguf_tokenizer_dir(name)
        gguf = sources.gguf_file(name)
        _notice(f"dequantizing {name}'s GGUF weights once (a minute or two); cached in {tmp.parent}")
        with stages(["reading GGUF", "rebuilding", "saving weights", "saving tokenizer"],
                    f"converting {name}") as advance:
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32)
            advance()
            # A GGUF-loaded model refuses save_pretrained: rebuild it from its config.
            model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            del loaded
            advance()
            model.save_pretrained(str(tmp))
            advance()
            AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(tmp))
            advance()

    return sources.build_atomically(sources.gguf_cache_dir(name) / "model", build)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar for a load of seconds: mia draws its own progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _notice(message: str) -> None:
    note(f"mia: {message}")


def load_model(source: sources.Source, device: Any, dtype: Any) -> Any:
    """The transformers model of ``source`` on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if device.type != "cpu":
        kwargs["device_map"] = {"": str(device)}
    if source.kind == "gguf":
        location: str = str(gguf_model_dir(source.name))
    elif source.kind == "hub":
        location = source.location
        kwargs["local_files_only"] = sources.local_files_only()
    else:
        location = source.location
    try:
        with _quiet_loading(), stages(["reading weights", f"to {device}"], f"loading {source.name}") as advance:
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
            advance()
            if device.type == "cpu":
                model = model.to(device)
            advance()
    except OSError as exc:
        if source.kind == "hub":
            raise MiaError(sources.offline_message(source.location)) from exc
        raise MiaError(f"cannot load a causal LM from {location}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:  # e.g. a config of an architecture that is not a causal LM
        raise MiaError(f"cannot load {source.name!r} as a causal LM: {str(exc).splitlines()[0]}") from exc
    return model.eval()


def make_backend(name: str, options: dict[str, Any] | None = None) -> Any:
    """An ``HFCausalLM`` for a model name; options ``device``, ``dtype``, ``add_bos``, ``threads``."""
    from mia_hf.backend import HFCausalLM, resolve_device, resolve_dtype

    options = dict(options or {})
    _check_options(name, options, BACKEND_OPTIONS)
    device = resolve_device(options.get("device"))
    dtype = resolve_dtype(options.get("dtype"), device)
    add_bos = _parse_bool(options.get("add_bos"), "add_bos")
    if options.get("threads") not in (None, "", "auto"):
        _set_threads(options["threads"])
    source = sources.resolve(name)
    tokenizer = load_tokenizer(source)
    model = load_model(source, device, dtype)
    return HFCausalLM(name, model, tokenizer, source=source.describe(), add_bos=add_bos)
