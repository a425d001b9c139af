"""A thin layer over llama.cpp's C API (llama-cpp-python's ctypes bindings, 0.3.36).

Only what mia needs: load a GGUF (whole model or vocabulary only), one context whose KV cache
is shared by many sequences (``kv_unified``: the cells go to whichever sequence needs them),
a ``llama_batch`` filled with tokens of several sequences (seq ids) and decoded in one
``llama_decode`` call, and the logits of the positions asked for.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mia_core.errors import BackendOutOfMemory, MiaError

GGUF_MAGIC = b"GGUF"


def _llama() -> object:
    """The bindings, imported on first use (registering the plugin imports nothing heavy); llama.cpp's
    own log lines are silenced except errors."""
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError as exc:
        raise MiaError("llamacpp models need llama-cpp-python 0.3.36: run bash install.sh --llamacpp "
                       f"({type(exc).__name__}: {exc})") from None
    _logger.set_verbose(False)
    return llama_cpp


def check_gguf(path: Path) -> Path:
    """``path`` if it is a readable GGUF file; otherwise one clear ``MiaError``."""
    if not path.exists():
        raise MiaError(f"no such GGUF file: {path}")
    if not path.is_file():
        raise MiaError(f"{path} is not a file (a llamacpp model is one .gguf file)")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise MiaError(f"cannot read {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise MiaError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    return path


class Model:
    """A loaded GGUF: weights on the CPU (or only the vocabulary, ``vocab_only``)."""

    def __init__(self, path: Path, *, vocab_only: bool = False) -> None:
        self.lib = _llama()
        self.path = check_gguf(path)
        params = self.lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only
        self.ptr = self.lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self.ptr:
            raise MiaError(f"llama.cpp cannot load {path} (an architecture this llama.cpp does not know, "
                           f"or a damaged file)")
        self.vocab = self.lib.llama_model_get_vocab(self.ptr)
        self.n_vocab: int = self.lib.llama_vocab_n_tokens(self.vocab)

    def close(self) -> None:
        if getattr(self, "ptr", None) and callable(getattr(self.lib, "llama_model_free", None)):
            self.lib.llama_model_free(self.ptr)
        self.ptr = None

    def __del__(self) -> None:
        self.close()

    # --- vocabulary -------------------------------------------------------------------------
    def special(self, which: str) -> int | None:
        """``bos`` or ``eos`` id, None when the vocabulary has none."""
        token = getattr(self.lib, f"llama_vocab_{which}")(self.vocab)
        return None if token < 0 else int(token)

    def adds_bos(self) -> bool:
        return bool(self.lib.llama_vocab_get_add_bos(self.vocab))

    def n_ctx_train(self) -> int:
        return int(self.lib.llama_model_n_ctx_train(self.ptr))

    def n_params(self) -> int:
        return int(self.lib.llama_model_n_params(self.ptr))

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.lib.llama_model_desc(self.ptr, buf, 256)
        return buf.value.decode("utf-8", "replace")

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS, control-token strings read as text (document text)."""
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            out = (self.lib.llama_token * size)()
            n = self.lib.llama_tokenize(self.vocab, data, len(data), out, size, False, False)
            if n >= 0:
                return list(out[:n])
            size = -n

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens kept as their text (what HF's decode shows)."""
        arr = (self.lib.llama_token * max(len(ids), 1))(*ids)
        size = 16 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_detokenize(self.vocab, arr, len(ids), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            size = -n

    def token_texts(self) -> list[bytes]:
        """Every token's text in id order (the fingerprint of a GGUF without an HF twin)."""
        return [self.lib.llama_vocab_get_text(self.vocab, i) or b"" for i in range(self.n_vocab)]


@dataclass
class Slot:
    """One token of a batch: its sequence, position, and whether its logits are wanted."""

    token: int
    seq: int
    pos: int
    logits: bool


class Context:
    """A llama.cpp context: ``n_ctx`` KV cells shared by up to ``n_seq`` sequences."""

    def __init__(self, model: Model, *, n_ctx: int, n_batch: int, threads: int, n_seq: int) -> None:
        self.lib = model.lib
        self.model = model  # the context must not outlive its model
        params = self.lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        # llama.cpp caps n_batch at n_ctx, reserves logits for max(outputs, n_seq_max) rows and asserts
        # (aborts the process) unless that fits n_batch.
        n_batch = min(n_batch, n_ctx)
        n_seq = min(n_seq, n_batch)
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True  # one pool of cells, not n_ctx / n_seq per sequence
        params.swa_full = True  # sliding-window layers keep every cell: a batch may hold many sequences
        params.no_perf = True
        self.ptr = self.lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise MiaError(f"llama.cpp cannot create a context of {n_ctx} tokens for {model.path.name} "
                           f"(not enough memory? try a smaller n_ctx)")
        self.n_ctx, self.n_batch, self.n_seq = n_ctx, n_batch, n_seq
        self.memory = self.lib.llama_get_memory(self.ptr)
        self.batch = self.lib.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        if getattr(self, "ptr", None) and callable(getattr(self.lib, "llama_free", None)):  # not at shutdown
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ptr)
        self.ptr = None

    def __del__(self) -> None:
        self.close()

    def clear(self) -> None:
        """Forget every sequence (the KV cache is empty again)."""
        self.lib.llama_memory_clear(self.memory, True)

    def decode(self, slots: Sequence[Slot]) -> np.ndarray:
        """Decode ``slots`` (at most ``n_batch``) in one call; the logits of the slots that asked for
        them, in slot order, as a float32 array [n_outputs, n_vocab] (a copy)."""
        batch = self.batch
        batch.n_tokens = len(slots)
        for i, slot in enumerate(slots):
            batch.token[i] = slot.token
            batch.pos[i] = slot.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot.seq
            batch.logits[i] = slot.logits
        code = self.lib.llama_decode(self.ptr, batch)
        if code == 1:
            raise BackendOutOfMemory(f"llama.cpp found no room in its KV cache of {self.n_ctx} tokens for a "
                                     f"batch of {len(slots)} tokens: use a smaller batch size or a larger n_ctx")
        if code != 0:
            raise MiaError(f"llama_decode failed with code {code} on a batch of {len(slots)} tokens")
        wanted = sum(1 for s in slots if s.logits)
        if wanted == 0:
            return np.empty((0, self.model.n_vocab), dtype=np.float32)
        # Row by row through llama_get_logits_ith, the accessor that maps each batch index to its row.
        out = np.empty((wanted, self.model.n_vocab), dtype=np.float32)
        rows = (i for i, slot in enumerate(slots) if slot.logits)
        for k, i in enumerate(rows):
            out[k] = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ptr, i), shape=(self.model.n_vocab,))
        return out


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def max_sequences() -> int:
    """How many sequences one llama.cpp context can hold (llama_max_parallel_sequences)."""
    return int(_llama().llama_max_parallel_sequences())
