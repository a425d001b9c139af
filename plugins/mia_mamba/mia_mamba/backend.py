"""The Mamba backend: one class, two execution paths (see ``mia_mamba.kernel``).

Both model classes expose ``.backbone`` (token ids → final hidden states) and ``.lm_head``,
so scoring is shared; generation uses ``transformers``' ``generate`` on the torch path and
mamba-ssm's ``generate`` with CUDA graphs (``cg=True``) on the cuda path.

Mamba models take no BOS: prefixes are fed as they are (``bos=true`` prepends the
tokenizer's BOS anyway). Scoring a sequence from position 0 conditions its first token on
the tokenizer's EOS, the document separator these models were trained with.
Token ids beyond the tokenizer's vocabulary (mamba_ssm pads the embedding to a multiple
of 8) are never generated, and scores are normalised over the tokenizer's vocabulary.
"""

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mia_core.errors import BackendOutOfMemory, MiaError
from mia_core.types import Sampling, Tokenizer, TokenScores


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class MambaBackend:
    """Generation and teacher-forced scoring with a loaded Mamba model (either path)."""

    capabilities = frozenset({"generate", "score"})

    def __init__(self, name: str, model: Any, tokenizer: Tokenizer, *, kernel: str, device: str,
                 dtype: torch.dtype, source: dict[str, Any], bos: bool = False) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.kernel = kernel  # "torch" (transformers) or "cuda" (mamba-ssm)
        self.device = device
        self.dtype = dtype
        self.source = source
        self.prepend_bos = bool(bos and tokenizer.bos_id is not None)
        self.model_vocab = int(model.lm_head.weight.shape[0])
        self.vocab = min(int(tokenizer.vocab_size), self.model_vocab)

    # -- provenance ---------------------------------------------------------------------
    @property
    def bos_prepended(self) -> bool:
        return self.prepend_bos

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "mia-mamba",
            "name": self.name,
            "kernel": self.kernel,
            "model_class": type(self.model).__name__,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "bos_prepended": self.prepend_bos,
            "vocab_size": self.vocab,
            **self.source,
        }

    # -- helpers ------------------------------------------------------------------------
    def _with_bos(self, ids: Sequence[int]) -> list[int]:
        return ([self.tokenizer.bos_id] if self.prepend_bos else []) + [int(t) for t in ids]

    def _check_ids(self, seqs: Sequence[Sequence[int]]) -> None:
        for seq in seqs:
            if len(seq) and (min(seq) < 0 or max(seq) >= self.model_vocab):
                raise MiaError(f"{self.name}: token id out of range 0..{self.model_vocab - 1} in {list(seq)[:8]}...")

    @staticmethod
    def _by_length(seqs: Sequence[Sequence[int]]) -> dict[int, list[int]]:
        """Row indices grouped by sequence length: Mamba's recurrence needs no padding then."""
        groups: dict[int, list[int]] = {}
        for i, seq in enumerate(seqs):
            groups.setdefault(len(seq), []).append(i)
        return groups

    def _cut_after_eos(self, row: list[int]) -> list[int]:
        eos = self.tokenizer.eos_id
        if eos is not None and eos in row:
            return row[: row.index(eos) + 1]
        return row

    # -- generation ---------------------------------------------------------------------
    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling) -> list[list[int]]:
        """New tokens for each prefix (up to ``max_new_tokens``, cut after EOS)."""
        if max_new_tokens <= 0:
            return [[] for _ in prefixes]
        self._check_ids(prefixes)
        inputs = [self._with_bos(p) for p in prefixes]
        if any(len(p) == 0 for p in inputs):
            raise MiaError(f"{self.name}: cannot generate from an empty prefix (Mamba takes no BOS)")
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out: list[list[int]] = [[] for _ in prefixes]
        try:
            for _length, rows in self._by_length(inputs).items():
                ids = torch.tensor([inputs[i] for i in rows], dtype=torch.long, device=self.device)
                new = self._generate_batch(ids, max_new_tokens, sampling)
                for i, seq in zip(rows, new.tolist(), strict=True):
                    out[i] = self._cut_after_eos(seq)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if _is_oom(exc):
                raise BackendOutOfMemory(f"{self.name}: out of memory at batch size {len(prefixes)}") from exc
            raise
        return out

    @torch.inference_mode()
    def _generate_batch(self, ids: torch.Tensor, max_new_tokens: int, sampling: Sampling) -> torch.Tensor:
        """``[B, max_new_tokens]`` new token ids for equal-length inputs ``ids``."""
        length = ids.shape[1]
        if self.kernel == "cuda":
            top_k = 1 if sampling.greedy else (sampling.top_k or 0)
            seqs = self.model.generate(
                ids, max_length=length + max_new_tokens, top_k=top_k, top_p=sampling.top_p or 0.0,
                temperature=sampling.temperature if not sampling.greedy else 1.0,
                eos_token_id=self.tokenizer.eos_id, vocab_size=self.vocab, cg=True,
            )
            new = seqs[:, length:]
            if new.shape[1] < max_new_tokens:  # every row hit EOS early: pad past the cut point
                fill = torch.full((ids.shape[0], max_new_tokens - new.shape[1]), self.tokenizer.eos_id or 0,
                                  dtype=new.dtype, device=new.device)
                new = torch.cat([new, fill], dim=1)
            return new
        kwargs: dict[str, Any] = {"do_sample": not sampling.greedy}
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_k=sampling.top_k or 0,
                          top_p=sampling.top_p if sampling.top_p is not None else 1.0)
        if self.vocab < self.model_vocab:
            kwargs["suppress_tokens"] = list(range(self.vocab, self.model_vocab))
        eos = self.tokenizer.eos_id
        seqs = self.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, min_new_tokens=0,
            eos_token_id=eos, pad_token_id=eos if eos is not None else 0, **kwargs,
        )
        new = seqs[:, length:]
        if new.shape[1] < max_new_tokens:
            fill = torch.full((ids.shape[0], max_new_tokens - new.shape[1]), eos if eos is not None else 0,
                              dtype=new.dtype, device=new.device)
            new = torch.cat([new, fill], dim=1)
        return new

    # -- scoring ------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0) -> list[TokenScores]:
        """Teacher-forced scores of each sequence from position ``start`` (see TokenScores)."""
        starts = [int(start)] * len(sequences) if isinstance(start, int) else [int(s) for s in start]
        if len(starts) != len(sequences):
            raise MiaError(f"{self.name}: {len(starts)} start positions for {len(sequences)} sequences")
        self._check_ids(sequences)
        # Position 0 needs a context token: BOS when prepended, else EOS (the document separator).
        lead = self.tokenizer.bos_id if self.prepend_bos else self.tokenizer.eos_id
        if lead is None and any(s == 0 for s in starts):
            raise MiaError(f"{self.name}: cannot score position 0 without a BOS or EOS token")
        out: list[TokenScores | None] = [None] * len(sequences)
        inputs = [([lead] + [int(t) for t in seq]) if lead is not None else [int(t) for t in seq]
                  for seq in sequences]
        offset = 1 if lead is not None else 0
        try:
            for _length, rows in self._by_length(inputs).items():
                self._score_group(inputs, rows, [starts[i] + offset for i in rows], out)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if _is_oom(exc):
                raise BackendOutOfMemory(f"{self.name}: out of memory at batch size {len(sequences)}") from exc
            raise
        return [s for s in out if s is not None]

    @torch.inference_mode()
    def _score_group(self, inputs: list[list[int]], rows: list[int], starts: list[int],
                     out: list[TokenScores | None]) -> None:
        length = len(inputs[rows[0]])
        for s in starts:
            if not 1 <= s <= length:
                raise MiaError(f"{self.name}: start {s - 1} outside a sequence of {length - 1} tokens")
        first = min(starts)
        ids = torch.tensor([inputs[i] for i in rows], dtype=torch.long, device=self.device)
        hidden = self.model.backbone(ids)
        hidden = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden
        # Only positions first-1 .. length-2 predict scored tokens: the LM head runs on those alone.
        logits = self.model.lm_head(hidden[:, first - 1: length - 1].to(self.model.lm_head.weight.dtype))
        logp = torch.log_softmax(logits[..., : self.vocab].float(), dim=-1)
        targets = ids[:, first:]
        token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        probs = logp.exp()
        mean = (probs * logp).sum(-1)
        std = (probs * (logp - mean.unsqueeze(-1)) ** 2).sum(-1).clamp_min(0).sqrt()
        argmax = logp.argmax(-1)
        arrays = [t.cpu().numpy() for t in (token_lp, argmax, mean, std)]
        for j, (i, s) in enumerate(zip(rows, starts, strict=True)):
            k = s - first
            out[i] = TokenScores(logprob=arrays[0][j, k:].astype(np.float32), argmax=arrays[1][j, k:].astype(np.int64),
                                 mean=arrays[2][j, k:].astype(np.float32), std=arrays[3][j, k:].astype(np.float32))


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """``(fn(*args), seconds)``, synchronising CUDA so GPU timings are real."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - t0
