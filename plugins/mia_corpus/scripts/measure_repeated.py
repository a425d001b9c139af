"""Measure what a model does on the embedded corpus's repeated texts (the figures in docs/datasets.md).

    python plugins/mia_corpus/scripts/measure_repeated.py [--model gemma-3-270m] [--prefix-tokens 32]

For each sample of the ``repeated/`` group and its length-matched generated control: the first
``prefix-tokens`` tokens are the prefix, the rest of the text (at most 480 tokens) the
continuation, scored in one teacher-forced pass. Printed per sample: continuation tokens,
next-token accuracy (teacher-forced: fraction of positions where the model's argmax given the true
text before it is the true token), and the
greedy exact-match length (leading positions all correct: what greedy decoding reproduces).
"""

import argparse

import numpy as np
from mia_corpus.embedded import REPEATED, corpus_samples

from mia_core import registry

MAX_CONTINUATION = 480


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prefix-tokens", type=int, default=32)
    args = parser.parse_args()
    backend = registry.backends.create(args.model)
    ids = {d.id for d in REPEATED}
    samples = corpus_samples()
    pairs = [(s, samples[i + 1]) for i, s in enumerate(samples) if s.id in ids]
    rows = [s for pair in pairs for s in pair]
    encoded = backend.tokenizer.encode_batch([s.text for s in rows])
    windows = [e[: args.prefix_tokens + MAX_CONTINUATION] for e in encoded]
    scores = backend.score(windows, 0, distribution=False)
    print("| sample | label | continuation tokens | next-token accuracy (teacher-forced) "
          "| greedy exact match (tokens) |")
    print("|---|---|---:|---:|---:|")
    summary = {"member": [], "nonmember": []}
    for sample, tokens, s in zip(rows, windows, scores, strict=True):
        n = len(tokens) - args.prefix_tokens
        equal = np.asarray(s.argmax[-n:]) == np.asarray(tokens[-n:])
        matched = n if equal.all() else int(np.argmin(equal))
        summary[sample.label].append((equal.mean(), matched))
        print(f"| {sample.id} | {sample.label} | {n} | {equal.mean():.2f} | {matched} |")
    for label, values in summary.items():
        acc = np.array([v[0] for v in values])
        print(f"{label}: mean next-token accuracy (teacher-forced) {acc.mean():.3f} "
              f"(min {acc.min():.2f}, max {acc.max():.2f}); "
              f"mean greedy match {np.mean([v[1] for v in values]):.1f} tokens over {len(values)} samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
