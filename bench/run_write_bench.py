"""Benchmark of the crash-safe run write path against the in-place HDF5 appends it replaced.

    python bench/run_write_bench.py [--rows 2000] [--batch-size 10] [--max-length 50] [--api] [--repeats 3]

- journal: ``RunWriter.append`` (one CRC-checked journal record per batch with the run's
  counters, fsynced) from creation to ``close`` (compaction into the HDF5 file, atomic
  rename), the path `mia prompt` uses.
- in-place (baseline, measured in the same run): what the writer did before: resizable
  gzip-chunked HDF5 datasets grown and written per batch, attributes updated and the
  file flushed after each batch (``h5py.File.flush``, no fsync: it did not fsync).
- in-place+fsync: the same plus an fsync per batch, the fair comparison for durability.

Prints seconds per batch of each and the ratios journal/in-place and journal/in-place+fsync.
The write path matters only relative to generation: a batch of a 270M model on a CPU takes
seconds, an API batch hundreds of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mia_core.formats.runs import API_COLUMNS, RunWriter  # noqa: E402


def batches(rows: int, batch: int, max_length: int, api: bool):
    rng = np.random.default_rng(0)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        cols = {"tokens": rng.integers(0, 50000, (n, max_length)).tolist(), "prefix_row": list(range(start, start + n)),
                "text": ["word " * max_length] * n}
        if api:
            cols.update(raw_text=["Here is the continuation: " + "word " * max_length] * n,
                        stop_reason=["end_turn"] * n, error=[""] * n, input_tokens=[40] * n,
                        output_tokens=[max_length] * n, cost_usd=[1e-5] * n,
                        usage=[json.dumps({"input_tokens": 40, "output_tokens": max_length})] * n)
        yield cols


def journal(folder: Path, args) -> float:
    t = time.perf_counter()
    w = RunWriter.create(folder / "j.h5", {"model": "bench"}, args.max_length, API_COLUMNS if args.api else None)
    tokens = 0
    for cols in batches(args.rows, args.batch_size, args.max_length, args.api):
        tokens += sum(len(x) for x in cols["tokens"])
        w.append(cols, generated_tokens=tokens, elapsed_s=time.perf_counter() - t)
    w.finish()
    w.close()
    return time.perf_counter() - t


def in_place(folder: Path, args, fsync: bool) -> float:
    t = time.perf_counter()
    columns = {"tokens": ("i4", args.max_length), "lengths": ("i4", None), "prefix_row": ("i8", None),
               "text": ("str", None)}
    if args.api:
        columns.update({k: ("str", None) for k in ("raw_text", "stop_reason", "error", "usage")})
        columns.update(input_tokens=("i8", None), output_tokens=("i8", None), cost_usd=("f8", None))
    path = folder / f"p{int(fsync)}.h5"
    with h5py.File(path, "w") as f:
        for name, (kind, width) in columns.items():
            dtype = h5py.string_dtype() if kind == "str" else kind
            shape, maxshape = ((0,), (None,)) if width is None else ((0, width), (None, width))
            chunks = (1024,) if width is None else (max(1, min(1024, 2**18 // width)), width)
            f.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=chunks,
                             compression=None if kind == "str" else "gzip")
        done, tokens = 0, 0
        for cols in batches(args.rows, args.batch_size, args.max_length, args.api):
            n = len(cols["prefix_row"])
            cols["lengths"] = [len(x) for x in cols["tokens"]]
            for name in columns:
                ds = f[name]
                ds.resize(done + n, axis=0)
                ds[done:done + n] = cols[name]
            done += n
            tokens += sum(cols["lengths"])
            f.attrs.update({"rows": done, "generated_tokens": tokens, "elapsed_s": time.perf_counter() - t})
            f.flush()
            if fsync:
                fd = os.open(path, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--api", action="store_true", help="with the API columns (text answers, usage)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder to write in (default: a temporary folder)")
    args = parser.parse_args()
    best = {"journal": float("inf"), "in-place": float("inf"), "in-place+fsync": float("inf")}
    for _ in range(args.repeats):  # interleaved; the best of each counts
        folder = Path(tempfile.mkdtemp(dir=args.dir))
        try:
            best["in-place"] = min(best["in-place"], in_place(folder, args, fsync=False))
            best["journal"] = min(best["journal"], journal(folder, args))
            best["in-place+fsync"] = min(best["in-place+fsync"], in_place(folder, args, fsync=True))
        finally:
            shutil.rmtree(folder)
    n_batches = -(-args.rows // args.batch_size)
    print(f"{args.rows} rows in {n_batches} batches of {args.batch_size}, max_length {args.max_length}"
          f"{', API columns' if args.api else ''}; best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    for name, seconds in best.items():
        print(f"  {name:15s} {seconds:7.3f} s  ({1000 * seconds / n_batches:.2f} ms per batch)")
    print(f"journal / in-place: {best['journal'] / best['in-place']:.2f}x time; "
          f"journal / in-place+fsync: {best['journal'] / best['in-place+fsync']:.2f}x time")


if __name__ == "__main__":
    main()
