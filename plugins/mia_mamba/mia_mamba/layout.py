"""Checkpoint layouts of Mamba (Mamba-1) models, and conversion between them.

Two layouts exist in the wild:

- ``mamba_ssm``: what the ``state-spaces/mamba-*`` repositories ship (``mamba-2.8b-slimpj``):
  a ``config.json`` with ``d_model``, ``n_layer``, ``vocab_size``, ``ssm_cfg``, ``rms_norm``,
  ``residual_in_fp32``, ``pad_vocab_size_multiple``... and a ``pytorch_model.bin`` whose keys
  are ``backbone.embedding.weight``, ``backbone.layers.N.{norm,mixer.*}``, ``backbone.norm_f``
  and ``lm_head.weight``.
- ``hf``: transformers' ``MambaForCausalLM`` (``model_type: mamba``, ``hidden_size``,
  ``num_hidden_layers``...; ``backbone.embeddings.weight``, otherwise the same keys).

The conversion (as in transformers' ``convert_mamba_ssm_checkpoint_to_pytorch.py``, extended
to every ``ssm_cfg`` field) is done in memory, both ways: mamba_ssm → hf for the transformers
path on CPU, hf → mamba_ssm for the mamba-ssm CUDA path. This module is pure Python (no torch).
"""

import json
import math
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError

MAMBA_SSM = "mamba_ssm"
HF = "hf"

# Weight files each layout may ship, in order of preference.
WEIGHT_FILES = {
    MAMBA_SSM: ("model.safetensors", "pytorch_model.bin"),
    HF: ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"),
}


