"""The contracts between the core and plugins: datasets, tokenizers and backends.

Plugins return objects that satisfy these protocols from the factories they register
(see ``mia_core.hookspecs``). Nothing here imports torch.
"""

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mia_core.errors import UsageError

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

    def __post_init__(self) -> None:
        """Refuse what no decoder can use (NaN, infinity, a seed numpy and HDF5 cannot hold) in one line."""
        if not _is_number(self.temperature) or not 0 <= self.temperature < math.inf:
            raise UsageError(f"must be a finite number >= 0, got {self.temperature!r}", option="temperature")
        if self.top_k is not None and not (_is_int(self.top_k) and 1 <= self.top_k <= INT64_MAX):
            raise UsageError(f"must be an integer from 1 to 2**63-1, got {self.top_k!r}", option="top_k")
        if self.top_p is not None and not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            raise UsageError(f"must be a number in (0, 1], got {self.top_p!r}", option="top_p")
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed <= INT64_MAX):
            raise UsageError(f"must be an integer from 0 to 2**63-1, got {self.seed!r}", option="seed")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


INT64_MAX = 2**63 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number that is not NaN (infinity is left to the range checks)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and value == value


@dataclass
class TokenScores:
    """Teacher-forced scores of one sequence at positions ``start .. len-1`` (one entry each).

    ``logprob[i]`` is log p(token at start+i | tokens before it), ``argmax[i]`` the model's
    most likely token there, and ``mean``/``std`` the mean and standard deviation of
    log p(z) over the full next-token distribution (what Min-K%++ normalises by).

    NaN conventions (every consumer relies on them):

    - a position the model has no context for (position 0 of a model that prepends no BOS)
      has ``logprob``, ``mean`` and ``std`` NaN and ``argmax`` -1; it is never a match and
      signals skip it;
    - ``mean``/``std`` are NaN everywhere when the caller passed ``distribution=False``;
    - nothing else is NaN.

    ``sampled_logprob`` (only when the caller passed ``sampling=``, else None) is log q(token |
    tokens before it), where q is the distribution that sampling scheme draws from: the model's
    distribution at the scheme's temperature, restricted to its top-k and top-p (nucleus) tokens
    and renormalised, in that order (as Hugging Face's ``generate`` applies them). A token outside
    them has −inf; a position without context has NaN. Probabilistic extraction (Hayes et al.
    2024) multiplies these over a suffix: ``mia_core.matching.probabilistic``.
    """

    logprob: np.ndarray
    argmax: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    sampled_logprob: np.ndarray | None = None


@dataclass
class TextResult:
    """One answer of a text-in/text-out (API) backend. A failed request is a result with
    ``error`` set (its row is kept empty), not an exception."""

    text: str
    stop_reason: str | None = None
    raw: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------- backends
#
# A backend is one object that satisfies ``Backend`` and at least one of the capability
# protocols below. Nothing is declared on the object: what it can do is inferred from
# the methods it has, by ``capabilities()`` (the one place the core asks). A plugin may
# also promise capabilities at registration (``register(..., capabilities=[...])``) so
# that commands refuse an unsuitable model before loading it; the registry checks the
# promise against the loaded object.


@runtime_checkable
class Backend(Protocol):
    """What every model has: a ``name`` and ``describe()``, a JSON-able dict recorded in run
    files (token models include ``bos_prepended``, and ``max_context`` when known).
    Backends raise ``mia_core.errors.BackendOutOfMemory`` when a batch does not fit, and
    ``MiaError`` for bad input (one line for the user)."""

    name: str

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class TokenGenerator(Backend, Protocol):
    """Capability ``generate``: token ids in, token ids out (local models).

    ``generate(prefixes, max_new_tokens, sampling)`` takes prefixes of token ids in
    ``tokenizer``'s vocabulary, without BOS (the backend prepends what its model expects),
    and returns one list of new tokens per prefix, in order.

    The EOS rule: a row holds at most ``max_new_tokens`` tokens and is **cut before EOS**:
    the EOS token itself is never returned, so a row shorter than ``max_new_tokens`` means
    the model ended the text there. (The true suffixes of a prefix map never contain EOS
    either, so generated rows and suffixes compare position by position.)

    With sampling, ``sampling.seed`` seeds the call: the same call on the same device gives
    the same tokens.
    """

    tokenizer: Tokenizer

    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling) -> list[list[int]]: ...


@runtime_checkable
class TextGenerator(Backend, Protocol):
    """Capability ``generate_text``: text in, text out (API models).

    ``generate_text(prompts, max_new_tokens, sampling)`` returns one ``TextResult`` per
    prompt, in order; a failed request is a result with ``error`` set. The core re-tokenizes
    answers with the prefix map's tokenizer and cuts them to ``max_new_tokens`` tokens.
    """

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int,
                      sampling: Sampling) -> list[TextResult]: ...


