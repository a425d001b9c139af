"""Sharded runs: ``mia prompt --shard I/N`` generates only the rows ``i`` with ``i mod N == I``.

A run of ``num_strings`` rows is split round-robin, so every shard gets the same mix of
map rows and (with wraparound) the same share of work. Shard ``I`` stores its rows in
order, so its ``k``-th row is run row ``I + k*N``: nothing but ``shard`` (recorded in the
run's attributes) is needed to put the rows back in place (``mia merge``, ``mia_core.extraction.merge``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mia_core.errors import UsageError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def size(self, num_strings: int) -> int:
        """How many of the run's rows belong to this shard."""
        return len(range(self.index, num_strings, self.count))

    def run_rows(self, done: int, batch_size: int, num_strings: int) -> np.ndarray:
        """The run rows of the next batch after ``done`` rows of this shard were written."""
        first = self.index + done * self.count
        return np.arange(first, min(num_strings, first + batch_size * self.count), self.count)


WHOLE = Shard(0, 1)


def parse_shard(text: str | None) -> Shard:
    """``"I/N"`` → ``Shard(I, N)``; None → the whole run. Bad input is a usage error."""
    if text is None or text == "":
        return WHOLE
    index, sep, count = str(text).partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise UsageError(f"expects I/N with 0 <= I < N (e.g. 3/8), got {text!r}", option="shard")
    return shard


def shard_of(attrs: dict) -> Shard:
    """The shard a run file was made for (the whole run when it records none)."""
    recorded = attrs.get("shard")
    return parse_shard(recorded) if recorded else WHOLE
