"""Membership-inference signals computed from teacher-forced token scores (pure numpy).

Convention for every signal: a HIGHER score means MORE LIKELY A MEMBER. Papers state
some of these as losses (lower = member); we negate those so that all signals rank the
same way and one ROC routine serves them all.

- ``loss``   −(mean token NLL) = mean log p(x_t | x_<t)            (Yeom et al. 2018)
- ``zlib``   −(mean token NLL) / zlib(text)                        (Carlini et al. 2021)
             zlib(text) = len(zlib.compress(text.encode("utf-8"))) in bytes, level 6
- ``mink``   mean of the ⌊k·n⌋ (at least 1) lowest log p(x_t | x_<t)   (Shi et al. 2023)
- ``minkpp`` mean of the ⌊k·n⌋ (at least 1) lowest (log p(x_t) − μ_t) / σ_t, where μ_t and σ_t
             are the mean and standard deviation of log p(z) with z ~ p(· | x_<t)
             (Zhang et al. 2024)
- ``mink_<k>``, ``minkpp_<k>``: the same at each fraction k of a sweep (``--min-k-fraction 0.1,0.2,0.5``),
             all from the one forward pass
- ``ref``    NLL_ref − NLL_target: the log of the perplexity ratio of a reference model to the
             target (Carlini et al. 2021 "comparing to other models"; MIMIR's reference attack).
             Per token when both models share a tokenizer, per UTF-8 byte when they do not
             (per-token means of different tokenizations are not comparable).
"""

import zlib
from collections.abc import Sequence

import numpy as np

from mia_core.types import TokenScores

SIGNALS = ("loss", "zlib", "mink", "minkpp", "ref", "recall", "ne")
TARGET_SIGNALS = ("loss", "zlib", "mink", "minkpp")  # the default: need only the target model's one pass
EXTRA_PASS_SIGNALS = ("ref", "recall", "ne")  # need more forward passes (docs/attack.md gives the cost)
DEFAULT_K = 0.2


def parse_signals(text: str) -> list[str]:
    """``"loss,zlib"`` → ``["loss", "zlib"]``; unknown names raise ValueError naming them."""
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signal(s) {', '.join(unknown)}; choose from {', '.join(SIGNALS)}")
    if not names:
        raise ValueError(f"no signal given; choose from {', '.join(SIGNALS)}")
    return list(dict.fromkeys(names))


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.2"`` → ``[0.1, 0.2]`` (the Min-K% fractions of a sweep, in order, duplicates dropped);
    a value that is not a number in (0, 1] raises ValueError naming it."""
    values: list[float] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number (give fractions in (0, 1], e.g. 0.1,0.2)") from None
        if not 0 < value <= 1:
            raise ValueError(f"{part} is not in (0, 1] (the fraction of a string's tokens Min-K% averages)")
        values.append(value)
    if not values:
        raise ValueError("no fraction given (e.g. 0.2, or 0.1,0.2,0.5 for a sweep)")
    return list(dict.fromkeys(values))


def fraction_list(k: float | Sequence[float]) -> list[float]:
    return [float(k)] if isinstance(k, (int, float, np.floating)) else [float(v) for v in k]


def swept_name(signal: str, k: float) -> str:
    """The name of a Min-K%/Min-K%++ signal at one fraction of a sweep: ``mink_0.1``."""
    return f"{signal}_{k:g}"


def expand_signals(signals: Sequence[str], k: float | Sequence[float]) -> list[str]:
    """Stored signal names: ``mink``/``minkpp`` become one name per fraction when several are
    swept (``mink_0.1``, ``mink_0.2``); with one fraction they keep their plain names."""
    ks = fraction_list(k)
    out: list[str] = []
    for name in signals:
        if name in ("mink", "minkpp") and len(ks) > 1:
            out.extend(swept_name(name, v) for v in ks)
        else:
            out.append(name)
    return out


def scored_positions(scores: TokenScores) -> TokenScores:
    """Only the positions the model could score: a model without BOS has no context for a
    sequence's first token, and backends mark that position NaN."""
    keep = np.isfinite(np.asarray(scores.logprob, dtype=np.float64))
    if keep.all():
        return scores
    return TokenScores(np.asarray(scores.logprob)[keep], np.asarray(scores.argmax)[keep],
                       np.asarray(scores.mean)[keep], np.asarray(scores.std)[keep])


def mean_nll(logprob: np.ndarray) -> float:
    """Mean negative log-likelihood (nats per token); NaN when nothing was scored."""
    return float(-np.mean(logprob)) if len(logprob) else float("nan")


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021's zlib entropy)."""
    return len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: np.ndarray, k: float) -> float:
    if len(values) == 0:
        return float("nan")
    n = max(1, int(len(values) * k))
    return float(np.mean(np.partition(values, n - 1)[:n]))


def loss_signal(scores: TokenScores) -> float:
    return -mean_nll(scores.logprob)


def zlib_signal(scores: TokenScores, text: str) -> float:
    return -mean_nll(scores.logprob) / max(zlib_length(text), 1)


def mink_signal(scores: TokenScores, k: float = DEFAULT_K) -> float:
    return _lowest_mean(np.asarray(scores.logprob, dtype=np.float64), k)


def minkpp_token_scores(scores: TokenScores) -> np.ndarray:
    """Per-token (log p(x_t) − μ_t) / σ_t; 0 where σ_t = 0 (a one-hot distribution), NaN where the
    backend gave no distribution statistics (so the signal is missing, not constant)."""
    logprob = np.asarray(scores.logprob, dtype=np.float64)
    mu = np.asarray(scores.mean, dtype=np.float64)
    sigma = np.asarray(scores.std, dtype=np.float64)
    safe = np.where(sigma > 0, sigma, 1.0)
    return np.where(np.isnan(sigma), np.nan, np.where(sigma > 0, (logprob - mu) / safe, 0.0))


def minkpp_signal(scores: TokenScores, k: float = DEFAULT_K) -> float:
    return _lowest_mean(minkpp_token_scores(scores), k)


def ref_signal(target_nll: float, reference_nll: float) -> float:
    """Log perplexity ratio reference/target (both as NLL in the same units)."""
    return reference_nll - target_nll


def target_signals(scores: TokenScores, text: str, signals: Sequence[str],
                   k: float | Sequence[float] = DEFAULT_K) -> dict[str, float]:
    """The requested target-only signals of one scored string (unscorable positions left out),
    under the names of :func:`expand_signals` (one Min-K%/Min-K%++ value per fraction of ``k``)."""
    scores = scored_positions(scores)
    ks = fraction_list(k)
    out: dict[str, float] = {}
    for name in signals:
        if name == "loss":
            out[name] = loss_signal(scores)
        elif name == "zlib":
            out[name] = zlib_signal(scores, text)
        elif name in ("mink", "minkpp"):
            per_token = (np.asarray(scores.logprob, dtype=np.float64) if name == "mink"
                         else minkpp_token_scores(scores))
            for value in ks:
                out[swept_name(name, value) if len(ks) > 1 else name] = _lowest_mean(per_token, value)
    return out