def read_config(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict, or None when it has none (or it is not JSON)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def config_layout(config: dict[str, Any]) -> str | None:
    """``mamba_ssm``, ``hf``, or None when the config does not describe a Mamba model."""
    if config.get("model_type") == "mamba" or "MambaForCausalLM" in (config.get("architectures") or []):
        return HF
    if "d_model" in config and "n_layer" in config and "model_type" not in config:
        return MAMBA_SSM
    return None


def looks_like_mamba(config: dict[str, Any]) -> bool:
    """Whether a config claims to be a Mamba model in either layout (Mamba-2 included, so
    that it gets our clear "not supported" error rather than another plugin's)."""
    if config_layout(config) is not None:
        return True
    return "d_model" in config and "n_layer" in config and "ssm_cfg" in config


def detect_layout(folder: str | Path, label: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(layout, config)`` of a checkpoint folder, or a clear error naming what is wrong."""
    label = label or str(folder)
    config = read_config(folder)
    if config is None:
        raise MiaError(f"{label}: no readable config.json in {folder}, so it is not a Mamba checkpoint folder")
    layout = config_layout(config)
    if layout is None:
        found = config.get("model_type") or ", ".join(sorted(config)[:8])
        raise MiaError(
            f"{label}: unknown checkpoint layout in {folder}/config.json ({found}); expected a Mamba config, "
            "either transformers' (model_type: mamba) or mamba_ssm's (d_model, n_layer, vocab_size, ssm_cfg)"
        )
    if layout == MAMBA_SSM:
        _check_supported_ssm(config, label)
    return layout, config


def weight_file(folder: str | Path, layout: str, label: str | None = None) -> Path:
    """The weights file of a checkpoint folder (the first one present, by preference)."""
    for name in WEIGHT_FILES[layout]:
        path = Path(folder) / name
        if path.is_file():
            return path
    expected = " or ".join(WEIGHT_FILES[layout])
    raise MiaError(f"{label or folder}: no weights in {folder} (expected {expected} for the {layout} layout)")


def _check_supported_ssm(config: dict[str, Any], label: str) -> None:
    ssm_cfg = config.get("ssm_cfg") or {}
    layer = ssm_cfg.get("layer", "Mamba1")
    if layer != "Mamba1":
        raise MiaError(f"{label}: {layer} checkpoints are not supported by mia-mamba (Mamba-1 only)")
    if config.get("attn_layer_idx"):
        raise MiaError(f"{label}: hybrid Mamba/attention checkpoints (attn_layer_idx) are not supported")
    if config.get("d_intermediate", 0):
        raise MiaError(f"{label}: checkpoints with MLP blocks (d_intermediate > 0) are not supported")
    if not config.get("rms_norm", True):
        raise MiaError(f"{label}: checkpoints with LayerNorm (rms_norm: false) are not supported")


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """mamba_ssm rounds the embedding rows up to a multiple of ``pad_vocab_size_multiple``."""
    if multiple <= 1 or vocab_size % multiple == 0:
        return vocab_size
    return vocab_size + multiple - vocab_size % multiple


def ssm_to_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """A mamba_ssm ``config.json`` as keyword arguments of transformers' ``MambaConfig``."""
    ssm_cfg = config.get("ssm_cfg") or {}
    d_model = int(config["d_model"])
    dt_rank = ssm_cfg.get("dt_rank", "auto")
    hf: dict[str, Any] = {
        "vocab_size": padded_vocab_size(int(config["vocab_size"]), int(config.get("pad_vocab_size_multiple", 8))),
        "hidden_size": d_model,
        "num_hidden_layers": int(config["n_layer"]),
        "state_size": int(ssm_cfg.get("d_state", 16)),
        "conv_kernel": int(ssm_cfg.get("d_conv", 4)),
        "expand": int(ssm_cfg.get("expand", 2)),
        "time_step_rank": math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank),
        "use_bias": bool(ssm_cfg.get("bias", False)),
        "use_conv_bias": bool(ssm_cfg.get("conv_bias", True)),
        "residual_in_fp32": bool(config.get("residual_in_fp32", True)),
        "layer_norm_epsilon": float(config.get("norm_epsilon", 1e-5)),
        "tie_word_embeddings": bool(config.get("tie_embeddings", True)),
    }
    # Initialisation-only fields: irrelevant for inference but kept for a faithful config.
    for ssm_key, hf_key in (("dt_min", "time_step_min"), ("dt_max", "time_step_max"),
                            ("dt_scale", "time_step_scale"), ("dt_init_floor", "time_step_floor")):
        if ssm_key in ssm_cfg:
            hf[hf_key] = float(ssm_cfg[ssm_key])
    return hf


def hf_to_ssm_config(config: dict[str, Any]) -> dict[str, Any]:
    """A transformers Mamba ``config.json`` as a mamba_ssm ``MambaConfig`` dict.

    The vocabulary is already padded in the hf layout, so no further padding is asked for.
    ``ssm_cfg`` holds only keys every mamba_ssm release's ``Mamba`` accepts.
    """
    hidden = int(config.get("hidden_size", 768))
    rank = config.get("time_step_rank", "auto")
    return {
        "d_model": hidden,
        "n_layer": int(config.get("num_hidden_layers", 32)),
        "vocab_size": int(config.get("vocab_size", 50280)),
        "ssm_cfg": {
            "d_state": int(config.get("state_size", 16)),
            "d_conv": int(config.get("conv_kernel", 4)),
            "expand": int(config.get("expand", 2)),
            "dt_rank": math.ceil(hidden / 16) if rank == "auto" else int(rank),
            "conv_bias": bool(config.get("use_conv_bias", True)),
            "bias": bool(config.get("use_bias", False)),
        },
        "rms_norm": True,
        "residual_in_fp32": bool(config.get("residual_in_fp32", True)),
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
    }


def ssm_to_hf_key(key: str) -> str:
    """mamba_ssm state-dict key → transformers key (only the embedding differs)."""
    if key.startswith("backbone.embedding."):
        return "backbone.embeddings." + key[len("backbone.embedding."):]
    return key


def hf_to_ssm_key(key: str) -> str:
    """transformers state-dict key → mamba_ssm key."""
    if key.startswith("backbone.embeddings."):
        return "backbone.embedding." + key[len("backbone.embeddings."):]
    return key


def convert_state_dict(state_dict: dict[str, Any], to: str) -> dict[str, Any]:
    """Rename the keys of a state dict into layout ``to`` (tensors are not copied)."""
    rename = ssm_to_hf_key if to == HF else hf_to_ssm_key
    return {rename(k): v for k, v in state_dict.items()}
