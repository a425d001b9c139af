"""Coverage of the AUC interval `mia attack` gives past 200 000 strings (DeLong's), and its false "below chance"
warnings under the null.

    python bench/delong_null_check.py [--trials 2000] [--strings 50000] [--seed 0]

The null: scores and member/nonmember labels drawn independently (scores rounded to 3 decimals, so ties occur as
they do in real signals), ``--trials`` times. Each trial's interval comes from the code `mia attack` runs on a
signal of more than ``IN_MEMORY_STRINGS`` strings (``mia_core.attack.outofcore.streamed_metrics``: the external
sort, DeLong's variance, the normal quantile). Printed: the share of intervals that contain 0.5 (target 95%), the
share wholly below 0.5 (a false "below chance" warning: target 2.5%), each with its exact 95% (Clopper–Pearson)
interval.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import binomtest

from mia_core.attack import outofcore


def interval(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    keys = outofcore.sort_keys(scores)

    def pairs():
        for at in range(0, len(y), outofcore.READ_VALUES):
            yield keys[at:at + outofcore.READ_VALUES], y[at:at + outofcore.READ_VALUES]

    figures = outofcore.streamed_metrics(pairs, int(y.sum()), int((~y).sum()), (0.01,), 0.95, 500)
    return figures["low"], figures["high"]


def share(count: int, trials: int) -> str:
    ci = binomtest(count, trials).proportion_ci(0.95, method="exact")
    return f"{count / trials:.4f} [{ci.low:.4f}, {ci.high:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--strings", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    covered = below = 0
    for trial in range(args.trials):
        rng = np.random.default_rng([args.seed, trial])
        y = rng.random(args.strings) < 0.5
        low, high = interval(y, np.round(rng.normal(size=args.strings), 3))
        covered += low <= 0.5 <= high
        below += high < 0.5
    print(f"{args.trials} null trials of {args.strings} strings ({time.perf_counter() - started:.0f} s)")
    print(f"  interval contains 0.5: {share(covered, args.trials)}  (target 0.95)")
    print(f"  wholly below 0.5 (false 'below chance' warning): {share(below, args.trials)}  (target 0.025)")


if __name__ == "__main__":
    main()
