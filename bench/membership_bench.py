"""Corpus-membership benchmark (issues 6, 14 and 27), one run:

For a synthetic Zipf corpus (vocabulary 50 000 → u16 tokens, documents of 200-4000 tokens), at
``--tokens`` (default 10 M) built as each of ``--shards`` (default 1, 8 and 64 shards: the same tokens),
and at ``--large-tokens`` (default 100 M, ``--large-shards`` shards on disk, memory-mapped; 0 skips it):

- build tokens/s (wall and per CPU-second; the merge of the index-level fingerprint table included),
  peak memory of the build (the child process's VmHWM), bytes per indexed token on disk;
- fixed-window (50-token) lookups/s through ``CorpusIndex.contains_many`` (the fastest of ``--repeat``
  passes): through the index-level fingerprint table, and through each shard's table in turn
  (``per_shard=True``, what indexes built before it do), both verified against the tokens, against the
  suffix-table search of the same index and the same queries (all answers asserted equal), half the
  windows present, half random;
- longest-match (matching statistics) positions/s through ``CorpusIndex.longest_matches``, which still
  searches every shard's suffix table, and its cost per added shard;

against the naive baseline measured in the same run: a Python ``set`` of 50-token tuples, built over
``--baseline-tokens`` (default 1 M; it needs about half a kilobyte per token, so its figures are per
token and compare directly; at the large size it would not fit in this machine's memory).

    python bench/membership_bench.py [--tokens 10000000] [--shards 1,8,64] [--large-tokens 100000000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOW = 50
VOCAB = 50_000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def corpus(n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed token ids (u16) cut into documents of 200-4000 tokens (CSR offsets)."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n_tokens, dtype=np.uint16)
    for lo in range(0, n_tokens, 1 << 24):
        hi = min(lo + (1 << 24), n_tokens)
        tokens[lo:hi] = rng.zipf(1.2, hi - lo) % VOCAB
    lengths = rng.integers(200, 4000, n_tokens // 200 + 1)
    offsets = np.r_[0, np.cumsum(lengths)]
    offsets = offsets[offsets < n_tokens]
    return tokens, np.r_[offsets, n_tokens]


def queries(tokens: np.ndarray, offsets: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n // 2 windows copied from inside documents (present) and the rest random (absent)."""
    rng = np.random.default_rng(seed + 1)
    starts = rng.integers(0, len(tokens) - WINDOW, 2 * n)
    doc = np.searchsorted(offsets, starts, side="right")
    starts = starts[starts + WINDOW <= offsets[np.minimum(doc, len(offsets) - 1)]][:n // 2]
    inside = tokens[starts[:, None] + np.arange(WINDOW)].astype(np.int64)
    outside = rng.integers(0, VOCAB, (n - len(inside), WINDOW))
    return np.concatenate([inside, outside])


def generations(tokens: np.ndarray, n: int, length: int, seed: int) -> list[np.ndarray]:
    """Half copied from the corpus with a random tail, half random."""
    rng = np.random.default_rng(seed + 2)
    out = []
    for i in range(n):
        if i % 2 == 0:
            s = int(rng.integers(0, len(tokens) - length))
            keep = int(rng.integers(length // 2, length))
            out.append(np.r_[tokens[s:s + keep].astype(np.int64), rng.integers(0, VOCAB, length - keep)])
        else:
            out.append(rng.integers(0, VOCAB, length))
    return out


BUILD_CHILD = """
import sys, numpy as np
from mia_core.formats.corpus_index.shard_writer import build_index
tokens = np.load(sys.argv[1], mmap_mode="r")
offsets = np.load(sys.argv[2])
shard_tokens = int(sys.argv[4]) or None
docs = (tokens[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1))
build_index(sys.argv[3], docs, "bench", "bench-fp", 50000, {"bench": True}, shard_tokens=shard_tokens,
            windows=(50,), quiet=True)
# this process's own peak (VmHWM starts again at exec; ru_maxrss would count the parent's pages at fork)
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(int(peak) * 1024)
"""


def build(tmp: Path, name: str, shard_tokens: int | None) -> dict:
    """Build in a child process, so its peak memory (max RSS) is its own."""
    folder = tmp / name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BUILD_CHILD, str(tmp / "tokens.npy"), str(tmp / "offsets.npy"),
                             str(folder), str(shard_tokens or 0)], stdout=subprocess.PIPE, text=True)
    peak = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"the build of {name} failed (status {status})")
    meta = json.loads((folder / "index.json").read_text())
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    cpu = usage.ru_utime + usage.ru_stime
    return {"tokens": meta["tokens"], "shards": len(meta["shards"]), "build_s": wall,
            "build_tokens_per_s": meta["tokens"] / wall, "build_tokens_per_cpu_s": meta["tokens"] / cpu,
            "build_peak_rss_bytes_per_token": int(peak) / meta["tokens"],
            "bytes_per_token": disk / meta["tokens"]}


