"""How far mia's float outputs move when only the batch shape or the thread count changes.

    python bench/determinism_check.py [--real gemma-3-270m] [--rows 21] [--json]

Runs every float-producing path the test suite compares across computations, on the tiny random
models the tests build (tests/tiny_models.py: a Llama and a Gemma) and optionally on a real model:

- ``generate``: ``mia prompt`` greedy (tokens, per-token log-probs of the chosen tokens);
- ``sampled``: ``mia prompt`` with a seeded temperature 0.7 / top-k 3 scheme;
- ``teacher-forced``: ``mia check`` (argmax tokens, true-token log-probs, matched length);
- ``shards``: the same three through ``--shard I/3`` + ``mia merge`` (other batch compositions);
- ``score``: the attack's teacher-forced pass (``score_sequences``: log p, and the mean/std of log p
  over the vocabulary that Min-K%++ needs).

Each path runs at batch sizes 2 and 5 with ``torch.set_num_threads(1)`` and 2, and each result is
compared across one change at a time: thread count, batch size, and 3 shards merged against the
whole run. Printed per model, path and column: the largest absolute
difference of float columns (NaN positions must agree), and the number of differing elements of
integer columns (tokens, lengths, verdicts). The tests' tolerances (tests/run_equality.py) are set
from these figures with a margin; docs/prompt.md lists them.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BATCH_SIZES = (2, 5)
THREADS = (1, 2)


def cpu_model() -> str:
    """The CPU's model name and its bf16/AMX flags, as lscpu prints them."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    wanted = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{fields.get('Model name', '?').strip()} (flags: {', '.join(wanted) or 'no avx512/amx'})"


