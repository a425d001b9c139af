"""False-warning rate of the blind baseline's separability test under the null, and its power.

    python bench/blind_null_check.py [--splits 200] [--sizes 20,100,1000] [--permutations 99] [--seed 0]

The null: one homogeneous set of texts (seeded random-word texts, 12-40 words each from one
Zipf-distributed 2,000-word vocabulary, so no string differs from another in kind), split at random
into halves labelled member and nonmember, ``--splits`` times at each size n (n strings in all,
n/2 per label). Every split runs the test ``mia attack`` runs (mia_core.attack.blind.permutation_test:
the 5-fold cross-validated bag-of-n-grams classifier refitted on up to ``--permutations`` label
permutations, 99 as in mia attack; warning when p ≤ 0.05). The false-warning rate is the share of
splits that warn, printed with its exact 95% (Clopper–Pearson) interval; the target is ≤ 5%.

A permutation test is exact: under the null its rejection rate is at most ⌊0.05 (P + 1)⌋ / (P + 1)
= 5% for P = 99 (ties between AUCs, frequent at n = 20, make it lower). The test stops once p
cannot fall to 0.05, which on a null split is after about a dozen permutations: that keeps the
bench to minutes.

Power, for contrast: ``--power-splits`` splits per size whose members use a slightly different
vocabulary (each member text has 1 word in 6 drawn from 40 words nonmembers never use): the share
detected.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.stats import binomtest

from mia_core.attack.blind import LEVEL, permutation_test

VOCABULARY = 2000


def _words(rng: np.random.Generator, n: int, vocabulary: list[str], shifted: list[str] | None) -> list[str]:
    """``n`` random-word texts; with ``shifted``, 1 word in 6 comes from that other list."""
    ranks = np.arange(1, len(vocabulary) + 1)
    zipf = (1.0 / ranks) / (1.0 / ranks).sum()
    out = []
    for _ in range(n):
        words = list(rng.choice(vocabulary, size=int(rng.integers(12, 41)), p=zipf))
        if shifted is not None:
            for i in range(0, len(words), 6):
                words[i] = str(rng.choice(shifted))
        out.append(" ".join(words))
    return out


def _labels(rng: np.random.Generator, n: int) -> list[str]:
    return list(rng.permutation(["member"] * (n // 2) + ["nonmember"] * (n - n // 2)))


def run_size(n: int, splits: int, permutations: int, seed: int, shifted: bool = False,
             progress: bool = False) -> dict:
    vocabulary = [f"w{i}" for i in range(VOCABULARY)]
    other = [f"x{i}" for i in range(40)]
    warned, run, aucs, started = 0, 0, [], time.process_time()
    for split in range(splits):
        rng = np.random.default_rng([seed, n, split, int(shifted)])
        if shifted:  # members carry the other words; nonmembers are plain
            texts = _words(rng, n // 2, vocabulary, other) + _words(rng, n - n // 2, vocabulary, None)
            labels = ["member"] * (n // 2) + ["nonmember"] * (n - n // 2)
        else:
            texts = _words(rng, n, vocabulary, None)
            labels = _labels(rng, n)
        test = permutation_test(texts, labels, seed=split, permutations=permutations)
        warned += bool(test and test.separable)
        run += test.run if test else 0
        aucs.append(test.auc if test else float("nan"))
        if progress and (split + 1) % 25 == 0:
            print(f"    n {n}: {split + 1} splits, {warned} warned, {time.process_time() - started:.0f} CPU s",
                  file=sys.stderr, flush=True)
    ci = binomtest(warned, splits).proportion_ci(0.95, method="exact")
    return {"n": n, "splits": splits, "warned": warned, "rate": warned / splits, "low": ci.low, "high": ci.high,
            "max_auc": float(np.nanmax(aucs)), "sd_auc": float(np.nanstd(aucs)), "mean_run": run / splits,
            "cpu_s": time.process_time() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--sizes", default="20,100,1000")
    parser.add_argument("--permutations", type=int, default=99)
    parser.add_argument("--power-splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    print(f"blind baseline separability test: {args.permutations} label permutations, level {LEVEL:g}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("null (random halves of one homogeneous random-word set):")
    print(f"  {'n':>5} {'splits':>6} {'warned':>6} {'false-warning rate [95% CI]':>30} {'max AUC':>8} "
          f"{'sd AUC':>7} {'perms run':>9} {'CPU s':>7}")
    above = []  # sizes whose interval lies wholly above the target
    for n in sizes:
        r = run_size(n, args.splits, args.permutations, args.seed, progress=True)
        if r["low"] > LEVEL:
            above.append(n)
        print(f"  {n:>5} {r['splits']:>6} {r['warned']:>6} {r['rate'] * 100:>9.1f}% [{r['low'] * 100:.1f}%, "
              f"{r['high'] * 100:.1f}%]{'':>6} {r['max_auc']:>8.3f} {r['sd_auc']:>7.3f} {r['mean_run']:>9.1f} "
              f"{r['cpu_s']:>7.1f}",
              flush=True)
    if args.power_splits:
        print("power (members' texts carry 1 word in 6 from 40 words nonmembers never use):")
        for n in sizes:
            r = run_size(n, args.power_splits, args.permutations, args.seed, shifted=True)
            print(f"  n {n:>5}: detected {r['warned']}/{r['splits']} ({r['rate'] * 100:.0f}%), CPU {r['cpu_s']:.1f} s",
                  flush=True)
    print(f"target: false-warning rate ≤ {LEVEL * 100:g}% at every n: "
          + (f"NOT met at n = {', '.join(map(str, above))} (interval wholly above)" if above else
             "met (no interval lies wholly above it)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
