"""A fake scoring model, tokenizer and dataset for the attack tests (no torch, milliseconds).

BigramLM is a character bigram model "trained" on the member texts (add-alpha smoothing), so
members get a lower loss than unseen text, as a model that saw them would. It follows the
Backend contract: BOS is prepended, ``score(seqs, start)`` covers positions start..len-1 and
``mean``/``std`` are those of log p(z) under z ~ p(·|context).
"""

from collections.abc import Sequence

import numpy as np

from mia_core import hookimpl
from mia_core.types import Sample, TextResult, TokenScores

VOCAB = 128
BOS = 0


class CharTokenizer:
    name = "fake-chars"
    vocab_size = VOCAB
    eos_id = None
    bos_id = BOS

    def __init__(self, fingerprint: str = "fake-chars-v1") -> None:
        self.fingerprint = fingerprint

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [[ord(c) for c in t if 0 < ord(c) < VOCAB] for t in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return ["".join(chr(i) for i in seq if 0 < i < VOCAB) for seq in ids]


def bigram_logprobs(texts: Sequence[str], alpha: float = 0.05) -> np.ndarray:
    counts = np.full((VOCAB, VOCAB), alpha)
    for ids in CharTokenizer().encode_batch(texts):
        seq = [BOS, *ids]
        for a, b in zip(seq[:-1], seq[1:], strict=False):
            counts[a, b] += 1.0
    return np.log(counts / counts.sum(1, keepdims=True))


class BigramLM:
    """Bigram LM, a ``Scorer``; counts its score() calls and scored tokens."""

    def __init__(self, name: str, train_texts: Sequence[str] = (), context_length: int | None = None,
                 tokenizer: CharTokenizer | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer or CharTokenizer()
        self.table = bigram_logprobs(train_texts)
        self.max_context = context_length
        self.calls = 0
        self.batches: list[int] = []

    def describe(self) -> dict:
        return {"name": self.name, "kind": "fake"}

    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True) -> list[TokenScores]:
        self.calls += 1
        self.batches.append(len(sequences))
        starts = [start] * len(sequences) if isinstance(start, int) else list(start)
        out = []
        for seq, s in zip(sequences, starts, strict=True):
            ctx = np.array([BOS, *seq[:-1]], dtype=int)[s:]
            tgt = np.asarray(seq, dtype=int)[s:]
            rows = self.table[ctx]
            p = np.exp(rows)
            mean = (p * rows).sum(1)
            std = np.sqrt(np.maximum((p * rows**2).sum(1) - mean**2, 0.0))
            out.append(TokenScores(rows[np.arange(len(tgt)), tgt], rows.argmax(1), mean, std))
        return out


class TextOnlyAPI:
    """A ``TextGenerator`` only: echoes each prompt."""

    name = "fake-api"
    tokenizer = None

    def describe(self) -> dict:
        return {"name": self.name}

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, sampling: object) -> list[TextResult]:
        return [TextResult(p) for p in prompts]


class ListDataset:
    def __init__(self, name: str, samples: list[Sample]) -> None:
        self.name = name
        self.samples = samples
        self.length = len(samples)

    def __iter__(self):
        return iter(self.samples)


# The first member is extractable under greedy bigram decoding (every letter has one successor).
MEMBERS = ["ABCDEFGHIJKLMNOPQRSTUVWXYZ"] + [
    f"member text number {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(1, 20)]
NONMEMBERS = [f"{i} zyxw vut qpo nml {chr(65 + i)}KJ IHG FED CBA ## held-out !! {i * 3}" for i in range(20)]


class FakePlugin:
    """Registers fake-lm (trained on MEMBERS), fake-untrained, fake-ref (another tokenizer
    fingerprint), fake-api, and the fake-set / fake-unlabelled / fake-empty datasets."""

    def __init__(self) -> None:
        self.backends: dict[str, object] = {}

    def _make(self, name: str, options: dict) -> object:
        ctx = int(options["context"]) if "context" in options else None
        if name == "fake-lm":
            backend = BigramLM(name, MEMBERS, ctx)
        elif name == "fake-untrained":
            backend = BigramLM(name, (), ctx)
        elif name == "fake-ref":
            backend = BigramLM(name, MEMBERS[:2] + NONMEMBERS[:2], ctx, CharTokenizer("other-fingerprint"))
        else:
            backend = TextOnlyAPI()
        self.backends[name] = backend
        return backend

    @hookimpl
    def mia_register_backends(self, register):
        for name in ("fake-lm", "fake-untrained", "fake-ref", "fake-api"):
            register(name, self._make, description="test backend")

    @hookimpl
    def mia_register_tokenizers(self, register):
        register("fake-chars", lambda name, options: CharTokenizer(), description="test tokenizer")

    @hookimpl
    def mia_register_datasets(self, register):
        labelled = [Sample(f"m{i}", t, "member") for i, t in enumerate(MEMBERS)]
        labelled += [Sample(f"n{i}", t, "nonmember") for i, t in enumerate(NONMEMBERS)]
        labelled.insert(3, Sample("empty", "", "member"))
        register("fake-set", lambda name, options: ListDataset(name, labelled), description="labelled")
        unlabelled = [Sample(s.id, s.text) for s in labelled]
        register("fake-unlabelled", lambda name, options: ListDataset(name, unlabelled), description="no labels")
        register("fake-empty", lambda name, options: ListDataset(name, [Sample("e", "")]), description="empty")


def test_fake_lm_follows_the_score_contract() -> None:
    lm = BigramLM("x", MEMBERS)
    ids = CharTokenizer().encode_batch(["abc"])[0]
    full, tail = lm.score([ids], 0)[0], lm.score([ids], 1)[0]
    assert len(full.logprob) == 3 and len(tail.logprob) == 2
    np.testing.assert_allclose(full.logprob[1:], tail.logprob)
    assert np.all(full.std > 0)
