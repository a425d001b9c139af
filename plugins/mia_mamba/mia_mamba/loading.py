"""Load a Mamba checkpoint folder (either layout) into the model class of an execution path.

- torch path: transformers' ``MambaForCausalLM``; a mamba_ssm-layout checkpoint is converted
  in memory (config and keys, see ``mia_mamba.layout``).
- cuda path: mamba-ssm's ``MambaLMHeadModel``; an hf-layout checkpoint is converted back.

Models are built on the meta device and the checkpoint tensors assigned to them, so a 2.8B
checkpoint is not allocated twice (random init + weights).
"""

from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_mamba.layout import HF, MAMBA_SSM, convert_state_dict, hf_to_ssm_config, ssm_to_hf_config, weight_file


def load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a weights file or of a sharded checkpoint's index (safetensors or torch)."""
    import torch

    if path.name.endswith(".index.json"):
        import json

        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        merged: dict[str, Any] = {}
        for shard in shards:
            merged.update(load_state_dict(path.parent / shard))
        return merged
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # corrupt or not a torch file
        raise MiaError(f"cannot read the weights in {path}: {type(exc).__name__}: {exc}") from exc


def _check_keys(label: str, missing: list[str], unexpected: list[str], tied: bool) -> None:
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise MiaError(f"{label}: the weights do not match the config ({'; '.join(parts)})")


def load_transformers(folder: Path, layout: str, config: dict[str, Any], dtype: Any, device: str,
                      label: str) -> Any:
    """A ``MambaForCausalLM`` in eval mode on ``device`` with ``dtype``."""
    import logging

    import torch
    from transformers import MambaConfig, MambaForCausalLM

    if not str(device).startswith("cuda"):
        # "install mamba_ssm for the optimized kernel" is no advice on a CPU: mamba-ssm is CUDA only.
        logging.getLogger("transformers.integrations.hub_kernels").setLevel(logging.ERROR)

    if layout == MAMBA_SSM:
        hf_config = MambaConfig(**ssm_to_hf_config(config))
    else:
        hf_config = MambaConfig.from_pretrained(str(folder))
    state = load_state_dict(weight_file(folder, layout, label))
    if layout == MAMBA_SSM:
        state = convert_state_dict(state, HF)
    with torch.device("meta"):
        model = MambaForCausalLM(hf_config)
    result = model.load_state_dict(state, strict=False, assign=True)
    _check_keys(label, result.missing_keys, result.unexpected_keys, hf_config.tie_word_embeddings)
    if hf_config.tie_word_embeddings:
        model.lm_head.weight = model.backbone.embeddings.weight
    elif "lm_head.weight" not in state:
        raise MiaError(f"{label}: untied embeddings but no lm_head.weight in the checkpoint")
    return model.to(device=device, dtype=dtype).eval()


def load_mamba_ssm(folder: Path, layout: str, config: dict[str, Any], dtype: Any, device: str,
                   label: str) -> Any:
    """mamba-ssm's ``MambaLMHeadModel`` in eval mode on a CUDA ``device`` with ``dtype``."""
    import dataclasses

    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    ssm = dict(config) if layout == MAMBA_SSM else hf_to_ssm_config(config)
    fields = {f.name for f in dataclasses.fields(SsmConfig)}
    ssm_config = SsmConfig(**{k: v for k, v in ssm.items() if k in fields})
    state = load_state_dict(weight_file(folder, layout, label))
    if layout == HF:
        state = convert_state_dict(state, MAMBA_SSM)
    model = MambaLMHeadModel(ssm_config, device=device, dtype=dtype)
    tied = bool(ssm.get("tie_embeddings", True))
    result = model.load_state_dict(state, strict=False)
    _check_keys(label, result.missing_keys, result.unexpected_keys, tied)
    if tied:
        model.tie_weights()
    return model.eval()
