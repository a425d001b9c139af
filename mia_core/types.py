"""The contracts between the core and plugins: datasets, tokenizers and backends.

Plugins return objects that satisfy these protocols from the factories they register
(see ``mia_core.hookspecs``). Nothing here imports torch.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

MEMBER = "member"
NONMEMBER = "nonmember"


@dataclass(frozen=True)
class Sample:
    """One document of a dataset. ``label`` is ``member``/``nonmember`` when known."""

    id: str
    text: str
    label: str | None = None


@runtime_checkable
class Dataset(Protocol):
    """A stream of samples; ``length`` is the number of samples when known (else None)."""

    name: str
    length: int | None

    def __iter__(self) -> Iterator[Sample]: ...


@runtime_checkable
class Tokenizer(Protocol):
    """Encodes and decodes batches of texts; never adds special tokens (BOS/EOS)."""

    name: str
    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    fingerprint: str  # hash of the vocabulary/merges: two tokenizers agree iff equal

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]: ...


@dataclass(frozen=True)
class Sampling:
    """Decoding options. ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class TokenScores:
    """Teacher-forced scores of one sequence at positions ``start .. len-1``.

    ``logprob[i]`` is log p(token at start+i | tokens before it), ``argmax[i]`` the model's
    most likely token there, and ``mean``/``std`` the mean and standard deviation of
    log p(z) over the full next-token distribution (what Min-K%++ normalises by).
    """

    logprob: np.ndarray
    argmax: np.ndarray
    mean: np.ndarray
    std: np.ndarray


@dataclass
class TextResult:
    """One answer of a text-in/text-out (API) backend."""

    text: str
    stop_reason: str | None = None
    raw: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Backend(Protocol):
    """A model. ``capabilities`` holds ``generate``, ``generate_text`` and/or ``score``.

    ``generate`` takes prefixes of token ids (without BOS: the backend prepends what the
    model expects) and returns the new tokens of each, stopping after EOS when produced.
    ``score`` returns teacher-forced scores of whole sequences from position ``start``
    (an int for all, or one per sequence); with ``distribution=False`` the caller needs no
    ``mean``/``std`` (Min-K%++), and the backend may skip them (NaN) to save a pass over the
    vocabulary. ``describe()`` is recorded in run files.
    Backends raise ``mia_core.errors.BackendOutOfMemory`` when a batch does not fit.
    """

    name: str
    capabilities: frozenset[str]
    tokenizer: Tokenizer | None

    def describe(self) -> dict[str, Any]: ...

    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling) -> list[list[int]]: ...

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int,
                      sampling: Sampling) -> list[TextResult]: ...

    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True) -> list[TokenScores]: ...
