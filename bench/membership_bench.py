"""Corpus-membership benchmark (issue 6), one run:

- index build throughput (tokens/s) of ``mia_core.scoring.index.IndexBuilder`` (token file +
  tokengrams suffix table), target ≥ 3 M tokens/s;
- 50-token window lookups/s on a 10 M-token index through ``CorpusIndex.contains_many`` (one
  batched call; half the windows occur in the corpus, half are random), target ≥ 100 k/s;
- bytes per indexed token on disk;

each against a naive Python baseline in the same run: a ``set`` of 50-token tuples. The
baseline is built over a slice (``--baseline-tokens``, default 1 M) because it needs about
half a kilobyte per token; its figures are per token, so they compare directly.

    python bench/membership_bench.py [--tokens 10000000] [--queries 200000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mia_core.scoring.index import CorpusIndex, IndexBuilder

WINDOW = 50


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def corpus(n_tokens: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed token ids cut into documents of 200-4000 tokens (CSR offsets)."""
    rng = np.random.default_rng(seed)
    tokens = (rng.zipf(1.2, n_tokens) % vocab).astype(np.int64)
    lengths = rng.integers(200, 4000, n_tokens // 200 + 1)
    offsets = np.r_[0, np.cumsum(lengths)]
    offsets = offsets[offsets < n_tokens]
    return tokens, np.r_[offsets, n_tokens]


def queries(tokens: np.ndarray, offsets: np.ndarray, n: int, vocab: int, seed: int) -> np.ndarray:
    """n // 2 windows copied from inside documents (present) and the rest random (absent)."""
    rng = np.random.default_rng(seed + 1)
    starts = rng.integers(0, len(tokens) - WINDOW, 2 * n)
    doc = np.searchsorted(offsets, starts, side="right")
    starts = starts[starts + WINDOW <= offsets[np.minimum(doc, len(offsets) - 1)]][:n // 2]
    inside = tokens[starts[:, None] + np.arange(WINDOW)]
    outside = rng.integers(0, vocab, (n - n // 2, WINDOW))
    return np.concatenate([inside, outside])


def bench_index(tokens: np.ndarray, offsets: np.ndarray, vocab: int, q: np.ndarray, folder: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    builder = IndexBuilder(folder, "bench", "bench-fp", vocab, {"bench": True})
    builder.add_many(tokens, offsets)
    meta = builder.finish()
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    disk = sum(p.stat().st_size for p in folder.iterdir())
    index = CorpusIndex(folder)
    index.contains_many(q[:1000])  # warm the page cache a little
    t0, c0 = time.perf_counter(), time.process_time()
    found = index.contains_many(q)
    lookup_s, lookup_cpu = time.perf_counter() - t0, time.process_time() - c0
    # the same lookups with one tokengrams call per window (the unbatched way), on a subset
    sub = [list(row) for row in q[:min(len(q), 50_000)].tolist()]
    t1, c1 = time.perf_counter(), time.process_time()
    assert index.contains_many(sub).tolist() == found[:len(sub)].tolist()
    per_call_s, per_call_cpu = time.perf_counter() - t1, time.process_time() - c1
    return {"per_call_lookups_per_s": len(sub) / per_call_s, "per_call_lookups_per_cpu_s": len(sub) / per_call_cpu,
            "tokens": int(meta["tokens"]), "build_s": build_s, "build_cpu_s": build_cpu,
            "build_tokens_per_s": len(tokens) / build_s, "build_tokens_per_cpu_s": len(tokens) / build_cpu,
            "bytes_per_token": disk / meta["tokens"], "lookups": len(q), "lookup_s": lookup_s,
            "lookups_per_s": len(q) / lookup_s, "lookups_per_cpu_s": len(q) / lookup_cpu,
            "found": int(found.sum())}


def bench_baseline(tokens: np.ndarray, q: np.ndarray) -> dict:
    gc.collect()
    before = _rss()
    t0, c0 = time.perf_counter(), time.process_time()
    lst = tokens.tolist()
    windows = {tuple(lst[i:i + WINDOW]) for i in range(len(lst) - WINDOW + 1)}
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = _rss() - before
    qs = [tuple(row) for row in q.tolist()]
    t0, c0 = time.perf_counter(), time.process_time()
    found = sum(w in windows for w in qs)
    lookup_s, lookup_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"tokens": len(tokens), "build_s": build_s, "build_cpu_s": build_cpu,
           "build_tokens_per_s": len(tokens) / build_s, "build_tokens_per_cpu_s": len(tokens) / build_cpu,
           "bytes_per_token": mem / len(tokens), "lookups": len(q), "lookup_s": lookup_s,
           "lookups_per_s": len(q) / lookup_s, "lookups_per_cpu_s": len(q) / lookup_cpu, "found": int(found)}
    del windows, lst
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--baseline-tokens", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--vocab", type=int, default=50_000, help="< 65535: u16 index; larger: u32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tokens, offsets = corpus(args.tokens, args.vocab, args.seed)
    q = queries(tokens, offsets, args.queries, args.vocab, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mia_bench_"))
    try:
        ours = bench_index(tokens, offsets, args.vocab, q, tmp / "index")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base_tokens = tokens[:args.baseline_tokens]
    base_q = queries(base_tokens, np.array([0, len(base_tokens)]), args.queries, args.vocab, args.seed)
    base = bench_baseline(base_tokens, base_q)
    result = {"load_average": os.getloadavg(), "window": WINDOW, "vocab": args.vocab, "cpus": os.cpu_count(),
              "mia_index": ours,
              "python_set_baseline": base,
              "targets": {"build_tokens_per_s": 3e6, "lookups_per_s": 1e5}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"corpus: {ours['tokens']:,} indexed tokens (incl. document separators), vocab {args.vocab}, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); {args.queries:,} queries of "
          f"{WINDOW} tokens (half present)")
    print(f"{'':28}{'mia index (tokengrams)':>26}{'python set of tuples':>24}")
    print(f"{'corpus tokens':28}{ours['tokens']:>26,}{base['tokens']:>24,}")
    print(f"{'build, tokens/s':28}{ours['build_tokens_per_s']:>26,.0f}{base['build_tokens_per_s']:>24,.0f}"
          "   (target >= 3,000,000)")
    print(f"{'lookups/s (50-token window)':28}{ours['lookups_per_s']:>26,.0f}{base['lookups_per_s']:>24,.0f}"
          "   (target >= 100,000)")
    print(f"{'  unbatched (1 call/window)':28}{ours['per_call_lookups_per_s']:>26,.0f}{'':>24}"
          f"   ({ours['per_call_lookups_per_cpu_s']:,.0f} per CPU-s)")
    print(f"{'build, tokens/CPU-s':28}{ours['build_tokens_per_cpu_s']:>26,.0f}"
          f"{base['build_tokens_per_cpu_s']:>24,.0f}   (all threads' CPU time)")
    print(f"{'lookups/CPU-s':28}{ours['lookups_per_cpu_s']:>26,.0f}{base['lookups_per_cpu_s']:>24,.0f}")
    print(f"{'bytes per indexed token':28}{ours['bytes_per_token']:>26.1f}{base['bytes_per_token']:>24.1f}")
    print(f"{'windows found':28}{ours['found']:>26,}{base['found']:>24,}")


if __name__ == "__main__":
    main()
