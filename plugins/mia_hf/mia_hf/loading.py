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


def _set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise MiaError(f"option threads must be a positive integer, got {threads}")
    torch.set_num_threads(threads)


def make_tokenizer(name: str, options: dict[str, Any] | None = None) -> HFTokenizer | SentencePieceTokenizer:
    """The tokenizer of a model name (``gemma-3-270m``, ``hf:ID``, a folder, ...). The model's
    options (checked by the core against ``mia_hf.OPTIONS``) are irrelevant to it."""
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
            model = AutoModelForCausalLM.from_config(_dense_config(loaded.config), dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            del loaded
            advance()
            model.save_pretrained(str(tmp))
            advance()
            AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(tmp))
            advance()

    return sources.build_atomically(sources.gguf_cache_dir(name) / "model", build)


def _dense_config(config: Any) -> Any:
    """``config`` without the GGUF quantization entry a GGUF-loaded model carries: the cached folder
    holds dense weights, and with the entry transformers attaches its GGUF quantizer to the load
    (which warns, wrongly, that a bfloat16 load casts packed weights at every matmul)."""
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    return config


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


def _replicated(name: str, options: dict[str, Any], device: Any, replicas: int) -> Any:
    """``replicas`` copies of the model on Ray: a GPU each on CUDA (Ray sets each actor's
    ``CUDA_VISIBLE_DEVICES``, so each sees its GPU as ``cuda``), this machine's cores shared out on CPU."""
    from mia_core import data_parallel

    if device.type == "cuda":
        if device.index is not None:
            raise MiaError(f"device={options['device']} names one GPU, but data_parallel_size={replicas} gives "
                           f"each replica a GPU of its own: use device=cuda")
        placements = [data_parallel.Placement(num_cpus=1, num_gpus=1) for _ in range(replicas)]
        options = {**options, "device": "cuda"}
    elif device.type == "cpu":
        placements = data_parallel.cpu_placements(replicas, options.get("threads"))
        options = {**options, "device": "cpu", "threads": int(placements[0].num_cpus)}
    else:
        raise MiaError(f"data_parallel_size runs replicas on CUDA GPUs or CPU cores, not on {device.type}")
    tokenizer = load_tokenizer(sources.resolve(name))
    return data_parallel.replicate(name, options, tokenizer=tokenizer, placements=placements)


def load_model(source: sources.Source, device: Any, dtype: Any) -> Any:
    """The transformers model of ``source`` on ``device`` in ``dtype``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if device.type != "cpu":
        kwargs["device_map"] = {"": str(device)}
    if source.kind == "gguf":
        location: str = str(gguf_model_dir(source.name))
        kwargs["config"] = _dense_config(AutoConfig.from_pretrained(location))
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
    """An ``HFCausalLM`` for a model name; ``options``: the typed values of ``mia_hf.OPTIONS``
    (``device``, ``dtype``, ``add_bos``, ``threads``, ``data_parallel_size``; absent or None: auto).
    ``data_parallel_size`` > 1: that many ``HFCausalLM`` replicas on Ray (``mia_core.data_parallel``)."""
    from mia_core.data_parallel import replica_count
    from mia_hf.backend import HFCausalLM, resolve_device, resolve_dtype

    options = dict(options or {})
    replicas = replica_count(options)
    device = resolve_device(options.get("device"))
    if replicas > 1:
        return _replicated(name, options, device, replicas)
    dtype = resolve_dtype(options.get("dtype"), device)
    add_bos = options.get("add_bos")
    if options.get("threads") is not None:
        _set_threads(options["threads"])
    source = sources.resolve(name)
    tokenizer = load_tokenizer(source)
    model = load_model(source, device, dtype)
    return HFCausalLM(name, model, tokenizer, source=source.describe(), add_bos=add_bos)
