"""The Mamba backend: mia-hf's ``HFCausalLM`` with Mamba's differences, on two execution paths.

- torch path (``MambaBackend``): transformers' ``MambaForCausalLM`` is an ordinary HF causal
  LM, so generation, scoring, EOS handling and out-of-memory reporting are ``HFCausalLM``'s.
- cuda path (``MambaSsmBackend``): mamba-ssm's ``MambaLMHeadModel``, wrapped so that
  ``HFCausalLM``'s scoring sees the usual body/head split, and generating with mamba-ssm's
  own decoder and CUDA graphs (``cg=True``).

Differences from a generic HF model: no BOS (Mamba models were trained without one, and
the gpt-neox tokenizer adds none; ``bos=true`` forces it), and ids beyond the tokenizer's
vocabulary — mamba_ssm pads the embedding to a multiple of 8 — are never generated nor
counted in the scores' distributions (their logits are pushed to -1e4).
"""

from collections.abc import Sequence
from typing import Any

import torch
from mia_hf.backend import HFCausalLM

from mia_core.errors import MiaError
from mia_core.types import Sampling

# Low enough that exp() underflows to exactly 0 in float32, small enough that squaring it
# (variance of log p in the scores) stays finite.
MASKED_LOGIT = -1e4


def _mask_padded_vocab(head: torch.nn.Module, vocab: int) -> None:
    """Make the LM head's logits beyond ``vocab`` (padding rows) unreachable."""

    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output[..., vocab:] = MASKED_LOGIT
        return output

    head.register_forward_hook(hook)


class MambaBackend(HFCausalLM):
    """A Mamba model on the torch path (transformers' ``MambaForCausalLM``)."""

    kernel = "torch"

    def __init__(self, name: str, model: Any, tokenizer: Any, *, info: dict[str, Any], bos: bool = False) -> None:
        super().__init__(name, model, tokenizer, source=str(info.get("checkpoint", "")), add_bos=bos)
        self.info = info
        head = self._lm_head()
        self.model_vocab = int(head.weight.shape[0])
        self.vocab = min(int(tokenizer.vocab_size), self.model_vocab)
        if self.vocab < self.model_vocab:
            _mask_padded_vocab(head, self.vocab)

    def _lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kernel": self.kernel, "vocab_used": self.vocab, **self.info}

    def _check_ids(self, rows: Sequence[Sequence[int]]) -> None:
        for row in rows:
            if len(row) and (min(row) < 0 or max(row) >= self.model_vocab):
                raise MiaError(f"{self.name}: token ids must lie in 0..{self.model_vocab - 1}, got {list(row)[:8]}")

    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[int]]:
        self._check_ids(prefixes)
        return super().generate(prefixes, max_new_tokens, sampling)

    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True, sampling: Sampling | None = None) -> list:
        """``HFCausalLM.score``; ``sampling`` (non-greedy) also gives ``sampled_logprob`` for probabilistic
        extraction. The padded ids' logits are masked before it is computed, as in generation."""
        self._check_ids(sequences)
        return super().score(sequences, start, distribution=distribution, sampling=sampling)


class _SsmBody(torch.nn.Module):
    """mamba-ssm's backbone with the call signature HFCausalLM uses for ``base_model``."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, **_: Any) -> tuple[torch.Tensor]:
        return (self.backbone(input_ids),)


class SsmModel(torch.nn.Module):
    """A ``MambaLMHeadModel`` dressed as a transformers causal LM for ``HFCausalLM``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.body = _SsmBody(model.backbone)
        self.config = model.config

    @property
    def base_model(self) -> torch.nn.Module:
        return self.body

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.lm_head

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        return self.inner(input_ids)


class MambaSsmBackend(MambaBackend):
    """A Mamba model on the cuda path (mamba-ssm kernels, CUDA-graph decoding)."""

    kernel = "cuda"

    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[int]]:
        """New tokens for each prefix, cut before EOS. mamba-ssm's decoder takes equal-length
        inputs only, so prefixes are grouped by length (a map's prefixes all have one length)."""
        sampling = sampling or Sampling()
        if not prefixes:
            return []
        if max_new_tokens <= 0:
            raise MiaError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self._check_ids(prefixes)
        rows = [self._with_bos(p) for p in prefixes]
        if any(not r for r in rows):
            raise MiaError(f"{self.name} cannot generate from an empty prefix (it uses no BOS token)")
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(len(row), []).append(i)
        if not sampling.greedy and sampling.seed is not None:
            torch.manual_seed(int(sampling.seed))
        out: list[list[int]] = [[] for _ in rows]
        with self._oom_guard(len(rows)), torch.inference_mode():
            for length, members in groups.items():
                ids = torch.tensor([rows[i] for i in members], dtype=torch.long, device=self.device)
                seqs = self.model.inner.generate(
                    ids, max_length=length + max_new_tokens,
                    top_k=1 if sampling.greedy else int(sampling.top_k or 0),
                    top_p=0.0 if sampling.greedy or sampling.top_p is None else float(sampling.top_p),
                    temperature=1.0 if sampling.greedy else float(sampling.temperature),
                    eos_token_id=self.eos_id, vocab_size=self.vocab, cg=True,
                )
                for i, new in zip(members, seqs[:, length:].tolist(), strict=True):
                    out[i] = new[: new.index(self.eos_id)] if self.eos_id in new else new
        return out
