"""``LlamaCppLM``: generation and teacher-forced scoring of a GGUF model on llama.cpp.

Every sequence of a batch gets its own seq id in ONE context (one KV cache shared by all), and
each ``llama_decode`` call carries tokens of many sequences: the prompt pass packs all prefixes,
then each generation step decodes one token per unfinished row. Sequences are grouped so that a
group's tokens fit the cache (``n_ctx``); the cache is cleared between groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.types import Sampling, TokenScores
from mia_llamacpp import logits as lg
from mia_llamacpp.native import Context, Model, Slot, max_sequences

# Logits of a 262k vocabulary are 1 MB per position (float32, then float64 for the softmax): a
# scoring decode asks for at most this many positions at a time.
SCORE_OUTPUTS = 32


class LlamaCppLM:
    """A GGUF model on llama.cpp as a mia backend (capabilities ``generate`` and ``score``).

    ``add_bos``: prepend BOS (None: as the GGUF says, ``tokenizer.ggml.add_bos_token``).
    """

    def __init__(self, name: str, model: Model, tokenizer: Any, *, n_ctx: int, n_batch: int,
                 threads: int, add_bos: bool | None = None) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        # BOS and EOS as the GGUF defines them (for the embedded models, mia-hf's tokenizer agrees: tested).
        self.bos_id, self.eos_id = model.special("bos"), model.special("eos")
        adds = model.adds_bos() if add_bos is None else add_bos
        self.bos_prepended: bool = bool(adds) and self.bos_id is not None
        self.context_length: int = min(n_ctx, model.n_ctx_train())
        self.threads = threads
        self.ctx = Context(model, n_ctx=n_ctx, n_batch=n_batch, threads=threads, n_seq=max_sequences())
        self.on_rows_done: Callable[[float, int], None] | None = None

    def describe(self) -> dict[str, Any]:
        import llama_cpp

        return {
            "model": self.name,
            "source": f"gguf:{self.model.path}",
            "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
            "weights": self.model.description(),
            "device": "cpu",
            # Provenance's dtype: llama.cpp computes with the quantized weights themselves (its dot
            # products quantize activations to 8 bits), in float32 otherwise.
            "dtype": f"GGUF {self.model.description()} (llama.cpp CPU kernels, float32 logits)",
            "threads": self.threads,
            "n_ctx": self.ctx.n_ctx,
            "n_batch": self.ctx.n_batch,
            "bos_prepended": self.bos_prepended,
            "max_context": self.context_length,
            "parameters": self.model.n_params(),
            "tokenizer": self.tokenizer.name,  # mia-hf's for the embedded models
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
        }

    # --- input checks ----------------------------------------------------------------------
    def _rows(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        """Each sequence with BOS in front when the model expects it; ids checked against the vocabulary."""
        rows = []
        for seq in sequences:
            row = [int(i) for i in seq]
            if row and (min(row) < 0 or max(row) >= self.model.n_vocab):
                raise MiaError(f"{self.name}: token ids must lie in 0..{self.model.n_vocab - 1}, got {row[:8]}... "
                               f"(a map made with another tokenizer?)")
            rows.append([self.bos_id, *row] if self.bos_prepended else row)
        return rows

    def _check_length(self, length: int, what: str) -> None:
        if length > self.context_length:
            raise MiaError(f"{what} of {length} tokens exceeds {self.name}'s context of {self.context_length} "
                           f"tokens (raise --model-option n_ctx=…, at most the model's {self.model.n_ctx_train()})")

    def _groups(self, needs: Sequence[int]) -> Iterator[list[int]]:
        """Row indices in order, cut into groups whose KV needs fit the cache and its sequence slots."""
        group: list[int] = []
        used = 0
        for i, need in enumerate(needs):
            if group and (used + need > self.ctx.n_ctx or len(group) == self.ctx.n_seq):
                yield group
                group, used = [], 0
            group.append(i)
            used += need
        if group:
            yield group

    def _decode(self, slots: list[Slot], max_outputs: int | None = None, one_seq: bool = False) -> Iterator[np.ndarray]:
        """Decode ``slots`` in calls of at most ``n_batch`` tokens (and ``max_outputs`` logits rows);
        yields each call's logits. ``one_seq``: a call holds tokens of one sequence only (prompt and
        scoring passes), so a row's prompt logits do not depend on the other rows of its batch: llama.cpp
        0.3.36 tiles its quantized matmul over a call's tokens, and a token's logits depend on its tile
        (up to 1.69 apart on gemma-3-270m). A generation step (one token per row) still depends on the
        row's place in the step; it is deterministic, which is what a resume needs."""
        start = 0
        while start < len(slots):
            end, outputs = start, 0
            while end < len(slots) and end - start < self.ctx.n_batch:
                if one_seq and slots[end].seq != slots[start].seq:
                    break
                if slots[end].logits:
                    if max_outputs is not None and outputs == max_outputs:
                        break
                    outputs += 1
                end += 1
            yield self.ctx.decode(slots[start:end])
            start = end

    # --- generation ------------------------------------------------------------------------
    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[int]]:
        """New tokens for each prefix, cut before EOS (``mia_core.types.TokenGenerator``). With sampling,
        ``sampling.seed`` seeds the call's one numpy generator: the same call gives the same tokens."""
        sampling = sampling or Sampling()
        if not prefixes:
            return []
        if max_new_tokens <= 0:
            raise MiaError(f"max_new_tokens must be positive, got {max_new_tokens}")
        rows = self._rows(prefixes)
        if any(not r for r in rows):
            raise MiaError(f"{self.name} cannot generate from an empty prefix (it uses no BOS token)")
        self._check_length(max(len(r) for r in rows) + max_new_tokens, "prefix + max_new_tokens")
        rng = None if sampling.greedy else np.random.default_rng(sampling.seed)
        out: list[list[int]] = []
        for group in self._groups([len(r) + max_new_tokens for r in rows]):
            out.extend(self._generate_group([rows[i] for i in group], max_new_tokens, sampling, rng))
        return out

    def _generate_group(self, rows: list[list[int]], max_new: int, sampling: Sampling,
                        rng: np.random.Generator | None) -> list[list[int]]:
        self.ctx.clear()
        prompt = [Slot(t, seq, pos, pos == len(row) - 1) for seq, row in enumerate(rows) for pos, t in enumerate(row)]
        logits = np.concatenate(list(self._decode(prompt, one_seq=True)))
        new: list[list[int]] = [[] for _ in rows]
        active = list(range(len(rows)))
        progress = _Progress(self.on_rows_done, len(rows), max_new)
        eos = self.eos_id
        for step in range(max_new):
            chosen = lg.next_tokens(logits, sampling, rng)
            still = []
            for i, token in zip(active, chosen.tolist(), strict=True):
                if token != eos:
                    new[i].append(token)
                    still.append(i)
            active = still
            progress.step(step + 1, len(rows) - len(active))
            if not active or step == max_new - 1:
                break
            slots = [Slot(new[i][-1], i, len(rows[i]) + len(new[i]) - 1, True) for i in active]
            parts = list(self._decode(slots))
            # one call holds the whole step up to n_batch rows: no copy of its [rows, vocab] logits then
            logits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return new

    # --- scoring ---------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True, sampling: Sampling | None = None) -> list[TokenScores]:
        """Teacher-forced scores at positions ``start..len-1`` of each sequence (``mia_core.types.Scorer``),
        following ``TokenScores``' NaN conventions; ``sampling`` also fills ``sampled_logprob``."""
        if sampling is not None and sampling.greedy:
            raise MiaError("sampled log-probabilities need a sampling scheme with temperature > 0")
        n = len(sequences)
        if n == 0:
            return []
        starts = [int(start)] * n if isinstance(start, (int, np.integer)) else [int(s) for s in start]
        if len(starts) != n:
            raise MiaError(f"score got {n} sequences but {len(starts)} start positions")
        for seq, st in zip(sequences, starts, strict=True):
            if st < 0 or st > len(seq):
                raise MiaError(f"start {st} is outside a sequence of {len(seq)} tokens")
        rows = self._rows(sequences)
        self._check_length(max(len(r) for r in rows), "a sequence")
        result = _ScoreArrays(sequences, starts, sampling is not None)
        offset = 1 if self.bos_prepended else 0
        for group in self._groups([len(r) for r in rows]):
            self._score_group(group, rows, result, offset, distribution, sampling)
        return result.split()

    def _score_group(self, group: list[int], rows: list[list[int]], result: _ScoreArrays, offset: int,
                     distribution: bool, sampling: Sampling | None) -> None:
        self.ctx.clear()
        slots: list[Slot] = []
        flat: list[int] = []  # for each slot that asks for logits: its index in the result arrays
        for b in group:
            wanted = result.wanted(b, offset)  # row position -> flat index of the token it predicts
            for pos, token in enumerate(rows[b]):
                slots.append(Slot(token, b, pos, pos in wanted))
                if pos in wanted:
                    flat.append(wanted[pos])
        done = 0
        for logits in self._decode(slots, SCORE_OUTPUTS, one_seq=True):
            if not len(logits):  # a call of context tokens only (a start past n_batch tokens)
                continue
            index = np.asarray(flat[done:done + len(logits)], dtype=np.int64)
            done += len(logits)
            result.fill(index, logits, distribution, sampling)