@runtime_checkable
class Scorer(Backend, Protocol):
    """Capability ``score``: teacher-forced log-probabilities (the check, membership signals).

    ``score(sequences, start, *, distribution)`` scores whole sequences of token ids (without
    BOS, as for ``generate``) from position ``start`` (an int for all, or one per sequence)
    and returns one ``TokenScores`` per sequence, following its NaN conventions. With
    ``distribution=False`` the caller needs no ``mean``/``std``, and the backend may skip
    them (NaN) to save a pass over the vocabulary.

    Optional keyword ``sampling`` (a non-greedy ``Sampling``): also fill ``sampled_logprob``,
    the log-probability of each true token under that sampling scheme's processed distribution
    (``TokenScores``), from the same pass. A backend that cannot do it raises ``TypeError`` for
    the unknown keyword; callers check with :func:`scores_sampling`.
    """

    tokenizer: Tokenizer

    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True, sampling: Sampling | None = None) -> list[TokenScores]: ...


@runtime_checkable
class PaidAPI(Protocol):
    """Optional capability ``cost`` of a text backend that costs money: ``estimate_cost``
    is an upper bound in USD for answering ``texts`` (asked before sending, and before each
    batch under ``--max-cost``); ``render_request`` is what ``--dry-run`` prints."""

    def estimate_cost(self, texts: Sequence[str], max_new_tokens: int) -> float: ...

    def render_request(self, text: str, max_new_tokens: int) -> dict[str, Any]: ...


@runtime_checkable
class BatchRunner(Protocol):
    """Optional capability ``batch`` (``--batch-api``): hand all ``items`` (row, prompt text)
    to a provider's asynchronous batch API. ``state`` is what ``save_state`` persisted last
    time (a submitted batch is fetched on resume, never paid twice); ``on_results`` receives
    ``(row, TextResult)`` pairs in any order, as they arrive."""

    def run_batch(self, items: list[tuple[int, str]], max_new_tokens: int, sampling: Sampling,
                  state: dict[str, Any], save_state: Callable[[dict[str, Any]], None],
                  on_results: Callable[[list[tuple[int, TextResult]]], None]) -> None: ...


# ---- optional protocols: what else the core may ask of a backend ---------------------------
# None of these is a capability: a backend without them works, the core falls back as each says.


@runtime_checkable
class ReportsProgress(Protocol):
    """Progress within a batch (HF, vLLM): while a run lasts, the core points ``on_rows_done`` at its
    progress bar (and back to ``None`` after it); the backend calls it with the rows finished since the
    last call (fractional: a generation step of a batch of 10 is 0.1 row) and the new tokens. Without
    it, the bar moves once per batch."""

    on_rows_done: Callable[[float, int], None] | None


@runtime_checkable
class ChatEncoder(Protocol):
    """A tokenizer with a chat template (the divergence attack's prompts to a local chat model):
    ``encode_chat(messages)`` gives the ids of the conversation followed by the opened assistant turn,
    or ``None`` when the model has no template (the prompt is then sent as plain text)."""

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int] | None: ...


@runtime_checkable
class VerbatimPrompts(Protocol):
    """A text backend that can send a prompt as the whole user message (the divergence attack), instead
    of wrapping a prefix in its continuation template: ``with_verbatim_prompts()`` returns a backend that
    does (a copy: the object the caller holds is never changed, so it may serve prefix-map runs next).
    Without the method, that run is refused in one line."""

    def with_verbatim_prompts(self) -> Any: ...


@runtime_checkable
class KnowsContext(Protocol):
    """What a token model tells about its input, as attributes or in ``describe()`` (which wins):
    ``bos_prepended`` (recorded in every run) and ``context_length`` (``max_context`` in ``describe()``),
    the longest sequence it takes, BOS included (``mia attack`` caps its strings to it)."""

    bos_prepended: bool
    context_length: int


def bos_prepended(backend: object) -> bool | None:
    """Whether the backend prepends BOS: ``describe()["bos_prepended"]``, else its attribute (``KnowsContext``),
    else unknown (None)."""
    return _described(backend).get("bos_prepended", getattr(backend, "bos_prepended", None))


def _described(backend: object) -> dict[str, Any]:
    """``backend.describe()``, or {} when it has none, fails or gives no dict: it is informative only,
    never a reason to fail a run."""
    describe = getattr(backend, "describe", None)
    try:
        described = describe() if callable(describe) else {}
    except Exception:
        return {}
    return described if isinstance(described, dict) else {}


def context_length(backend: object) -> int | None:
    """The longest sequence the backend takes, BOS included (``KnowsContext``): ``describe()["max_context"]``
    (or ``["context_length"]``), else its ``context_length``/``max_context`` attribute, else unknown (None)."""
    described = _described(backend)
    for key in ("max_context", "context_length"):
        for value in (described.get(key), getattr(backend, key, None)):
            if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 1:
                return int(value)
    return None


def reports_progress(backend: object) -> bool:
    """Whether the backend reports progress within a batch (``ReportsProgress``)."""
    return hasattr(backend, "on_rows_done")


CAPABILITIES: dict[str, type] = {
    "generate": TokenGenerator,
    "generate_text": TextGenerator,
    "score": Scorer,
    "cost": PaidAPI,
    "batch": BatchRunner,
}


def capabilities(backend: object) -> frozenset[str]:
    """What ``backend`` can do: the names of ``CAPABILITIES`` whose protocol it satisfies."""
    return frozenset(name for name, protocol in CAPABILITIES.items() if isinstance(backend, protocol))


def scores_sampling(backend: object) -> bool:
    """Whether ``backend.score`` takes the optional ``sampling`` keyword (``Scorer``)."""
    import inspect

    try:
        return "sampling" in inspect.signature(backend.score).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
