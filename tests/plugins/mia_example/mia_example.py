"""A minimal third-party mia plugin (the one docs/plugins.md walks through).

It registers a dataset, ``example-counting`` (generated sentences, labelled), and a
tokenizer, ``example-bytes`` (UTF-8 bytes: id = byte value, EOS = 256). Installing the
distribution (``pip install ./tests/plugins/mia_example``) is all it takes for
``mia datasets``, ``mia models`` and ``mia prefix`` to see them.
"""

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from mia_core import hookimpl
from mia_core.errors import MiaError
from mia_core.types import MEMBER, NONMEMBER, Sample

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


def make_dataset(name: str, options: dict[str, Any]) -> CountingDataset:
    """Factories get the name the user typed and the ``--dataset-option`` values (strings)."""
    # Bad input is a MiaError: mia prints one line and exits 1, no traceback.
    unknown = set(options) - {"n", "words"}
    if unknown:
        raise MiaError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))} (known: n, words)")
    try:
        return CountingDataset(name, n=int(options.get("n", 20)), words=int(options.get("words", 30)))
    except ValueError:
        raise MiaError(f"{name}: options n and words must be integers, got {options}") from None


def make_tokenizer(name: str, options: dict[str, Any]) -> ByteTokenizer:
    return ByteTokenizer(name)


@hookimpl
def mia_register_datasets(register) -> None:
    register("example-counting", make_dataset, description="Generated counting sentences (example plugin)")


@hookimpl
def mia_register_tokenizers(register) -> None:
    register("example-bytes", make_tokenizer, description="UTF-8 byte tokenizer (example plugin)",
             aliases=("example-utf8",))
