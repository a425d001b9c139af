"""Scale benchmark: time per row and peak memory of each step as runs grow (issue #27 items 1-2).

    python bench/scale_bench.py [--rows 100000 1000000] [--out DIR] [--steps prompt,score,...]
    python bench/scale_bench.py --kill-compaction 1000000   # SIGKILL during a compaction, resume, compare

An *instant* backend (registered in-process below: no model; greedy tokens a cheap function of the
prefix) drives the real `mia` commands, each step in a fresh process whose peak RSS
(``ru_maxrss``) is read after it exits:

    prompt (mia prompt)   score (mia score)    export (mia export, JSONL)
    shards (mia prompt --shard 0/2 and 1/2)    merge (mia merge of the 2 shards)

For every size it prints rows/s and peak RSS of each step, and the ratio of both to the first
(smallest) size measured in the same run: time per row and memory must stay flat as rows grow.
``--assert-flat X`` exits 1 when a step's peak RSS grows above X times its first-size figure (the
suite runs a small version with it). The machine's CPU and load are printed first; the figures
go into docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PREFIX, SUFFIX, VOCAB = 32, 50, 50_000
STEPS = ("prompt", "check", "score", "estimate", "report", "export", "show", "attack", "shards", "merge")


class InstantTokenizer:
    """Words ``wN`` <-> ids N: no vocabulary to load."""

    name = "instant-tok"
    vocab_size, eos_id, bos_id = VOCAB, None, None
    fingerprint = "instant-tokenizer-v1"

    def encode_batch(self, texts):
        return [[int(w[1:]) % VOCAB for w in t.split()] for t in texts]

    def decode_batch(self, ids):
        return [" ".join(f"w{int(i)}" for i in row) for row in ids]


class InstantLM:
    """Generates ``max_new_tokens`` tokens at once with numpy: the pipeline's own cost, not a model's."""

    def __init__(self, name, options) -> None:
        self.name, self.tokenizer = name, InstantTokenizer()

    def describe(self):
        return {"name": self.name, "kind": "instant (benchmark)", "bos_prepended": False}

    def generate(self, prefixes, max_new_tokens, sampling):
        last = np.array([p[-1] for p in prefixes], dtype=np.int64)[:, None]
        return ((last + np.arange(1, max_new_tokens + 1)) % (VOCAB - 1) + 1).tolist()

    def score(self, sequences, start=0, *, distribution=True, sampling=None):
        """Teacher-forced scores of the same rule: argmax = previous token's successor, log p a cheap
        function of the token (no context at position 0: NaN and -1, as the protocol says)."""
        from mia_core.types import TokenScores

        starts = [start] * len(sequences) if isinstance(start, int) else list(start)
        out = []
        for seq, first in zip(sequences, starts, strict=True):
            tokens = np.asarray(seq, dtype=np.int64)
            previous = np.concatenate([[-1], tokens[:-1]])[first:]
            argmax = np.where(previous >= 0, previous % (VOCAB - 1) + 1, -1)
            logprob = np.where(previous >= 0, -1.0 - (tokens[first:] % 7), np.nan)
            moments = np.full(len(logprob), np.nan if not distribution else -5.0)
            out.append(TokenScores(logprob, argmax, moments, np.abs(moments)))
        return out


class InstantPlugin:
    from mia_core import hookimpl

    @hookimpl
    def mia_register_tokenizers(self, register):
        register("instant-tok", lambda name, options: InstantTokenizer())

    @hookimpl
    def mia_register_backends(self, register):
        register("instant", InstantLM, description="instant benchmark model (no model)")


def reset_peak_rss() -> bool:
    """Start this process's peak RSS afresh: a child inherits its parent's high-water mark through
    fork and exec, so without this a step would report the benchmark's own peak (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_mia() -> None:
    """Entry point of each step's process: `mia` with the instant plugin; peak RSS to MIA_BENCH_RSS."""
    reset_peak_rss()
    from mia_core.cli import cli
    from mia_core.plugins import load_plugins, pm

    load_plugins()
    pm.register(InstantPlugin(), name="instant-bench")
    try:
        cli(sys.argv[2:], standalone_mode=True)
    finally:
        Path(os.environ["MIA_BENCH_RSS"]).write_text(str(peak_rss_kib()))


#: One map row in this many has the suffix the instant model generates (an exact extraction), and one more its
#: first half (a partial match): every size then has extractions, a matched-length histogram with several
#: values, examples and a Good-Turing table, as a study does, and their memory is in the figures.
MEMORIZED_EVERY = 1_000


