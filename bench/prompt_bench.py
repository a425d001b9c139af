"""Benchmark of `mia prompt` and the teacher-forced check (gemma-3-270m on CPU by default).

One run, same model and prefixes, greedy decoding:

- mia prompt (``mia_core.extraction.prompt.prompt`` at ``--batch-size``, run file written)
- (a) a naive loop calling ``model.generate`` on one prefix at a time
- (b) raw ``model.generate`` on the same batches (no mia around it)
- the teacher-forced check (``method="teacher-forced"``) over the same prefixes and as
  many suffix tokens as generation produces

Prints tokens/s of each and the ratios (targets at batch 32: mia/(a) >= 6, mia/(b) >= 0.9,
check/generation >= 10). Tokens are counted up to EOS, the same way for every contender.
The naive loop (and the check at batch 1) run on the first ``--naive`` prefixes only (their
tokens/s does not depend on how many they do). Timings on a shared machine are noisy: the
contenders run ``--repeat`` rounds, interleaved in a rotating order, and each one's best is kept.

    python bench/prompt_bench.py [--model gemma-3-270m] [--batch-size 32] [--max-length 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mia_core import registry
from mia_core.extraction.prompt import prompt
from mia_core.formats.prefixmap import PrefixMap, PrefixMapWriter

TEXTS = [Path("/usr/share/common-licenses") / n for n in ("Apache-2.0", "GPL-3", "MPL-2.0", "Artistic")]
FALLBACK = ("We the People of the United States, in Order to form a more perfect Union, establish Justice, insure "
            "domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the "
            "Blessings of Liberty to ourselves and our Posterity, do ordain and establish this Constitution. ") * 40


def build_map(folder: Path, tokenizer, n: int, prefix: int, suffix: int) -> Path:
    docs = [p.read_text(errors="replace") for p in TEXTS if p.exists()] or [FALLBACK]
    ids = [t for t in tokenizer.encode_batch(docs) if len(t) >= prefix + suffix]
    rows, s = [], []
    step = prefix + suffix
    for k in range(n):  # windows spread over the documents
        doc = ids[k % len(ids)]
        off = (k // len(ids)) * step * 3 % (len(doc) - step)
        rows.append(doc[off:off + prefix])
        s.append(doc[off + prefix:off + step])
    w = PrefixMapWriter(folder, prefix, suffix, {"tokenizer": tokenizer.name,
                                                 "tokenizer_fingerprint": tokenizer.fingerprint,
                                                 "dataset": "bench"}, save_dataset=False)
    w.add_rows(np.array(rows), s, list(range(n)), [f"w{k}" for k in range(n)], ["member"] * n, [0] * n)
    return w.finish({})


def count_new(rows, eos):
    total = 0
    for row in rows:
        row = list(row)
        total += row.index(eos) if eos is not None and eos in row else len(row)
    return total


def raw_generate(backend, prefixes, max_length):
    """model.generate directly on one batch (BOS prepended like the backend does)."""
    import torch
    from transformers import GenerationConfig

    bos = [backend.tokenizer.bos_id] if backend.bos_prepended else []
    ids = torch.tensor([bos + list(map(int, p)) for p in prefixes], dtype=torch.long)
    config = GenerationConfig(max_new_tokens=max_length, do_sample=False, eos_token_id=backend.eos_id,
                              pad_token_id=backend.pad_id)
    with torch.inference_mode():
        out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[:, ids.shape[1]:].tolist()


def best(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--prefix-tokens", type=int, default=32)
    ap.add_argument("--num-batches", type=int, default=1)
    ap.add_argument("--naive", type=int, default=4, help="prefixes for the one-at-a-time loop")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    t0 = time.perf_counter()
    backend = registry.backends.create(args.model, {"device": args.device})
    print(f"model {args.model} loaded in {time.perf_counter() - t0:.1f}s on {backend.device}, "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    n = args.batch_size * args.num_batches
    L, eos = args.max_length, backend.eos_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_map(Path(tmp) / "map", backend.tokenizer, n, args.prefix_tokens, L)
        prefixes = [list(map(int, p)) for p in PrefixMap(folder).read("prefixes")]
        raw_generate(backend, prefixes[:args.batch_size], 2)  # warm-up at full batch (first big run is slow)

        def run_mia():
            return prompt(folder, args.model, backend=backend, batch_size=args.batch_size, max_length=L, quiet=True)

        def run_raw():
            out = []
            for b in range(0, n, args.batch_size):
                out += raw_generate(backend, prefixes[b:b + args.batch_size], L)
            return out

        def run_check():
            return prompt(folder, args.model, backend=backend, method="teacher-forced", batch_size=args.batch_size,
                          max_length=L, quiet=True)

        k = min(args.naive, n)

        def run_naive():
            return [raw_generate(backend, [p], L)[0] for p in prefixes[:k]]

        def run_check1():  # the check one window at a time, on the naive loop's prefixes
            return prompt(folder, args.model, backend=backend, method="teacher-forced", batch_size=1,
                          num_strings=k, max_length=L, quiet=True)

        # Interleave the contenders round by round, rotating the order (the machine's load
        # drifts, and a run right after the check's big allocations is slower); keep each one's best.
        order = [("mia", run_mia), ("raw", run_raw), ("check", run_check), ("naive", run_naive),
                 ("check1", run_check1)]
        times: dict[str, float] = {}
        results: dict[str, object] = {}
        for r in range(args.repeat):
            shift = r % len(order)
            for name, fn in order[shift:] + order[:shift]:
                t, result = best(fn, 1)
                if t < times.get(name, float("inf")):
                    times[name], results[name] = t, result
        rows, raw, tf, naive, tf1 = (results[x] for x in ("mia", "raw", "check", "naive", "check1"))
        t_mia, t_raw, t_tf, t_naive, t_tf1 = (times[x] for x in ("mia", "raw", "check", "naive", "check1"))
        tok_mia = sum(len(r["generated_tokens"]) for r in rows)
        tok_raw = count_new(raw, eos)
        tok_tf = sum(len(r["generated_tokens"]) for r in tf)
        tok_naive = count_new(naive, eos)
        tok_tf1 = sum(len(r["generated_tokens"]) for r in tf1)

    same = [r["generated_tokens"] for r in rows] == [row[:count_new([row], eos)] for row in raw]
    r_mia, r_raw, r_naive, r_tf = tok_mia / t_mia, tok_raw / t_raw, tok_naive / t_naive, tok_tf / t_tf
    print(f"{args.model}, {n} prefixes of {args.prefix_tokens} tokens, max_length {L}, batch {args.batch_size}, "
          f"device {backend.device}")
    print(f"  mia prompt            {tok_mia:6d} tokens {t_mia:8.2f}s {r_mia:9.1f} tok/s")
    print(f"  (b) raw generate      {tok_raw:6d} tokens {t_raw:8.2f}s {r_raw:9.1f} tok/s  (same tokens: {same})")
    print(f"  (a) naive loop        {tok_naive:6d} tokens {t_naive:8.2f}s {r_naive:9.1f} tok/s  ({k} prefixes)")
    r_tf1 = tok_tf1 / t_tf1
    print(f"  teacher-forced check  {tok_tf:6d} tokens {t_tf:8.2f}s {r_tf:9.1f} tok/s")
    print(f"  check at batch 1      {tok_tf1:6d} tokens {t_tf1:8.2f}s {r_tf1:9.1f} tok/s  ({k} prefixes)")
    print(f"ratios: mia/naive {r_mia / r_naive:.1f}x (target >= 6), mia/raw {r_mia / r_raw:.2f}x (target >= 0.9), "
          f"check/generation {r_tf / r_mia:.1f}x at batch {args.batch_size}, {r_tf1 / r_naive:.1f}x at batch 1 "
          "(target >= 10)")


if __name__ == "__main__":
    main()