def build_map(backend: Any, folder: Path, rows: int, text: str) -> Path:
    """A prefix map of ``rows`` 8-token prefixes with 6-token suffixes of ``text``."""
    from mia_core.formats.prefixmap import PrefixMapWriter

    ids = backend.tokenizer.encode_batch([text])[0]
    p, s = 8, 6
    stride = max(1, (len(ids) - p - s) // rows)
    starts = [stride * i for i in range(rows)]
    writer = PrefixMapWriter(folder, p, s, {"tokenizer": backend.tokenizer.name,
                                            "tokenizer_fingerprint": backend.tokenizer.fingerprint},
                             save_dataset=False)
    writer.add_rows(np.array([ids[a:a + p] for a in starts]), [ids[a + p:a + p + s] for a in starts],
                    list(range(rows)), [f"z{i}" for i in range(rows)],
                    ["member" if i % 2 else "nonmember" for i in range(rows)], starts)
    return writer.finish({})


def run_columns(folder: Path, name: str, backend: Any, out: Path, batch_size: int, shards: int,
                **kw: Any) -> dict[str, np.ndarray]:
    """Every column of a run made whole (``shards`` 1) or as ``shards`` shards merged."""
    from mia_core.extraction.merge import merge_runs
    from mia_core.extraction.prompt import prompt
    from mia_core.formats.runs import open_run

    common = dict(backend=backend, batch_size=batch_size, max_length=5, quiet=True, **kw)
    if shards == 1:
        prompt(folder, name, out=out, **common)
        path = out
    else:
        parts = [out.with_name(f"{out.stem}_s{i}.h5") for i in range(shards)]
        for i, part in enumerate(parts):
            prompt(folder, name, out=part, shard=f"{i}/{shards}", **common)
        path = merge_runs(parts, out)
    run = open_run(path)
    return {column: np.asarray(run.read(column)) for column in run.columns}


def score_columns(backend: Any, sequences: list[list[int]], batch_size: int) -> dict[str, np.ndarray]:
    """The attack's teacher-forced pass, flattened per column."""
    from mia_core.attack.scoring import score_sequences

    scores = score_sequences(backend, sequences, batch_size, quiet=True)
    return {"logprob": np.concatenate([s.logprob for s in scores]),
            "argmax": np.concatenate([s.argmax for s in scores]),
            "mean": np.concatenate([s.mean for s in scores]), "std": np.concatenate([s.std for s in scores])}


def difference(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Largest absolute difference (floats) or count of differing elements (everything else)."""
    if a.dtype == object or b.dtype == object:  # ragged token rows
        differ = sum(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        return {"kind": "rows", "differ": int(differ), "of": len(a)}
    if a.shape != b.shape:
        return {"kind": "shape", "differ": -1, "of": int(a.size)}
    if a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        both = ~nan_a & ~nan_b
        diff = float(np.max(np.abs(a[both].astype(np.float64) - b[both]), initial=0.0))
        return {"kind": "float", "max_abs": diff, "nan_mismatch": int((nan_a != nan_b).sum()), "of": int(a.size)}
    return {"kind": "int", "differ": int((a != b).sum()), "of": int(a.size)}


def check_model(name: str, backend: Any, text: str, rows: int, work: Path) -> list[dict[str, Any]]:
    import torch

    from mia_core.types import Sampling

    folder = build_map(backend, work / "map", rows, text)
    sequences = [list(r) for r in backend.tokenizer.encode_batch(text.splitlines()[:rows]) if len(r) > 1]
    paths = {"generate": dict(method="generate"), "teacher-forced": dict(method="teacher-forced"),
             "sampled": dict(method="generate", sampling=Sampling(temperature=0.7, top_k=3, seed=1))}
    outputs: dict[tuple[int, int, str], dict[str, np.ndarray]] = {}
    for threads in THREADS:
        torch.set_num_threads(threads)
        for batch_size in BATCH_SIZES:
            for path, kw in paths.items():
                for shards in (1, 3):
                    out = work / f"{path}_{shards}_{batch_size}_{threads}.h5"
                    columns = run_columns(folder, name, backend, out, batch_size, shards, **kw)
                    outputs[threads, batch_size, path if shards == 1 else f"{path} [3 shards merged]"] = columns
            outputs[threads, batch_size, "score"] = score_columns(backend, sequences, batch_size)
    return list(compare(outputs))


def compare(outputs: dict[tuple[int, int, str], dict[str, np.ndarray]]) -> Any:
    """The three changes of computation the tests meet: thread count, batch size, shards vs whole."""
    first_threads, first_batch = THREADS[0], BATCH_SIZES[0]
    for (threads, batch_size, label), columns in outputs.items():
        whole = label.split(" [")[0]
        pairs = []
        if threads != first_threads:
            pairs.append(("threads 2 vs 1", (first_threads, batch_size, label)))
        if batch_size != first_batch:
            pairs.append(("batch 5 vs 2", (threads, first_batch, label)))
        if whole != label:
            pairs.append(("3 shards merged vs whole", (threads, batch_size, whole)))
        for change, key in pairs:
            for column, values in columns.items():
                yield {"path": whole, "change": change, "column": column,
                       **difference(outputs[key][column], values)}


def print_table(results: list[dict[str, Any]]) -> None:
    """Per model, path and column: the worst case over the configurations."""
    worst: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["model"], r["path"], r["change"], r["column"])
        score = r.get("max_abs", r.get("differ", 0))
        if key not in worst or score > worst[key].get("max_abs", worst[key].get("differ", 0)):
            worst[key] = r
    print(f"{'model':<14} {'path':<15} {'change':<25} {'column':<15} worst difference")
    for (model, path, change, column), r in sorted(worst.items()):
        if r["kind"] == "float":
            what = f"max |Δ| {r['max_abs']:.3g} ({r['nan_mismatch']} NaN mismatches)"
        else:
            what = f"{r['differ']} of {r['of']} differ"
        if path == "sampled" and change != "threads 2 vs 1" and r.get("differ"):
            what += " (by design: a batch's seed is --seed + its first row)"
        print(f"{model:<14} {path:<15} {change:<25} {column:<15} {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="append", default=[], help="also a real model (e.g. gemma-3-270m)")
    parser.add_argument("--rows", type=int, default=21, help="prefix-map rows per model")
    parser.add_argument("--json", action="store_true", help="print every comparison as JSON too")
    args = parser.parse_args()

    import torch
    from tiny_models import make_tiny_gemma, make_tiny_llama, training_text

    from mia_core import registry

    print(f"CPU: {cpu_model()}; torch {torch.__version__}; load average {open('/proc/loadavg').read().split()[:3]}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"tiny-llama": str(make_tiny_llama(work / "llama")),
                  "tiny-gemma": str(make_tiny_gemma(work / "gemma"))}
        models.update({name: name for name in args.real})
        for label, name in models.items():
            backend = registry.backends.create(name, {"device": "cpu"})
            text = training_text()
            if label in args.real:
                corpus = registry.datasets.create("corpus", {})
                text = "\n".join(sample.text for _, sample in zip(range(40), corpus, strict=False))
            (work / label).mkdir()
            results += [dict(r, model=label) for r in check_model(name, backend, text, args.rows, work / label)]
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
