"""Factories the registry calls: ``make_tokenizer(name, options)`` and ``make_backend(name, options)``.

Options (``--model-option KEY=VALUE``): declared in ``mia_mamba.BACKEND_OPTIONS``, checked and
typed by the core before a factory runs (``mia models --options mamba-3b`` prints them):
``kernel``, ``device``, ``dtype``, ``tokenizer``, ``bos``.
"""

from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_mamba.layout import detect_layout, weight_file
from mia_mamba.names import DEFAULT_TOKENIZER, checkpoint_ref, resolve_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _tokenizer_folder(name: str, checkpoint: Path | None, override: str | None) -> tuple[str, Path]:
    """``(label, folder)`` of the tokenizer to load for a model."""
    if override:
        return override, resolve_folder(override, what="tokenizer")
    if checkpoint is not None and any((checkpoint / f).is_file() for f in TOKENIZER_FILES):
        return str(checkpoint), checkpoint
    return DEFAULT_TOKENIZER, resolve_folder(DEFAULT_TOKENIZER, what=f"tokenizer of {name} ({DEFAULT_TOKENIZER})")


def load_tokenizer(name: str, checkpoint: Path | None, override: str | None = None) -> Any:
    """mia-hf's tokenizer wrapper around the checkpoint's tokenizer (or the gpt-neox default)."""
    from mia_hf.tokenizer import HFTokenizer
    from transformers import AutoTokenizer

    label, folder = _tokenizer_folder(name, checkpoint, override)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise MiaError(f"{name}: no usable tokenizer in {folder}: {str(exc).splitlines()[0]}") from exc
    return HFTokenizer(name, tok, f"mamba:{label}")


def _checkpoint_or_none(name: str) -> Path | None:
    """The checkpoint folder if it is available (the tokenizer does not need the weights)."""
    ref = checkpoint_ref(name)
    try:
        return resolve_folder(ref, local_only=True)
    except MiaError:
        if Path(ref).expanduser().is_absolute() or ref.startswith((".", "~")) or ref.count("/") != 1:
            raise  # a folder that is not there: say so, not "the default tokenizer is missing"
        return None


def make_tokenizer(name: str, options: dict[str, Any]) -> Any:
    return load_tokenizer(name, _checkpoint_or_none(name), options.get("tokenizer"))


def make_backend(name: str, options: dict[str, Any]) -> Any:
    """Resolve the checkpoint, pick the kernel, load the model, wrap it in a Mamba backend."""
    from mia_hf.backend import resolve_device, resolve_dtype

    from mia_mamba.backend import MambaBackend, MambaSsmBackend, SsmModel
    from mia_mamba.kernel import select_kernel
    from mia_mamba.loading import load_mamba_ssm, load_transformers

    bos = bool(options.get("bos", False))
    kernel = select_kernel(options.get("kernel", "auto"), options.get("device"))
    device = resolve_device(options.get("device") or ("cuda" if kernel == "cuda" else None))
    dtype = resolve_dtype(options.get("dtype"), device)
    ref = checkpoint_ref(name)
    folder = resolve_folder(ref)
    layout, config = detect_layout(folder, label=name)
    weight_file(folder, layout, name)  # fail on missing weights before loading anything
    tokenizer = load_tokenizer(name, folder, options.get("tokenizer"))
    info = {"checkpoint": ref, "checkpoint_folder": str(folder), "layout": layout,
            "tokenizer_source": getattr(tokenizer, "source", "")}
    if kernel == "cuda":
        model = SsmModel(load_mamba_ssm(folder, layout, config, dtype, str(device), name))
        return MambaSsmBackend(name, model, tokenizer, info=info, bos=bos)
    model = load_transformers(folder, layout, config, dtype, str(device), name)
    return MambaBackend(name, model, tokenizer, info=info, bos=bos)