def _plant_memorized(tokens: np.ndarray, start: int) -> None:
    """Rows ``start + i`` of a chunk: row ≡ 1 (mod MEMORIZED_EVERY, a member) gets the suffix the instant model
    generates after its prefix, row ≡ MEMORIZED_EVERY / 2 (a nonmember) the first half of it."""
    rows = np.arange(start, start + len(tokens))
    last = tokens[:, PREFIX - 1:PREFIX]
    generated = (last + np.arange(1, SUFFIX + 1)) % (VOCAB - 1) + 1  # InstantLM.generate's rule
    whole = rows % MEMORIZED_EVERY == 1
    half = rows % MEMORIZED_EVERY == MEMORIZED_EVERY // 2
    tokens[whole, PREFIX:] = generated[whole]
    tokens[half, PREFIX:PREFIX + SUFFIX // 2] = generated[half, :SUFFIX // 2]


def build_map(folder: Path, rows: int) -> Path:
    """A prefix map of ``rows`` rows written in chunks (as `mia prefix` writes one)."""
    sys.path.insert(0, str(ROOT))
    from mia_core.formats.prefixmap import PrefixMapWriter

    attrs = {"tokenizer": "instant-tok", "tokenizer_fingerprint": InstantTokenizer.fingerprint,
             "prefix_loc": "random"}  # prompts drawn at random positions: `mia estimate` extrapolates over them
    writer = PrefixMapWriter(folder, PREFIX, SUFFIX, attrs, save_dataset=False)
    rng = np.random.default_rng(0)
    chunk = 50_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        tokens = rng.integers(1, VOCAB, (n, PREFIX + SUFFIX))
        _plant_memorized(tokens, start)
        ids = [f"s{i}" for i in range(start, start + n)]
        labels = ["member" if i % 2 else "nonmember" for i in range(start, start + n)]
        writer.add_rows(tokens[:, :PREFIX], tokens[:, PREFIX:].tolist(), list(range(start, start + n)), ids, labels,
                        [0] * n)
    return writer.finish({})


def step(args: list[str], cwd: Path) -> tuple[float, int]:
    """One `mia` command in a fresh process: (seconds, peak RSS in bytes)."""
    rss_file = cwd / ".rss"
    env = {**os.environ, "MIA_BENCH_RSS": str(rss_file), "PYTHONPATH": str(ROOT / "bench")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--as-mia", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mia {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, int(rss_file.read_text()) * 1024


def measure(rows: int, work: Path, steps: list[str]) -> dict[str, dict[str, float]]:
    """Every step on a map of ``rows`` rows: {step: {seconds, rows_per_s, peak_rss_mb}}."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():  # the outputs of an earlier run; a finished map of this size is reused
        if old.name != "map":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    pmap = work / "map"
    if not (pmap / "prefix_map.h5").is_file():  # built in its own process: the benchmark's RSS stays small
        shutil.rmtree(pmap, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--build-map", str(pmap), str(rows)], check=True)
    commands = {
        "prompt": [prompt_args(pmap, "run.h5")],
        "check": [["check", "--prefix_map", str(pmap), "--model", "instant", "--batch_size", "512",
                   "--out", "check.h5"]],  # with its summary (the p quantiles)
        "score": [["score", "run.h5"]],
        "estimate": [["estimate", "run.h5"]],
        "report": [["report", "run.h5", "--out", "report.html"]],
        "export": [["export", "run.h5", "--out", "run.jsonl"]],
        "show": [["show", "run.h5"], ["show", str(pmap)]],
        "attack": [["attack", str(pmap), "--model", "instant", "--signals", "loss,zlib,mink", "--bootstrap", "0",
                    "--batch-size", "512", "--out-dir", "attacks"]],
        "shards": [["prompt", "--prefix_map", str(pmap), "--model", "instant", "--max_length", str(SUFFIX),
                    "--batch_size", "512", "--shard", f"{i}/2", "--out", f"shard{i}.h5", "-q"] for i in range(2)],
        "merge": [["merge", "shard0.h5", "shard1.h5", "--out", "merged.h5", "-q"]],
    }
    out = {}
    for name in steps:
        seconds, peak = 0.0, 0
        for command in commands[name]:
            s, p = step(command, work)
            seconds, peak = seconds + s, max(peak, p)
        out[name] = {"seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peak / 2**20}
        print(f"  {rows:>9} rows  {name:<8} {seconds:8.1f} s  {rows / seconds:>9.0f} rows/s  "
              f"peak RSS {peak / 2**20:7.0f} MB", flush=True)
    return out


def prompt_args(pmap: Path, out: str) -> list[str]:
    return ["prompt", "--prefix_map", str(pmap), "--model", "instant", "--max_length", str(SUFFIX),
            "--batch_size", "512", "--out", out, "-q"]


def kill_compaction(rows: int, work: Path) -> None:
    """SIGKILL `mia prompt` while it compacts a run of ``rows`` rows (its compacted copy half written, the run
    file at least a quarter of its final size), resume it with ``mia prompt --resume``, and compare it with an
    uninterrupted run of the same map: every column equal row for row, the run complete. Exits 1 otherwise."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        if old.name != "map":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    pmap = work / "map"
    if not (pmap / "prefix_map.h5").is_file():
        shutil.rmtree(pmap, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--build-map", str(pmap), str(rows)], check=True)
    seconds, _ = step(prompt_args(pmap, "whole.h5"), work)
    whole_size = (work / "whole.h5").stat().st_size
    print(f"  uninterrupted run: {rows} rows in {seconds:.1f} s, {whole_size / 2**20:.0f} MB", flush=True)
    env = {**os.environ, "MIA_BENCH_RSS": str(work / ".rss"), "PYTHONPATH": str(ROOT / "bench")}
    killed = work / "killed.h5"
    proc = subprocess.Popen([sys.executable, __file__, "--as-mia", *prompt_args(pmap, killed.name)], cwd=work, env=env)
    temp = work / f".{killed.name}.{proc.pid}.tmp"  # where this process's compaction writes (formats.safeio)
    caught = None
    while proc.poll() is None:
        try:
            size, copied = killed.stat().st_size, temp.stat().st_size
        except FileNotFoundError:
            time.sleep(0.005)
            continue
        if size >= whole_size // 4 and copied >= size // 2:
            proc.kill()
            caught = (size, copied)
            break
        time.sleep(0.005)
    proc.wait()
    if caught is None:
        raise SystemExit(f"no compaction of a run of at least {whole_size // 4} bytes was caught; give more rows")
    journal = killed.with_name(killed.name + ".journal")
    print(f"  killed during compaction: run file {caught[0] / 2**20:.0f} MB, its compacted copy at "
          f"{caught[1] / 2**20:.0f} MB, journal {journal.stat().st_size / 2**20:.0f} MB", flush=True)
    seconds, peak = step(["prompt", "--resume", killed.name, "-q"], work)
    print(f"  resumed in {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MB", flush=True)
    differences = compare_runs(work / "whole.h5", killed)
    differences += [f"{t.name} left beside the run" for t in work.glob(f".{killed.name}.*.tmp")]
    differences += ["its journal is left beside the run"] if journal.exists() else []
    if differences:
        raise SystemExit("the resumed run differs from the uninterrupted one: " + "; ".join(differences))
    print(f"  the resumed run equals the uninterrupted one: {rows} rows, every column, row for row")


def compare_runs(a: Path, b: Path) -> list[str]:
    """What differs between two runs: rows, completeness, and each column read a slice at a time."""
    sys.path.insert(0, str(ROOT))
    from mia_core.formats.runs import open_run

    first, second = open_run(a), open_run(b)
    out = [] if first.complete and second.complete else ["a run is not complete"]
    if len(first) != len(second) or first.columns != second.columns:
        return out + [f"{len(first)} vs {len(second)} rows, columns {first.columns} vs {second.columns}"]
    for name in first.columns:
        for start in range(0, len(first), 65_536):
            rows = slice(start, min(start + 65_536, len(first)))
            x, y = first.read(name, rows), second.read(name, rows)
            same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y)
            if not same:
                out.append(f"column {name} differs in rows {rows.start}..{rows.stop - 1}")
                break
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")),
        platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-mia":
        run_mia()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--build-map":
        build_map(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("scale_bench"))
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--assert-flat", type=float, default=None,
                        help="exit 1 when a step's peak RSS exceeds this multiple of its first-size figure")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--kill-compaction", type=int, metavar="ROWS", default=None,
                        help="instead: SIGKILL mia prompt during the compaction of a run of ROWS rows, resume it and "
                             "check it equals an uninterrupted run")
    args = parser.parse_args()
    if args.kill_compaction is not None:
        print(f"scale_bench: {machine()}", flush=True)
        kill_compaction(args.kill_compaction, args.out / f"kill_{args.kill_compaction}")
        return
    steps = [s for s in args.steps.split(",") if s]
    print(f"scale_bench: {machine()}", flush=True)
    figures = {rows: measure(rows, args.out / str(rows), steps) for rows in args.rows}
    base_rows = args.rows[0]
    base = figures[base_rows]
    grown = []
    print(f"ratios to {base_rows} rows (time per row; peak RSS):")
    for rows in args.rows[1:]:
        for name in steps:
            per_row = (figures[rows][name]["seconds"] / rows) / (base[name]["seconds"] / base_rows)
            memory = figures[rows][name]["peak_rss_mb"] / base[name]["peak_rss_mb"]
            print(f"  {rows:>9} rows  {name:<8} time/row {per_row:5.2f}×  peak RSS {memory:5.2f}×")
            if args.assert_flat is not None and memory > args.assert_flat:
                grown.append(f"{name} at {rows} rows: peak RSS {memory:.2f}× the {base_rows}-row figure")
    print(f"load at the end: {machine().rsplit('load ', 1)[1]}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "figures": figures}, indent=2))
    if grown:
        raise SystemExit("memory grows with the run: " + "; ".join(grown))


if __name__ == "__main__":
    main()
