"""Do llama.cpp and bf16 change mia's greedy verdicts? gemma-3-270m on the embedded corpus.

For each document of the embedded corpus (130): prefix = its first ``--prefix`` tokens, true suffix =
the next ``--suffix`` tokens. Each backend continues every prefix greedily for ``--suffix`` tokens;
the verdicts are those of `mia prompt`: exact extraction (continuation == true suffix) and matched
length (leading tokens equal to the true suffix). Backends: HF fp32 (mia's CPU default, the
reference), HF bf16, and llama.cpp on the same GGUF file (quantized weights used as they are).

For every row whose continuation differs from the reference's, prints where they part and the
reference's logit gap between the two tokens chosen there (a near-tie has a small gap).

Attack AUCs (``--part aucs``): each backend scores the same prefix + suffix windows (teacher-forced,
every token but the first); the loss, Min-K% and Min-K%++ signals of mia attack (mia_core.attack.signals,
k = 0.2) against the corpus's member/nonmember labels, ROC AUC over the rows.

    python bench/llamacpp_agreement.py [--prefix 32] [--suffix 32] [--batch 32] [--part all|verdicts|aucs]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from mia_core import registry
from mia_core.attack import signals as sig
from mia_core.attack.metrics import roc_auc
from mia_core.types import Sampling

BACKENDS = {"HF fp32": ("gemma-3-270m", {"device": "cpu", "dtype": "float32"}),
            "HF bf16": ("gemma-3-270m", {"device": "cpu", "dtype": "bfloat16"}),
            "llama.cpp Q4_K_M": ("llamacpp:gemma-3-270m", {})}


def host() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "unknown CPU")
    flags = open("/proc/cpuinfo").read()
    extras = [f for f in ("avx512_bf16", "amx_bf16", "avx2") if f" {f}" in flags]
    return f"{model} ({', '.join(extras)}), {len(__import__('os').sched_getaffinity(0))} CPUs"


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def windows(prefix: int, suffix: int) -> tuple[list[list[int]], list[list[int]], list[bool]]:
    """Prefixes, true suffixes and member labels of the corpus documents long enough for both."""
    tok = registry.tokenizers.create("gemma-3-270m")
    samples = list(registry.datasets.create("corpus"))
    ids = tok.encode_batch([s.text for s in samples])
    kept = [(row, s.label == "member") for row, s in zip(ids, samples, strict=True) if len(row) >= prefix + suffix]
    return ([row[:prefix] for row, _ in kept], [row[prefix:prefix + suffix] for row, _ in kept],
            [member for _, member in kept])


def attack_aucs(backend: Any, rows: list[list[int]], members: list[bool], batch: int) -> dict[str, float]:
    """ROC AUC of mia attack's loss, Min-K% and Min-K%++ signals on ``rows`` (scored from token 1)."""
    scores = [s for i in range(0, len(rows), batch) for s in backend.score(rows[i:i + batch], 1, distribution=True)]
    signals = {"loss": sig.loss_signal, "min-k": sig.mink_signal, "min-k++": sig.minkpp_signal}
    return {name: roc_auc(np.asarray(members), np.asarray([fn(s) for s in scores])) for name, fn in signals.items()}


def generate(backend: Any, prefixes: list[list[int]], n: int, batch: int) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    out: list[list[int]] = []
    for i in range(0, len(prefixes), batch):
        out.extend(backend.generate(prefixes[i:i + batch], n, Sampling()))
    return out, time.perf_counter() - start


def matched(row: list[int], truth: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(row, truth, strict=False)) if a != b), min(len(row), len(truth)))


