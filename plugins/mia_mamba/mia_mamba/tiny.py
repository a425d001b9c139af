"""Tiny randomly initialised Mamba checkpoints, in either layout, for tests and the GPU check.

The same seed gives the same weights in both layouts, so the two loading paths can be
compared output for output without downloading anything.
"""

from pathlib import Path
from typing import Any

from mia_mamba.layout import HF, MAMBA_SSM, convert_state_dict, padded_vocab_size


def make_tiny_mamba(path: str | Path, layout: str, tokenizer: Any | None = None, *, vocab_size: int | None = None,
                    seed: int = 0, hidden_size: int = 32, layers: int = 2, state_size: int = 8,
                    pad_vocab_size_multiple: int = 8, tie: bool = False) -> Path:
    """Write a tiny Mamba checkpoint to ``path`` in ``layout`` (``mamba_ssm`` or ``hf``).

    ``tokenizer`` (anything with ``save_pretrained``) is saved next to it when given, and
    sets the vocabulary size unless ``vocab_size`` does. Embeddings are untied by default:
    a tied random model greedily repeats its last input token, which tests nothing. The embedding is padded like
    mamba_ssm pads it, so both layouts hold identical tensors.
    """
    import json

    import torch
    from transformers import MambaConfig, MambaForCausalLM

    if layout not in (HF, MAMBA_SSM):
        raise ValueError(f"layout must be {HF!r} or {MAMBA_SSM!r}, not {layout!r}")
    vocab = vocab_size if vocab_size is not None else len(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = MambaConfig(
        vocab_size=padded_vocab_size(vocab, pad_vocab_size_multiple), hidden_size=hidden_size,
        num_hidden_layers=layers, state_size=state_size, conv_kernel=4, expand=2,
        tie_word_embeddings=tie, eos_token_id=eos, bos_token_id=eos,
        pad_token_id=getattr(tokenizer, "pad_token_id", None) or eos,
    )
    torch.manual_seed(seed)
    model = MambaForCausalLM(config).eval()
    if layout == HF:
        model.save_pretrained(str(path))
    else:
        ssm_config = {
            "d_model": hidden_size, "n_layer": layers, "vocab_size": vocab,
            "ssm_cfg": {"d_state": state_size, "d_conv": 4, "expand": 2},
            "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": pad_vocab_size_multiple, "tie_embeddings": tie,
        }
        (path / "config.json").write_text(json.dumps(ssm_config, indent=2) + "\n", encoding="utf-8")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(convert_state_dict(state, MAMBA_SSM), str(path / "pytorch_model.bin"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path
