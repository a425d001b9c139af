"""Canaries (Carlini et al. 2019, "The Secret Sharer"): random secrets inserted into the fine-tuning
data a known number of times, and their exposure.

A canary is a fixed sentence that ends in a secret of ``digits`` random decimal digits
(``"The access code of vault 3 is 4 0 9 1 7 2"``): the candidate space R is every digit string of
that length (``|R| = 10**digits``). The model ranks the true secret among candidates by the
log-perplexity of the secret given the sentence; exposure = log2|R| − log2(rank), so a secret the
model ranks first has the maximum exposure log2|R| and a random guess about 1 bit.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_REPEATS = (1, 2, 4, 8, 16)
DEFAULT_DIGITS = 6
DEFAULT_CANDIDATES = 1000  # sampled candidates per canary when R is larger than this


@dataclass(frozen=True)
class Canary:
    """One canary: ``prefix + secret`` is inserted ``repeats`` times (0: a control never inserted)."""

    id: str
    prefix: str
    secret: str
    repeats: int

    @property
    def text(self) -> str:
        return self.prefix + self.secret


def _digits(rng: random.Random, n: int) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(n))


def make_canaries(per_level: int, seed: int, repeats: Sequence[int] = DEFAULT_REPEATS,
                  digits: int = DEFAULT_DIGITS) -> list[Canary]:
    """``per_level`` canaries at each repetition count, plus ``per_level`` controls (repeats 0)
    that are never inserted: the exposure a canary has without training on it."""
    rng = random.Random(f"canaries:{seed}")
    out = []
    for level in (0, *repeats):
        for _ in range(per_level):
            number = len(out) + 1
            out.append(Canary(f"canary/{number:03d}", f"The access code of vault {number} is ", _digits(rng, digits),
                              level))
    return out


def training_texts(canaries: Sequence[Canary]) -> list[str]:
    """Each inserted canary as many times as its repetition count."""
    return [c.text for c in canaries for _ in range(c.repeats)]


def candidate_secrets(canary: Canary, digits: int, n_candidates: int, seed: int) -> tuple[list[str], int, bool]:
    """The secrets the canary is ranked against (the true one excluded), the size of the
    candidate space and whether the list is the whole space (exact rank) or a uniform sample."""
    space = 10 ** digits
    if space - 1 <= n_candidates:
        everything = [" ".join(f"{v:0{digits}d}") for v in range(space)]
        return [s for s in everything if s != canary.secret], space, True
    rng = random.Random(f"candidates:{seed}:{canary.id}")
    picked: set[str] = set()
    while len(picked) < n_candidates:
        s = _digits(rng, digits)
        if s != canary.secret:
            picked.add(s)
    return sorted(picked), space, False


def exposure(canary_nll: float, candidate_nll: np.ndarray, space: int, exact: bool) -> float:
    """Exposure of a secret whose log-perplexity is ``canary_nll``, ranked among candidates.

    Ties count against the canary (pessimistic rank): a candidate with an NLL lower than *or
    equal to* the canary's ranks above it, so a model that cannot tell the secret from the others
    shows no exposure. Exact (``candidate_nll`` holds every other secret of R): rank = 1 + the
    number of candidates with NLL ≤ the canary's, and exposure = log2|R| − log2(rank). Sampled (M
    candidates drawn uniformly from R): the fraction of R ranked at or above the secret is
    estimated as (at_or_above + 1) / (M + 1), so exposure = log2(M + 1) − log2(at_or_above + 1),
    the same formula with M + 1 = |R| when exact. A sampled estimate cannot exceed log2(M + 1): a
    secret ranked above every sample is reported at that ceiling (a lower bound of its true exposure).
    """
    candidate_nll = np.asarray(candidate_nll, dtype=np.float64)
    at_or_above = int(np.sum(candidate_nll <= canary_nll))
    ranked = space if exact else len(candidate_nll) + 1
    return math.log2(ranked) - math.log2(at_or_above + 1)


def exposure_ceiling(space: int, n_candidates: int, exact: bool) -> float:
    """The largest exposure the ranking can show."""
    return math.log2(space if exact else n_candidates + 1)
