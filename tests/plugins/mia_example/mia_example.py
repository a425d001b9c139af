"""A minimal third-party mia plugin (the one docs/plugins.md walks through).

It registers a dataset, ``example-counting`` (generated sentences, labelled), a tokenizer,
``example-bytes`` (UTF-8 bytes: id = byte value, EOS = 256), a model, ``example-hf:ID``
(any transformers causal LM: a hub id in the local cache or a folder), and a command,
``mia example-peek``. Installing the distribution (``pip install ./tests/plugins/mia_example``)
is all it takes for ``mia datasets``, ``mia models``, ``mia prefix`` and ``mia prompt`` to see them.
"""

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import click
import numpy as np

from mia_core import Option, hookimpl
from mia_core.errors import MiaError
from mia_core.types import MEMBER, NONMEMBER, Sample, Sampling, TokenScores

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"]


class CountingDataset:
    """``n`` sentences that count in words from ``i``; even ids are labelled member.

    Options: ``n`` (number of samples, default 20), ``words`` (words per sample, default 30).
    """

    def __init__(self, name: str, n: int = 20, words: int = 30) -> None:
        self.name = name
        self.length = n
        self.words = words

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.length):
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(self.words))
            yield Sample(id=f"count-{i}", text=f"{i}: {text}.", label=MEMBER if i % 2 == 0 else NONMEMBER)


class ByteTokenizer:
    """One token per UTF-8 byte; decoding replaces invalid byte sequences."""

    vocab_size = 257
    eos_id = 256
    bos_id = None

    def __init__(self, name: str) -> None:
        self.name = name
        # Two tokenizers agree iff their fingerprints are equal: hash what defines this one.
        self.fingerprint = hashlib.sha256(b"utf-8 bytes, eos=256").hexdigest()[:16]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [bytes(i for i in seq if i < 256).decode("utf-8", errors="replace") for seq in ids]


class HFTokenizer:
    """A transformers tokenizer as a mia ``Tokenizer`` (no special tokens added)."""

    def __init__(self, name: str, source: str) -> None:
        from transformers import AutoTokenizer  # heavy: imported when a model is used, never at registration

        self.hf = AutoTokenizer.from_pretrained(source)
        self.name, self.vocab_size = name, len(self.hf)
        self.eos_id, self.bos_id = self.hf.eos_token_id, self.hf.bos_token_id
        self.fingerprint = hashlib.sha256(json.dumps(sorted(self.hf.get_vocab().items())).encode()).hexdigest()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.hf.encode(text, add_special_tokens=False) for text in texts]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.hf.batch_decode([[int(i) for i in row] for row in ids])


class HFModel:
    """A minimal model backend: generates (``generate``) and scores (``score``) one sequence
    at a time with any transformers causal LM. See ``mia_core.types`` for the contract."""

    def __init__(self, name: str, source: str) -> None:
        from transformers import AutoModelForCausalLM

        self.name, self.tokenizer = name, HFTokenizer(name, source)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype="float32").eval()
        self.bos = [self.tokenizer.bos_id] if self.tokenizer.bos_id is not None else []

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "bos_prepended": bool(self.bos),
                "max_context": getattr(self.model.config, "max_position_embeddings", None)}

    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling) -> list[list[int]]:
        import torch

        eos, out = self.tokenizer.eos_id, []
        options = {} if sampling.greedy else {"do_sample": True, "temperature": sampling.temperature,
                                              "top_k": sampling.top_k or 0, "top_p": sampling.top_p or 1.0}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        for prefix in prefixes:
            ids = torch.tensor([self.bos + [int(t) for t in prefix]])
            with torch.inference_mode():
                seq = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                          eos_token_id=eos, pad_token_id=eos, do_sample=False, **options)
            new = seq[0, ids.shape[1]:].tolist()
            out.append(new[:new.index(eos)] if eos in new else new)  # the EOS rule: cut before EOS
        return out

    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True) -> list[TokenScores]:
        import torch

        starts = [start] * len(sequences) if isinstance(start, int) else list(start)
        out = []
        for seq, first in zip(sequences, starts, strict=True):
            n = len(seq) - first
            lp, mean, std = (np.full(n, np.nan, np.float32) for _ in range(3))
            am = np.full(n, -1)
            lo = min(max(first, 1 - len(self.bos)), len(seq))  # without BOS, token 0 has no context: NaN
            if lo < len(seq):
                with torch.inference_mode():
                    logits = self.model(torch.tensor([self.bos + [int(t) for t in seq]])).logits[0].float()
                rows = torch.log_softmax(logits, -1)[torch.arange(lo, len(seq)) + len(self.bos) - 1]
                lp[lo - first:] = rows[torch.arange(len(rows)), torch.tensor([int(t) for t in seq[lo:]])].numpy()
                am[lo - first:] = rows.argmax(-1).numpy()
                if distribution:  # mean and std of log p(z), z ~ p(.|context): Min-K%++
                    mu = (rows.exp() * rows).sum(-1)
                    mean[lo - first:] = mu.numpy()
                    std[lo - first:] = ((rows.exp() * rows.square()).sum(-1) - mu.square()).clamp_min(0).sqrt().numpy()
            out.append(TokenScores(lp, am, mean, std))
        return out


