"""The neighbourhood attack (Mattern et al. 2023, "Membership Inference Attacks against Language
Models via Neighbourhood Comparison"; MIMIR's ``ne``).

    ne(x) = mean_j NLL(x̃_j) − NLL(x)

NLL being the target's mean negative log-likelihood per token and x̃_1..x̃_m neighbours of x: texts
that differ from x in a few words. A member's loss sits below its neighbours' (the model saw x, not
x̃), so ne is larger for members: higher = member. Cost: m more forward passes per string.

Neighbours. Mattern et al. replace words by a masked LM's proposals (BERT). No masked LM ships
offline with a PyPI package mia can install, so mia uses a deterministic word-level perturbation
instead: in neighbour j of string i, ⌈fraction · words⌉ words (at least one; words are ``\\w+``
runs) are chosen at random and each is replaced by a word drawn from the word pool of all strings
attacked (frequency-weighted, never the word itself), with a generator seeded by (seed, i, j). The
rest of the text (spacing, punctuation) is kept byte for byte. Same seed, same neighbours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+")
DEFAULT_NEIGHBOURS = 10
DEFAULT_FRACTION = 0.1


def word_pool(texts: Sequence[str]) -> list[str]:
    """Every word occurrence of ``texts`` (a frequency-weighted pool to draw replacements from)."""
    return [w for t in texts for w in WORD.findall(t)]


def neighbours(text: str, pool: Sequence[str], count: int, seed: int, index: int,
               fraction: float = DEFAULT_FRACTION) -> list[str]:
    """``count`` neighbours of ``text`` (empty when it has no word or the pool offers no other word)."""
    spans = [m.span() for m in WORD.finditer(text)]
    if not spans or len(set(pool)) < 2:
        return []
    out = []
    for j in range(count):
        rng = np.random.default_rng([seed, index, j])
        n = min(len(spans), max(1, math.ceil(fraction * len(spans))))
        chosen = sorted(rng.choice(len(spans), size=n, replace=False).tolist())
        pieces, last = [], 0
        for c in chosen:
            a, b = spans[c]
            original = text[a:b]
            replacement = pool[int(rng.integers(len(pool)))]
            while replacement == original:  # the pool holds another word (checked above)
                replacement = pool[int(rng.integers(len(pool)))]
            pieces += [text[last:a], replacement]
            last = b
        pieces.append(text[last:])
        out.append("".join(pieces))
    return out


def neighbour_signal(nll: float, neighbour_nlls: Sequence[float]) -> float:
    """mean neighbour NLL − NLL(x) over the finite neighbour losses (NaN when none)."""
    values = np.asarray(neighbour_nlls, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values) or not np.isfinite(nll):
        return float("nan")
    return float(values.mean() - nll)
