"""``HFCausalLM``: generation and teacher-forced scoring for a loaded causal LM.

Built from an already-loaded transformers model and a mia tokenizer wrapper, so other
plugins (Mamba) reuse it with their own loaders. Heavy imports (torch, transformers)
happen here, never at plugin registration.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mia_core.errors import BackendOutOfMemory, MiaError
from mia_core.types import Sampling, TokenScores

from .token_stats import token_stats

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}

# Log-softmax over a 262k vocabulary is the memory peak of scoring: the LM head runs over
# at most this many scalar logits (positions × vocab) at a time.
HEAD_CHUNK_ELEMENTS = 256 * 262_144


def resolve_device(option: str | None) -> torch.device:
    """``auto`` (or None) picks cuda, then mps, then cpu; anything else torch understands."""
    if option in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(str(option))
    except RuntimeError as exc:
        raise MiaError(f"unknown device {option!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MiaError(f"device {option!r} requested but CUDA is not available (torch {torch.__version__})")
    return device


def resolve_dtype(option: str | None, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (CUDA, MPS), float32 on CPU. Not float16: Gemma's
    activations overflow it."""
    if option in (None, "", "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    try:
        return DTYPES[str(option).lower()]
    except KeyError:
        raise MiaError(f"unknown dtype {option!r}: use auto, {', '.join(DTYPES)}") from None


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class HFCausalLM:
    """A transformers causal LM as a mia backend: a ``TokenGenerator`` and a ``Scorer``
    (capabilities ``generate`` and ``score``, see ``mia_core.types``).

    ``add_bos``: prepend BOS to every input (None: when the tokenizer adds one by default,
    as Gemma's and Llama's do). Replaces the model's generation defaults by a neutral
    config, so only the ``Sampling`` passed to ``generate`` decides how to decode.
    """

    def __init__(self, name: str, model: Any, tokenizer: Any, *, source: str = "",
                 add_bos: bool | None = None, max_context: int | None = None) -> None:
        from transformers import GenerationConfig

        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        first = next(model.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        adds = getattr(tokenizer, "adds_bos", False) if add_bos is None else add_bos
        self.bos_prepended: bool = bool(adds) and tokenizer.bos_id is not None
        self.eos_id: int | None = tokenizer.eos_id
        pad = getattr(tokenizer, "pad_id", None)
        self.pad_id: int = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        self.max_context: int | None = max_context or _max_context(model.config)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_id, eos_token_id=self.eos_id, pad_token_id=self.pad_id
        )
        self._head_ok: bool | None = None  # does the split body/head path reproduce forward()?
        # Set by the prompt loop: called as generation advances, with (rows, tokens) done since the
        # last call; rows are fractional (a row at step s of n counts s/n) so the bar moves every step.
        self.on_rows_done: Callable[[float, int], None] | None = None

    # --- description -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "source": self.source,
            "class": type(self.model).__name__,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "bos_prepended": self.bos_prepended,
            "max_context": self.max_context,
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "tokenizer": getattr(self.tokenizer, "name", None),
            "tokenizer_fingerprint": getattr(self.tokenizer, "fingerprint", None),
        }

    # --- helpers ---------------------------------------------------------------------------
    def _with_bos(self, ids: Sequence[int]) -> list[int]:
        row = [int(i) for i in ids]
        return [self.tokenizer.bos_id, *row] if self.bos_prepended else row

    def _check_ids(self, rows: Sequence[Sequence[int]]) -> None:
        """Token ids outside the embedding table would crash deep inside torch."""
        embeddings = self.model.get_input_embeddings()
        size = getattr(embeddings, "num_embeddings", None)
        for row in rows:
            if len(row) and (min(row) < 0 or (size is not None and max(row) >= size)):
                raise MiaError(f"{self.name}: token ids must lie in 0..{size - 1 if size else '?'}, "
                               f"got {[int(i) for i in row][:8]}... (a map made with another tokenizer?)")

    def _check_context(self, length: int, what: str) -> None:
        if self.max_context is not None and length > self.max_context:
            raise MiaError(f"{what} of {length} tokens exceeds {self.name}'s context of {self.max_context} tokens")

    @contextlib.contextmanager
    def _oom_guard(self, batch: int) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise BackendOutOfMemory(
                f"out of memory on {self.device} with a batch of {batch}: use a smaller batch size"
            ) from exc

    def _pad(self, rows: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if not row:
                continue
            sl = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, sl] = torch.tensor(row, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- generation ------------------------------------------------------------------------
    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[int]]:
        """New tokens for each prefix (left-padded when lengths differ), cut before EOS (the
        contract's EOS rule, ``mia_core.types.TokenGenerator``).

        With sampling, ``sampling.seed`` seeds torch at the start of this call: the same
        call on the same device gives the same tokens.
        """
        from transformers import GenerationConfig

        sampling = sampling or Sampling()
        if not prefixes:
            return []
        if max_new_tokens <= 0:
            raise MiaError(f"max_new_tokens must be positive, got {max_new_tokens}")
        rows = [self._with_bos(p) for p in prefixes]
        self._check_ids(rows)
        if any(not r for r in rows):
            raise MiaError(f"{self.name} cannot generate from an empty prefix (it uses no BOS token)")
        width = max(len(r) for r in rows)
        self._check_context(width + max_new_tokens, "prefix + max_new_tokens")
        ids, mask = self._pad(rows, left=True)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=not sampling.greedy,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_id,
        )
        if not sampling.greedy:
            config.temperature = float(sampling.temperature)
            config.top_k = int(sampling.top_k) if sampling.top_k else 0  # 0: no top-k filter
            config.top_p = float(sampling.top_p) if sampling.top_p is not None else 1.0
            if sampling.seed is not None:
                torch.manual_seed(int(sampling.seed))
        report = {} if self.on_rows_done is None else {
            "stopping_criteria": [_StepProgress(self.on_rows_done, len(rows), max_new_tokens, self.eos_id)]}
        with self._oom_guard(len(rows)), torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **report)
        new = out[:, width:].tolist()
        return [_cut_at_eos(row, self.eos_id) for row in new]

    # --- scoring ---------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True, sampling: Sampling | None = None) -> list[TokenScores]:
        """Teacher-forced scores of each sequence at positions ``start..len-1``: one forward
        pass over the batch (right-padded), the LM head only at the positions scored.

        ``mean``/``std`` are the mean and standard deviation of log p(z) with z drawn from
        the model's next-token distribution (Min-K%++). NaN follows ``TokenScores``'
        conventions: ``distribution=False`` skips the moments (NaN), and position 0 of a
        model without BOS has no context (NaN, argmax -1).

        ``sampling`` (non-greedy) also gives ``sampled_logprob``: log q(true token) under the
        distribution ``generate`` samples from with that scheme (temperature, then top-k, then
        top-p, renormalised), from the same logits.
        """
        if sampling is not None and sampling.greedy:
            raise MiaError("sampled log-probabilities need a sampling scheme with temperature > 0")
        n = len(sequences)
        if n == 0:
            return []
        starts = [int(start)] * n if isinstance(start, (int, np.integer)) else [int(s) for s in start]
        if len(starts) != n:
            raise MiaError(f"score got {n} sequences but {len(starts)} start positions")
        rows = [self._with_bos(s) for s in sequences]
        self._check_ids(rows)
        offset = 1 if self.bos_prepended else 0
        self._check_context(max(len(r) for r in rows), "a sequence")
        # Flat list of (row, hidden position, target token) for every scored position.
        batch_idx, pos_idx, targets, spans = [], [], [], []
        for b, (seq, st) in enumerate(zip(sequences, starts, strict=True)):
            if st < 0 or st > len(seq):
                raise MiaError(f"start {st} is outside a sequence of {len(seq)} tokens")
            lo = len(batch_idx)
            for j in range(st, len(seq)):
                batch_idx.append(b)
                pos_idx.append(j + offset - 1)  # -1: no context (first token, no BOS)
                targets.append(int(seq[j]))
            spans.append((lo, len(batch_idx)))
        total = len(batch_idx)
        logprob = np.full(total, np.nan, dtype=np.float32)
        argmax = np.full(total, -1, dtype=np.int64)
        mean = np.full(total, np.nan, dtype=np.float32)
        std = np.full(total, np.nan, dtype=np.float32)
        sampled = np.full(total, np.nan, dtype=np.float64) if sampling is not None else None
        keep = [i for i in range(total) if pos_idx[i] >= 0]
        if keep and any(rows):
            # Right padding: causal attention never lets a pad influence an earlier position,
            # so no attention mask is needed (and models without one, like Mamba, work too).
            ids, _ = self._pad([r if r else [self.pad_id] for r in rows], left=False)
            with self._oom_guard(n), torch.inference_mode():
                hidden = self._hidden_states(ids)
                b_t = torch.tensor([batch_idx[i] for i in keep], device=self.device)
                p_t = torch.tensor([pos_idx[i] for i in keep], device=self.device)
                h = hidden[b_t, p_t]  # [K, H]
                del hidden
                tgt = torch.tensor([targets[i] for i in keep], device=self.device)
                lp, am, mu, sd, sq = self._head_stats(h, tgt, distribution, sampling)
            keep_a = np.asarray(keep)
            logprob[keep_a], argmax[keep_a], mean[keep_a], std[keep_a] = lp, am, mu, sd
            if sampled is not None:
                sampled[keep_a] = sq
        return [TokenScores(logprob[a:b], argmax[a:b], mean[a:b], std[a:b],
                            sampled[a:b] if sampled is not None else None) for a, b in spans]

    def _hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, T, H] from the model body (no LM head)."""
        if self._head_ok is None:
            self._head_ok = self._check_split()
        if self._head_ok:
            return self.model.base_model(input_ids=ids, use_cache=False)[0]
        # Unknown architecture: let forward() compute logits; _head_stats then gets logits.
        return self.model(input_ids=ids, use_cache=False).logits

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if not self._head_ok:
            return h  # already logits (see _hidden_states)
        logits = self.model.get_output_embeddings()(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _check_split(self) -> bool:
        """Whether base_model + output embeddings (+ softcap) reproduce forward()'s logits."""
        base, head = getattr(self.model, "base_model", None), self.model.get_output_embeddings()
        if base is None or base is self.model or head is None:
            return False
        ids = torch.tensor([[t % self.tokenizer.vocab_size for t in (5, 17, 3, 11)]], device=self.device)
        with torch.inference_mode():
            try:
                ref = self.model(input_ids=ids, use_cache=False).logits.float()
                h = base(input_ids=ids, use_cache=False)[0]
            except TypeError:
                return False
            self._head_ok = True
            got = self._logits(h).float()
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        return got.shape == ref.shape and bool(torch.allclose(got, ref, atol=tol * max(1.0, ref.abs().max().item())))

    def _head_stats(self, h: torch.Tensor, tgt: torch.Tensor, distribution: bool = True,
                    sampling: Sampling | None = None) -> tuple[np.ndarray, ...]:
        vocab = self.model.get_output_embeddings().weight.shape[0] if self._head_ok else h.shape[-1]
        step = max(1, HEAD_CHUNK_ELEMENTS // max(vocab, 1))
        parts: list[tuple[torch.Tensor, ...]] = []
        for a in range(0, h.shape[0], step):
            logits = self._logits(h[a:a + step])
            lp, best, mu, sd = token_stats(logits, tgt[a:a + step], distribution)
            sq = (sampled_logprob(logits, tgt[a:a + step], sampling) if sampling is not None
                  else torch.full_like(lp, float("nan")))
            parts.append((lp, best, mu, sd, sq))
        return tuple(torch.cat([part[i] for part in parts]).cpu().numpy() for i in range(5))


def sampled_logprob(logits: torch.Tensor, targets: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """log q(target) per row, q the distribution ``generate`` samples from under ``sampling``:
    logits / temperature, then top-k, then top-p (the smallest set of most likely tokens whose
    mass reaches top_p, at least one token; transformers' TopPLogitsWarper), renormalised.
    A filtered-out target gets −inf. Computed in float64 so a long suffix's product keeps its digits."""
    scaled = logits.double() / float(sampling.temperature)
    if sampling.top_k:
        k = min(int(sampling.top_k), scaled.shape[-1])
        kth = torch.topk(scaled, k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if sampling.top_p is not None and float(sampling.top_p) < 1.0:
        ordered, order = torch.sort(scaled, descending=False, dim=-1)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - float(sampling.top_p))
        remove[:, -1] = False  # keep at least the most likely token
        scaled = scaled.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return torch.log_softmax(scaled, dim=-1).gather(-1, targets[:, None])[:, 0]


class _StepProgress:
    """A stopping criterion that never stops: it reports progress after each decoding step
    (rows that produced EOS count as done; the others as steps / max_new_tokens)."""

    def __init__(self, report: Callable[[float, int], None], rows: int, max_new_tokens: int,
                 eos: int | None) -> None:
        self.report, self.rows, self.max_new, self.eos = report, rows, max_new_tokens, eos
        self.step, self.done = 0, 0.0
        self.ended = torch.zeros(rows, dtype=torch.bool)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.step += 1
        if self.eos is not None:
            self.ended |= input_ids[:, -1].cpu() == self.eos
        ended = int(self.ended.sum())
        done = ended + (self.rows - ended) * min(self.step / self.max_new, 1.0)
        self.report(done - self.done, self.rows - ended)
        self.done = done
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in row:
        return row[: row.index(eos)]
    return row


def _max_context(config: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and 0 < value < math.inf:
            return value
    return None