class _ScoreArrays:
    """The flat result arrays of one ``score`` call (NaN / -1 until filled) and their per-sequence spans."""

    def __init__(self, sequences: Sequence[Sequence[int]], starts: list[int], sampled: bool) -> None:
        self.spans, self.targets = [], []
        for seq, st in zip(sequences, starts, strict=True):
            lo = len(self.targets)
            self.targets.extend(int(t) for t in seq[st:])
            self.spans.append((lo, len(self.targets), st))
        total = len(self.targets)
        self.logprob = np.full(total, np.nan, dtype=np.float32)
        self.argmax = np.full(total, -1, dtype=np.int64)
        self.mean = np.full(total, np.nan, dtype=np.float32)
        self.std = np.full(total, np.nan, dtype=np.float32)
        self.sampled = np.full(total, np.nan, dtype=np.float64) if sampled else None

    def wanted(self, b: int, offset: int) -> dict[int, int]:
        """Row position whose logits predict each scored token of sequence ``b`` -> its flat index;
        a token without context (position 0, no BOS) is left out (NaN, argmax -1)."""
        lo, hi, st = self.spans[b]
        return {st + k + offset - 1: lo + k for k in range(hi - lo) if st + k + offset - 1 >= 0}

    def fill(self, index: np.ndarray, logits: np.ndarray, distribution: bool, sampling: Sampling | None) -> None:
        targets = np.asarray([self.targets[i] for i in index], dtype=np.int64)
        lp, best, mean, std = lg.token_stats(logits, targets, distribution)
        self.logprob[index], self.argmax[index], self.mean[index], self.std[index] = lp, best, mean, std
        if self.sampled is not None and sampling is not None:
            pairs = zip(logits, targets, strict=True)
            self.sampled[index] = [lg.sampling_logprobs(row, sampling)[t] for row, t in pairs]

    def split(self) -> list[TokenScores]:
        return [TokenScores(self.logprob[a:b], self.argmax[a:b], self.mean[a:b], self.std[a:b],
                            self.sampled[a:b] if self.sampled is not None else None) for a, b, _ in self.spans]


class _Progress:
    """Reports generation progress to ``on_rows_done`` (``mia_core.types.ReportsProgress``): rows that
    ended count as done, the others as steps / max_new_tokens."""

    def __init__(self, report: Callable[[float, int], None] | None, rows: int, max_new: int) -> None:
        self.report, self.rows, self.max_new, self.done = report, rows, max_new, 0.0

    def step(self, step: int, ended: int) -> None:
        if self.report is None:
            return
        done = ended + (self.rows - ended) * min(step / self.max_new, 1.0)
        self.report(done - self.done, self.rows - ended)
        self.done = done