# The dataset's options, declared once: the core rejects any other option and any value of the
# wrong type before make_dataset runs, converts the values, and prints this as
# `mia datasets --options example-counting`.
COUNTING_OPTIONS = (
    Option("n", int, 20, "number of samples"),
    Option("words", int, 30, "words per sample"),
)


def make_dataset(name: str, options: dict[str, Any]) -> CountingDataset:
    """Factories get the name the user typed and the options given, already typed (ints here)."""
    # Bad input is a MiaError: mia prints one line and exits 1, no traceback.
    n, words = options.get("n", 20), options.get("words", 30)
    if n < 1 or words < 1:
        raise MiaError(f"{name}: options n and words must be at least 1, got n={n}, words={words}")
    return CountingDataset(name, n=n, words=words)


def make_tokenizer(name: str, options: dict[str, Any]) -> ByteTokenizer:
    return ByteTokenizer(name)


def _is_hf_name(name: str) -> bool:
    return name.lower().startswith("example-hf:") and len(name) > len("example-hf:")


def make_hf_tokenizer(name: str, options: dict[str, Any]) -> HFTokenizer:
    return HFTokenizer(name, name.split(":", 1)[1])


def make_hf_model(name: str, options: dict[str, Any]) -> HFModel:
    return HFModel(name, name.split(":", 1)[1])


@hookimpl
def mia_register_datasets(register) -> None:
    register("example-counting", make_dataset, options=COUNTING_OPTIONS,
             description="Generated counting sentences (example plugin)")


@hookimpl
def mia_register_tokenizers(register) -> None:
    register("example-bytes", make_tokenizer, description="UTF-8 byte tokenizer (example plugin)",
             aliases=("example-utf8",))
    register("example-hf:ID", make_hf_tokenizer, match=_is_hf_name, options=(),
             description="the tokenizer of example-hf:HUB_ID or example-hf:FOLDER (example plugin)")


@hookimpl
def mia_register_backends(register) -> None:
    # capabilities= promises what the loaded object will do, so commands can refuse a model
    # before loading it; the core checks the promise against the object's methods.
    # options=() declares that it takes none: any --model-option is refused by the core.
    register("example-hf:ID", make_hf_model, match=_is_hf_name, capabilities=("generate", "score"), options=(),
             description="any transformers causal LM, example-hf:HUB_ID or example-hf:FOLDER (example plugin)")


@hookimpl
def mia_register_commands(cli) -> None:
    @cli.command(name="example-peek")
    @click.argument("dataset")
    @click.option("-n", "count", type=click.IntRange(min=1), default=3, show_default=True)
    def peek(dataset: str, count: int) -> None:
        """Print the first samples of DATASET (example plugin)."""
        from mia_core import registry

        for sample in itertools.islice(registry.datasets.create(dataset), count):
            click.echo(f"{sample.id}\t{sample.label or '-'}\t{sample.text[:60]}")
