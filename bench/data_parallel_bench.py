"""Data parallelism on Ray against one engine, in one run: the HF backend (or any backend named with
--model) with ``data_parallel_size=N`` (mia_core/data_parallel.py) against ``data_parallel_size=1`` on
the same greedy batch and the same scoring batch. Prints generated and scored tokens/s of both, their
ratio (the baseline is measured in this run), and whether the rows are equal.

    python bench/data_parallel_bench.py                                  # CPU: 2 replicas x 1 core vs 1 x 2 cores
    python bench/data_parallel_bench.py --device cuda --replicas 2       # 2 GPUs (bench/gpu_check.sh)

On CPU the replicas share the machine's cores (N replicas of cores/N threads against one engine with
all of them), so the ratio measures what Ray's split costs or gains on CPU, not a GPU's scaling.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np

from mia_core import registry
from mia_core.types import Sampling


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def rows_of(backend, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """``count`` prefixes of ``length`` ids drawn from the embedded corpus's tokens."""
    from mia_core.defaults import DEFAULT_DATASET

    texts = [s.text for s in registry.datasets.create(DEFAULT_DATASET)]
    ids = [t for row in backend.tokenizer.encode_batch(texts) for t in row]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - length, size=count)
    return [ids[s:s + length] for s in starts]


def timed(call, tokens: int) -> tuple[float, object]:
    started = time.perf_counter()
    out = call()
    return tokens / (time.perf_counter() - started), out


def measure(backend, prefixes: list[list[int]], new: int) -> dict:
    greedy = Sampling()
    generated = timed(lambda: backend.generate(prefixes, new, greedy), len(prefixes) * new)
    scored = timed(lambda: backend.score([p + p[:new] for p in prefixes], len(prefixes[0]), distribution=False),
                   len(prefixes) * new)
    return {"generate": generated, "score": scored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64, help="rows per call (one batch)")
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--new", type=int, default=16)
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load {load:.2f}; {args.model} on {args.device}, "
          f"{args.rows} rows x {args.prefix}-token prefixes, {args.new} new tokens greedy")
    one = registry.backends.create(args.model, {"device": args.device})
    prefixes = rows_of(one, args.rows, args.prefix)
    measure(one, prefixes[:4], 2)  # warm-up, not timed
    single = measure(one, prefixes, args.new)
    del one
    started = time.perf_counter()
    many = registry.backends.create(args.model, {"device": args.device, "data_parallel_size": args.replicas})
    print(f"data_parallel_size={args.replicas}: replicas started in {time.perf_counter() - started:.1f} s (not timed)")
    measure(many, prefixes[:4], 2)
    replicated = measure(many, prefixes, args.new)
    many.close()
    for task in ("generate", "score"):
        (base, base_out), (rate, out) = single[task], replicated[task]
        if task == "generate":
            same = f"rows equal: {sum(a == b for a, b in zip(base_out, out, strict=True))}/{len(out)}"
        else:
            gap = max(float(np.nanmax(np.abs(a.logprob - b.logprob))) for a, b in zip(base_out, out, strict=True))
            same = f"largest |log-prob difference| {gap:.2e}"
        print(f"{task}: one engine {base:.1f} tok/s, {args.replicas} replicas on Ray {rate:.1f} tok/s, "
              f"ratio {rate / base:.2f}x; {same}")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