def gaps(reference: Any, prefixes: list[list[int]], pairs: list[tuple[list[int], list[int]]],
         batch: int) -> list[tuple[int, float]]:
    """For each pair of rows (a, b): where they part, and |logit(a_k) - logit(b_k)| under ``reference``
    (EOS for a short row), from the log-probs of both tokens in batched scoring calls."""
    eos = reference.tokenizer.eos_id
    parts = [matched(a, b) for a, b in pairs]
    sequences, starts = [], []
    for prefix, (a, b), k in zip(prefixes, pairs, parts, strict=True):
        context = prefix + a[:k]
        for token in ((a + [eos])[k], (b + [eos])[k]):
            sequences.append(context + [token])
            starts.append(len(context))
    logprobs = [float(s.logprob[0]) for i in range(0, len(sequences), batch)
                for s in reference.score(sequences[i:i + batch], starts[i:i + batch], distribution=False)]
    return [(k, abs(logprobs[2 * j] - logprobs[2 * j + 1])) for j, k in enumerate(parts)]


def compare(name: str, rows: list[list[int]], ref_rows: list[list[int]], suffixes: list[list[int]],
            prefixes: list[list[int]], reference: Any) -> dict[str, Any]:
    exact = [r == s for r, s in zip(rows, suffixes, strict=True)]
    ref_exact = [r == s for r, s in zip(ref_rows, suffixes, strict=True)]
    lengths = [matched(r, s) for r, s in zip(rows, suffixes, strict=True)]
    ref_lengths = [matched(r, s) for r, s in zip(ref_rows, suffixes, strict=True)]
    differ = [i for i, (a, b) in enumerate(zip(rows, ref_rows, strict=True)) if a != b]
    print(f"\n{name} vs HF fp32 over {len(rows)} rows: exact extractions {sum(exact)} vs {sum(ref_exact)}, "
          f"exact verdict differs on {sum(a != b for a, b in zip(exact, ref_exact, strict=True))} rows, "
          f"matched length differs on {sum(a != b for a, b in zip(lengths, ref_lengths, strict=True))} rows, "
          f"continuation differs on {len(differ)} rows")
    found = gaps(reference, [prefixes[i] for i in differ], [(ref_rows[i], rows[i]) for i in differ], 16)
    for i, (k, g) in zip(differ, found, strict=True):
        print(f"  row {i:3d}: part at token {k:2d}; matched length {ref_lengths[i]:2d} (fp32) vs {lengths[i]:2d}; "
              f"fp32 logit gap between the two tokens {g:.4f}")
    gap_values = [g for _, g in found]
    return {"differ": len(differ), "exact_flips": sum(a != b for a, b in zip(exact, ref_exact, strict=True)),
            "length_flips": sum(a != b for a, b in zip(lengths, ref_lengths, strict=True)),
            "max_gap": max(gap_values, default=0.0),
            "median_gap": float(np.median(gap_values)) if gap_values else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--suffix", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--part", choices=("all", "verdicts", "aucs"), default="all")
    args = parser.parse_args()
    print(f"CPU: {host()}; load average at start {load()}")
    prefixes, suffixes, members = windows(args.prefix, args.suffix)
    print(f"{len(prefixes)} rows of the embedded corpus ({sum(members)} members): {args.prefix}-token prefixes, "
          f"{args.suffix}-token suffixes, greedy, batch {args.batch}")
    backends = {name: registry.backends.create(model, options) for name, (model, options) in BACKENDS.items()}
    if args.part in ("all", "aucs"):
        for name, backend in backends.items():
            aucs = attack_aucs(backend, [p + s for p, s in zip(prefixes, suffixes, strict=True)], members, args.batch)
            print(f"{name}: attack ROC AUC over {len(prefixes)} rows: "
                  + ", ".join(f"{signal} {auc:.4f}" for signal, auc in aucs.items()) + f" (load average {load()})")
    if args.part == "aucs":
        return
    rows = {}
    for name, backend in backends.items():
        rows[name], seconds = generate(backend, prefixes, args.suffix, args.batch)
        print(f"{name}: generated in {seconds:.1f} s (load average {load()})")
    reference = backends["HF fp32"]
    summary = {name: compare(name, rows[name], rows["HF fp32"], suffixes, prefixes, reference)
               for name in ("HF bf16", "llama.cpp Q4_K_M")}
    print(f"\nsummary (rows {len(prefixes)}): {summary}; load average at end {load()}")


if __name__ == "__main__":
    main()