def fastest(call, repeat: int) -> tuple[np.ndarray, float, float]:
    """(the answer, the fastest wall seconds, the fastest CPU seconds) of ``repeat`` timed calls: on a shared
    machine the fastest pass is the one the other jobs disturbed least."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, min(walls), min(cpus)


def lookups(folder: Path, q: np.ndarray, gens: list[np.ndarray], repeat: int) -> dict:
    from mia_core.formats.corpus_index.reader import CorpusIndex

    index = CorpusIndex(folder)
    # one untimed pass of each path: checks the files, builds the directories, maps every page it touches
    index.contains_many(q)
    index.contains_many(q, per_shard=True)
    found, window_s, window_cpu = fastest(lambda: index.contains_many(q), repeat)
    by_shards, per_shard_s, per_shard_cpu = fastest(lambda: index.contains_many(q, per_shard=True), repeat)
    if not (by_shards == found).all():
        raise SystemExit("index-level and per-shard fingerprint answers differ")
    sub = q[:min(len(q), 100_000)]
    t0, c0 = time.perf_counter(), time.process_time()
    by_table = np.zeros(len(sub), dtype=bool)
    for shard in index.shards:
        by_table |= shard.search_windows(sub)
    sa_s, sa_cpu = time.perf_counter() - t0, time.process_time() - c0
    if not (by_table == found[:len(sub)]).all():
        raise SystemExit("fingerprint and suffix-table answers differ")
    positions = sum(len(g) for g in gens)
    t0, c0 = time.perf_counter(), time.process_time()
    matches = index.longest_matches(gens, WINDOW)
    ms_s, ms_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"window_lookups": len(q), "window_lookups_per_s": len(q) / window_s,
            "window_lookups_per_cpu_s": len(q) / window_cpu, "found": int(found.sum()),
            "per_shard_lookups_per_s": len(q) / per_shard_s, "per_shard_lookups_per_cpu_s": len(q) / per_shard_cpu,
            "suffix_table_lookups_per_s": len(sub) / sa_s, "suffix_table_lookups_per_cpu_s": len(sub) / sa_cpu,
            "longest_match_positions": positions, "longest_match_positions_per_s": positions / ms_s,
            "longest_match_positions_per_cpu_s": positions / ms_cpu,
            "memorized_generations": int(matches.memorized.sum())}


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
    out = {"tokens": len(tokens), "build_tokens_per_s": len(tokens) / build_s,
           "build_tokens_per_cpu_s": len(tokens) / build_cpu, "bytes_per_token": mem / len(tokens),
           "window_lookups_per_s": len(q) / lookup_s, "window_lookups_per_cpu_s": len(q) / lookup_cpu,
           "found": int(found)}
    del windows, lst
    gc.collect()
    return out


def run_size(n_tokens: int, shard_counts: list[int], args: argparse.Namespace, tmp: Path) -> dict:
    tokens, offsets = corpus(n_tokens, args.seed)
    np.save(tmp / "tokens.npy", tokens)
    np.save(tmp / "offsets.npy", offsets)
    q = queries(tokens, offsets, args.queries, args.seed)
    gens = generations(tokens, args.generations, 100, args.seed)
    del tokens
    out = {}
    for shards in shard_counts:
        name = f"{n_tokens}_{shards}"
        per = -(-(n_tokens + len(offsets)) // shards)  # tokens and separators per shard (1: all in one)
        built = build(tmp, name, per)
        built.update(lookups(tmp / name, q, gens, args.repeat))
        # a document is never split, so a shard may hold up to one document more and the count come out lower
        out[f"{built['shards']} shard(s)"] = built
        shutil.rmtree(tmp / name)
        print(f"  {n_tokens:,} tokens, {built['shards']} shard(s) ({shards} asked): done", file=sys.stderr)
    return out


def _counts(text: str) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise SystemExit(f"Error: shard counts must be integers separated by commas, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"Error: shard counts must be at least 1, not {text!r}")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--shards", default="1,8,64", help="shard counts --tokens is built as (comma-separated)")
    ap.add_argument("--large-tokens", type=int, default=100_000_000, help="0: skip the large run")
    ap.add_argument("--large-shards", default="8", help="shard counts of the large run (comma-separated)")
    ap.add_argument("--baseline-tokens", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--generations", type=int, default=2000, help="of 100 tokens, for longest-match lookups")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes of each fixed-window path (the fastest counts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the indexes (default: the system temp folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="mia_bench_", dir=args.tmp))
    try:
        result = {"load_average_before": load_before, "cpus": os.cpu_count(), "window": WINDOW, "vocab": VOCAB}
        result["sizes"] = {str(args.tokens): run_size(args.tokens, _counts(args.shards), args, tmp)}
        if args.large_tokens:
            result["sizes"][str(args.large_tokens)] = run_size(args.large_tokens, _counts(args.large_shards), args,
                                                               tmp)
        base_tokens, base_offsets = corpus(args.baseline_tokens, args.seed)
        base_q = queries(base_tokens, base_offsets, min(args.queries, 200_000), args.seed)
        result["python_set_baseline"] = bench_baseline(base_tokens, base_q)
        result["load_average_after"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def report(result: dict) -> None:
    base = result["python_set_baseline"]
    print(f"{result['cpus']} CPUs, load average {result['load_average_before'][0]:.1f} before, "
          f"{result['load_average_after'][0]:.1f} after; windows of {result['window']} tokens, half present; "
          f"vocabulary {result['vocab']} (u16)")
    rows = [("build, tokens/s", "build_tokens_per_s", ",.0f"),
            ("build, tokens/CPU-s", "build_tokens_per_cpu_s", ",.0f"),
            ("build peak RSS, B/token", "build_peak_rss_bytes_per_token", ".1f"),
            ("on disk, bytes/token", "bytes_per_token", ".1f"),
            ("fixed-window lookups/s", "window_lookups_per_s", ",.0f"),
            ("  per CPU-s", "window_lookups_per_cpu_s", ",.0f"),
            ("  each shard's table, lookups/s", "per_shard_lookups_per_s", ",.0f"),
            ("  suffix table, lookups/s", "suffix_table_lookups_per_s", ",.0f"),
            ("longest-match positions/s", "longest_match_positions_per_s", ",.0f")]
    columns = [(f"{int(size):,} tok, {label}", fig)
               for size, per in result["sizes"].items() for label, fig in per.items()]
    print(f"{'':32}" + "".join(f"{name:>30}" for name, _ in columns) + f"{'python set (1 M tok)':>24}")
    for title, key, fmt in rows:
        cells = "".join(f"{format(fig[key], fmt):>30}" for _, fig in columns)
        b = base.get({"build_peak_rss_bytes_per_token": "bytes_per_token"}.get(key, key)) \
            if key != "bytes_per_token" else None
        print(f"{title:32}{cells}{format(b, fmt) if b is not None else '':>24}")
    first = columns[0][1]
    vs_set = first["window_lookups_per_s"] / base["window_lookups_per_s"]
    vs_table = first["window_lookups_per_s"] / first["suffix_table_lookups_per_s"]
    print(f"fixed-window lookups/s, first column: {vs_set:.1f}x the python set, {vs_table:.1f}x the suffix-table "
          "search (target >= 1,000,000/s)")
    for size, per in result["sizes"].items():
        shard_sweep(int(size), per)


def shard_sweep(size: int, per: dict) -> None:
    """The rate against the number of shards (same tokens), and the longest-match cost of each added shard."""
    figs = sorted((fig["shards"], fig) for fig in per.values())
    if len(figs) < 2:
        return
    (n1, one), rest = figs[0], figs[1:]
    rate1 = one["window_lookups_per_s"]
    cells = ", ".join(f"{n}: {f['window_lookups_per_s']:,.0f}/s ({rate1 / f['window_lookups_per_s']:.2f}x the time; "
                      f"each shard's table in turn {f['per_shard_lookups_per_s']:,.0f}/s)" for n, f in rest)
    print(f"{size:,} tokens, fixed-window lookups vs shards: {n1}: {rate1:,.0f}/s; {cells} "
          "(targets: within 1.5x of one shard; >= 1,000,000/s at 100 M tokens in 8 shards)")
    t1 = 1 / one["longest_match_positions_per_s"]
    for n, f in rest:
        per_shard = (1 / f["longest_match_positions_per_s"] - t1) / (n - n1)
        print(f"{size:,} tokens, longest match (every shard's suffix table is searched): {n} shards "
              f"{f['longest_match_positions_per_s']:,.0f} positions/s, {per_shard * 1e6:.2f} us per position "
              "per added shard")


if __name__ == "__main__":
    main()
