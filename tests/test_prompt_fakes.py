"""A fake tokenizer, token backend and text (API) backend for the prompt tests.

Registered by tests with the ``register_plugin`` fixture (or, in subprocesses, by
``run_cli``). The "model" is a deterministic function of the last two tokens, so batched
and one-at-a-time greedy output agree by construction and the teacher-forced check can
be compared with generation exactly; the real-model tests check the same on real models.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from map_fixtures import write_map

from mia_core import hookimpl
from mia_core.errors import BackendOutOfMemory
from mia_core.types import Sampling, TextResult, TokenScores

VOCAB = 50
EOS = 0
CALLS: list[dict] = []  # every backend call, for assertions (reset by tests)
SUBMISSIONS: list[str] = []  # batch-API submissions (each would be paid for)


class FakeTokenizer:
    """Words ``tN`` <-> ids N. Variant "b" shifts ids by 100 and splits odd words in two."""

    def __init__(self, name: str, variant: str = "a") -> None:
        self.name, self.variant = name, variant
        self.vocab_size = VOCAB if variant == "a" else 2 * VOCAB + 101
        self.eos_id, self.bos_id = EOS, None
        self.fingerprint = hashlib.sha256(f"fake-{variant}".encode()).hexdigest()

    def encode_batch(self, texts):
        out = []
        for text in texts:
            ids = []
            for word in text.split():
                n = int(word[1:]) if word[:1] == "t" and word[1:].isdigit() else sum(map(ord, word)) % VOCAB
                if self.variant == "a":
                    ids.append(n)
                else:
                    ids += [100 + n] if n % 2 == 0 else [100 + n, 99]
            out.append(ids)
        return out

    def decode_batch(self, ids):
        if self.variant == "a":
            return [" ".join(f"t{int(i)}" for i in row) for row in ids]
        return [" ".join(f"t{int(i) - 100}" for i in row if int(i) != 99) for row in ids]


def next_token(a: int, b: int) -> int:
    return (a * 7 + b * 3 + 1) % VOCAB


class RuleLM:
    """Token backend: greedy next token = next_token(last two); sampling from a seeded rng."""

    def __init__(self, name, options) -> None:
        self.name = name
        self.variant = "b" if name.endswith("-b") else "a"
        self.tokenizer = FakeTokenizer("fake-tok-" + self.variant, self.variant)
        self.delay = float(options.get("delay", 0))
        self.oom_above = int(options.get("oom_above", 0))
        self.trace = options.get("trace")  # a file that gets one line per call (for kill tests)

    def describe(self):
        return {"name": self.name, "kind": "fake", "bos_prepended": False}

    def _check(self, n, kind):
        CALLS.append({"kind": kind, "n": n})
        if self.trace:
            with open(self.trace, "a") as f:
                f.write(f"{kind} {n}\n")
        if self.delay:
            time.sleep(self.delay)
        if self.oom_above and n > self.oom_above:
            raise BackendOutOfMemory(f"fake OOM at batch {n}")

    def _map(self, t):  # variant b works in the shifted id space
        return t - 100 if self.variant == "b" and t >= 100 else t % VOCAB

    def generate(self, prefixes, max_new_tokens, sampling: Sampling):
        self._check(len(prefixes), "generate")
        lens = {len(p) for p in prefixes}
        assert len(lens) == 1, "the prompt loop must never send prefixes of different lengths together"
        rng = np.random.default_rng(sampling.seed) if not sampling.greedy else None
        out = []
        for p in prefixes:
            seq, new = [self._map(t) for t in p if not (self.variant == "b" and t == 99)], []
            for _ in range(max_new_tokens):
                t = next_token(seq[-2], seq[-1]) if rng is None else int(rng.integers(VOCAB))
                if t == EOS:  # the contract's EOS rule: cut before EOS
                    break
                seq.append(t)
                new.append(t + (100 if self.variant == "b" else 0))
            out.append(new)
        return out

    def score(self, sequences, start=0, *, distribution=True):
        self._check(len(sequences), "score")
        out = []
        for seq in sequences:
            s = [self._map(t) for t in seq]
            # No BOS: position 0 has no context, so it is NaN with argmax -1 (TokenScores' conventions).
            argmax = np.array([next_token(s[j - 2], s[j - 1]) if j else -1 for j in range(start, len(s))])
            truth = np.array(s[start:])
            logprob = np.where(argmax == truth, -0.1, -2.0).astype(np.float32)
            logprob[argmax == -1] = np.nan
            moments = np.where(np.isnan(logprob) | (not distribution), np.nan, 1.0)
            out.append(TokenScores(logprob, argmax, moments * 0, moments))
        return out


class FakeAPI:
    """Text backend with usage/cost, errors on prompts starting with ``t13``, a batch API."""

    def __init__(self, name, options) -> None:
        self.name = name
        self.tokenizer = None
        self.price = float(options.get("price", 0.01))  # USD per request
        self.fail_after = int(options.get("fail_after", 0))  # batch API: crash after N results

    def describe(self):
        return {"name": self.name, "kind": "fake-api"}

    def estimate_cost(self, texts, max_new_tokens):
        return self.price * len(texts)

    def render_request(self, text, max_new_tokens):
        return {"model": "fake", "max_tokens": max_new_tokens, "messages": [{"role": "user", "content": text}]}

    def _answer(self, text, n):
        words = text.split()
        if words and words[0] == "t13":
            return TextResult("", error="fake API error: overloaded")
        ids = [int(w[1:]) for w in words]
        new = [next_token(ids[-2], ids[-1])]
        for _ in range(n + 5):  # answers longer than asked: the loop truncates to max_length
            new.append(next_token(ids[-1] if len(new) < 2 else new[-2], new[-1]))
        return TextResult(" ".join(f"t{t}" for t in new), stop_reason="max_tokens",
                          usage={"input_tokens": len(words), "output_tokens": len(new), "cost_usd": self.price})

    def generate_text(self, prompts, max_new_tokens, sampling):
        CALLS.append({"kind": "generate_text", "n": len(prompts)})
        return [self._answer(p, max_new_tokens) for p in prompts]

    def run_batch(self, items, max_new_tokens, sampling, state, save_state, on_results):
        if "batch_id" not in state:
            state["batch_id"] = f"batch_{len(SUBMISSIONS)}"
            state["rows"] = [row for row, _ in items]
            SUBMISSIONS.append(state["batch_id"])
            save_state(state)
        texts = dict(items)
        results = [(row, self._answer(texts[row], max_new_tokens)) for row in reversed(state["rows"]) if row in texts]
        for k, pair in enumerate(results):  # out of order, one at a time
            if self.fail_after and k == self.fail_after:
                raise RuntimeError("fake crash while fetching results")
            on_results([pair])


class FakePlugin:
    @hookimpl
    def mia_register_tokenizers(self, register):
        register("fake-tok-a", lambda name, options: FakeTokenizer(name, "a"))
        register("fake-tok-b", lambda name, options: FakeTokenizer(name, "b"))

    @hookimpl
    def mia_register_backends(self, register):
        register("fake-lm", RuleLM, description="fake token model")
        register("fake-lm-b", RuleLM, description="fake token model with another tokenizer")
        register("fake-api", FakeAPI, description="fake API model")


def make_fake_map(folder: Path, n: int = 7, p: int = 4, s: int = 6, seed: int = 0) -> Path:
    """A complete prefix map in the fake tokenizer; row 13-style errors come from prefix t13."""
    tok = FakeTokenizer("fake-tok-a")
    rng = np.random.default_rng(seed)
    prefixes = rng.integers(1, VOCAB, size=(n, p))
    suffixes = []
    for i, row in enumerate(prefixes):  # half the suffixes are exactly what greedy decoding gives
        seq = list(row)
        for _ in range(s):
            seq.append(next_token(seq[-2], seq[-1]) if i % 2 == 0 else int(rng.integers(1, VOCAB)))
        suffix = seq[p:]
        suffixes.append(suffix[:suffix.index(EOS)] if EOS in suffix else suffix)
    suffixes[-1] = suffixes[-1][:3]  # a suffix cut short by a document end
    return write_map(folder, prefixes, suffixes, suffix_tokens=s, tokenizer=tok.name, fingerprint=tok.fingerprint,
                     labels=["member" if i % 2 == 0 else "nonmember" for i in range(n)],
                     ids=[f"doc{i}" for i in range(n)], attrs={"dataset": "fake"})


CLI_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_prompt_fakes import FakePlugin
from mia_core.plugins import pm
pm.register(FakePlugin())
from mia_core.cli import cli
cli(sys.argv[1:], prog_name="mia")
"""


def cli_command(*args: str) -> list[str]:
    """argv running ``mia ARGS`` in a fresh Python process with the fake plugin registered."""
    import sys

    return [sys.executable, "-c", CLI_SCRIPT.format(tests=str(Path(__file__).parent)), *args]
