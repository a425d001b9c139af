"""Benchmark of `mia prefix` (build_prefix_map): speed against the raw tokenizer, memory vs corpus size.

    python bench/prefix_bench.py [--model gemma-3-270m] [--mb 4] [--repeats 5]

1. Throughput: a synthetic corpus (the embedded corpus's texts repeated to about ``--mb`` MB,
   as a JSON Lines file read by the ``files`` dataset) is turned into a map with
   ``--no-save``, end to end (reading, tokenizing, cutting windows, writing HDF5), and the
   same texts are batch-encoded by the raw Rust fast tokenizer
   (``backend_tokenizer.encode_batch_fast``, ids extracted), in the same process, alternately,
   best of ``--repeats``, in wall-clock and in CPU time (the CPU ratio is the pipeline's own
   overhead, robust to other load on a shared machine; the load average is printed). The
   tokenizer is loaded once beforehand (its one-time load time is printed separately).
   Target: ratio >= 0.8. The default ``--save`` is measured too.
2. Memory: peak RSS of ``build_prefix_map(..., save=False)`` in a fresh subprocess for the
   corpus at 1x and 10x its size: the process's peak (``ru_maxrss``, which loading the
   tokenizer dominates) and the peak while the map is built (VmRSS sampled every 10 ms).
   Target: ratio <= 1.3.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPEED = 0.8
TARGET_RSS = 1.3
BATCH = 1024


def write_corpus(path: Path, texts: list[tuple[str, str]], megabytes: float, copies: int = 1) -> int:
    """Repeat ``texts`` to about ``megabytes`` MB (times ``copies``) as JSON Lines; returns records."""
    size = sum(len(t.encode()) for _, t in texts)
    rounds = max(1, round(megabytes * 1e6 / size)) * copies
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for r in range(rounds):
            for sample_id, text in texts:
                f.write(json.dumps({"id": f"{r}/{sample_id}", "text": text}) + "\n")
                n += 1
    return n


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def raw_encode(rust, texts: list[str]) -> int:
    tokens = 0
    for i in range(0, len(texts), BATCH):
        encodings = rust.encode_batch_fast(texts[i:i + BATCH], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encodings)
    return tokens


RSS_CHILD = """
import json, resource, sys, threading, time
from mia_core import registry
from mia_core.extraction.prefix import build_prefix_map
from mia_core.formats.prefixmap import PrefixMap

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

model, path, out = sys.argv[1:4]
tokenizer = registry.tokenizers.create(model)
tokenizer.fingerprint  # computed once per process (hashes the vocabulary): not part of the build
registry.tokenizers.create = lambda name, options=None: tokenizer
before = rss_kb()
peak = [before]
done = threading.Event()

def sample():
    while not done.wait(0.01):
        peak[0] = max(peak[0], rss_kb())

watcher = threading.Thread(target=sample, daemon=True)
watcher.start()
t = time.perf_counter()
folder = build_prefix_map(model, "files", 32, prefix_loc="random", save=False, out=out,
                          dataset_options={"path": path}, quiet=True)
elapsed = time.perf_counter() - t
done.set()
watcher.join()
print(json.dumps({"before_kb": before, "build_peak_kb": max(peak[0], rss_kb()),
                  "process_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rows": len(PrefixMap(folder)), "seconds": elapsed}))
"""


def rss_run(model: str, path: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", RSS_CHILD, model, str(path), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--mb", type=float, default=4.0, help="size of the 1x corpus in MB of text")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()

    from mia_core import registry
    from mia_core.extraction.prefix import build_prefix_map

    with tempfile.TemporaryDirectory(prefix="mia-prefix-bench-") as tmp:
        work = Path(tmp)
        corpus = [(s.id, s.text) for s in registry.datasets.create("corpus")]
        small, large = work / "corpus-1x.jsonl", work / "corpus-10x.jsonl"
        n_small = write_corpus(small, corpus, args.mb)
        n_large = write_corpus(large, corpus, args.mb, copies=10)
        texts = read_texts(small)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        print(f"corpus: {n_small} samples, {mb:.1f} MB (1x); {n_large} samples (10x)")

        t = time.perf_counter()
        tokenizer = registry.tokenizers.create(args.model)
        loaded = time.perf_counter() - t
        tokenizer.fingerprint  # noqa: B018 (computed once per process, cached on the object)
        hashed = time.perf_counter() - t - loaded
        print(f"tokenizer {args.model}: loaded in {loaded:.1f} s, fingerprint in {hashed:.1f} s "
              "(once per run, not counted below)")
        rust = tokenizer.hf.backend_tokenizer
        # build_prefix_map looks the tokenizer up by name: hand it the loaded one.
        registry.tokenizers.create = lambda name, options=None: tokenizer

        def timed(fn) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            return time.perf_counter() - wall, time.process_time() - cpu

        def run_map(save: bool, seed: int) -> None:
            build_prefix_map(args.model, "files", 32, prefix_loc="random", save=save, seed=seed,
                             out=work / f"maps-{save}", dataset_options={"path": str(small)}, quiet=True)

        tokens = raw_encode(rust, texts)
        best = {k: (float("inf"), float("inf")) for k in ("raw", "no-save", "save")}
        load = os.getloadavg()[0]
        for r in range(args.repeats):  # alternate, keep the best wall and CPU time of each
            for key, fn in (("raw", lambda: raw_encode(rust, texts)), ("no-save", lambda r=r: run_map(False, r)),
                            ("save", lambda r=r: run_map(True, r))):
                wall, cpu = timed(fn)
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
        load = max(load, os.getloadavg()[0])
        rate = {k: (tokens / w, tokens / c) for k, (w, c) in best.items()}
        names = {"raw": f"raw fast tokenizer (encode_batch_fast, batches of {BATCH})",
                 "no-save": "mia prefix --no-save, end to end", "save": "mia prefix --save, end to end"}
        print(f"{tokens:,} tokens; best of {args.repeats}; load average up to {load:.1f} on "
              f"{os.cpu_count()} CPUs (other work on the machine slows every figure)")
        for key, (wall_rate, cpu_rate) in rate.items():
            print(f"  {names[key]:<58} {wall_rate:>10,.0f} tokens/s wall  {cpu_rate:>10,.0f} tokens/CPU-s")
        for key in ("no-save", "save"):
            print(f"speed ratio {key} / raw = {rate[key][0] / rate['raw'][0]:.2f} wall, "
                  f"{rate[key][1] / rate['raw'][1]:.2f} CPU (target >= {TARGET_SPEED})")

        if args.skip_rss:
            return
        one = rss_run(args.model, small, work / "rss-1x")
        ten = rss_run(args.model, large, work / "rss-10x")
        for label, res in (("1x", one), ("10x", ten)):
            print(f"{label}: process peak RSS {res['process_peak_kb'] / 1024:.0f} MiB; during the build "
                  f"{res['build_peak_kb'] / 1024:.0f} MiB, {(res['build_peak_kb'] - res['before_kb']) / 1024:.0f} MiB "
                  f"above the loaded tokenizer ({res['rows']} rows in {res['seconds']:.1f} s)")
        print(f"peak RSS ratio 10x / 1x = {ten['process_peak_kb'] / one['process_peak_kb']:.2f} (process), "
              f"{ten['build_peak_kb'] / one['build_peak_kb']:.2f} (during the build) (target <= {TARGET_RSS})")

if __name__ == "__main__":
    main()
