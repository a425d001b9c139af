"""``GGUFTokenizer``: the vocabulary inside a GGUF file, as llama.cpp tokenizes with it.

It satisfies ``mia_core.types.Tokenizer``: encoding never adds BOS/EOS and reads control-token
strings in a document (``<eos>``) as text. Its fingerprint is a hash of the GGUF's vocabulary.

The embedded models do NOT use it (``mia_llamacpp.loading.make_tokenizer``): their GGUF vocabulary is
mia-hf's piece for piece, but llama.cpp segments some texts differently (runs of spaces for Gemma,
newlines followed by spaces for SmolLM2: 2 and 42 of the 130 corpus documents, tested), so
``llamacpp:gemma-3-270m`` tokenizes with mia-hf's tokenizer and shares its maps and fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from mia_llamacpp.native import Model


class GGUFTokenizer:
    """The tokenizer of one GGUF file (loaded with ``vocab_only``: no weights)."""

    def __init__(self, name: str, path: Path, *, model: Model | None = None) -> None:
        self.name = name
        self.path = path
        self.model = model or Model(path, vocab_only=True)
        self.vocab_size: int = self.model.n_vocab
        self.eos_id: int | None = self.model.special("eos")
        self.bos_id: int | None = self.model.special("bos")
        self.adds_bos: bool = self.model.adds_bos() and self.bos_id is not None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.model.tokenize(text) for text in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.model.detokenize([int(i) for i in row if int(i) >= 0]) for row in ids]

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"gguf-vocab-v1\0")
        for text in self.model.token_texts():
            digest.update(text + b"\0")
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"GGUFTokenizer({self.name!r}, vocab_size={self.vocab_size})"
