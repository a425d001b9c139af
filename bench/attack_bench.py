"""Benchmark of `mia attack` scoring: tokens/s through mia's attack path against a raw batched
forward pass, in the same process, on the same model object and the same token sequences.

    python bench/attack_bench.py [--model gemma-3-270m] [--samples 16] [--tokens 128] [--batch-size 8]
                                 [--repeats 3] [--json]

- mia: ``mia_core.attack.run.attack`` on the embedded corpus's first ``--samples`` texts,
  tokenized by the model's tokenizer and truncated to ``--tokens`` tokens, with the signals
  loss, zlib and mink: the backend's ``score`` (BOS prepended, per-position log p and argmax)
  plus the signals and the teacher-forced verdict bookkeeping; no bootstrap, no file written.
- mia+minkpp: the same with Min-K%++ too, for which ``score`` also computes the mean and std
  of log p over the whole vocabulary at every position.
- raw: ``model(input_ids).logits`` + ``log_softmax`` + gathering log p of the true tokens, in
  batches of ``--batch-size`` (BOS + tokens, all the same length, so no padding either way).
- raw+stats: the same plus the argmax and the mean/std of log p under p at every position
  (what Min-K%++ needs): the same work as mia+minkpp, so mia+minkpp/raw+stats is the cost of
  mia's own code there.

Repeats alternate raw and mia; the best run of each counts, in wall-clock time and in CPU
time (process CPU seconds: robust to other load on a shared machine; the load average is
printed). Target: mia ≥ 0.9 × raw tokens/s (and mia+minkpp ≥ 0.9 × raw+stats).

The beyond-the-anchors signals (issue 17) are timed once each, after the repeats, as wall time
relative to the one-pass ``mia`` path on the same strings, with the forward passes per string the
attack records: a Min-K%/Min-K%++ sweep over 4 fractions (no extra pass: its time should equal
mia+minkpp's), ReCaLL (``recall``: +1 pass over prefix + string, the prefix a fixed 30-word
sentence), the neighbourhood attack (``ne``, ``--neighbours`` passes) and probabilistic extraction
(p of each string's last 32 tokens under temperature 0.8/top-k 40/top-p 0.95, the first tokens as
prefix: one pass). ``--no-extra`` skips them.

``--head-chunk-rows N`` is a what-if: the HF backend computes the LM head (262k-token vocabulary
for Gemma) in chunks of positions, a module constant; this sets it to N positions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TARGET = 0.9


def raw_pass(model, sequences: list[list[int]], bos: int | None, batch_size: int, stats: bool = False) -> int:
    """Raw batched forward: logits + log_softmax + log p of the true tokens (and, with ``stats``,
    the argmax and the mean/std of log p under p that Min-K%++ needs, as the backend computes)."""
    import torch

    scored = 0
    with torch.inference_mode():
        for a in range(0, len(sequences), batch_size):
            batch = sequences[a:a + batch_size]
            rows = [([bos] if bos is not None else []) + s for s in batch]
            ids = torch.tensor(rows)
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
            picked = logp[:, :-1].gather(-1, ids[:, 1:, None])  # log p of every token that has a context
            if stats:
                p = logp.exp()
                mu = (p * logp).sum(-1)
                ((p * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
                logp.argmax(-1)
            scored += picked.numel()
    return scored


def timed(fn) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head-chunk-rows", type=int, default=None,
                        help="What-if: positions per LM-head chunk in the mia_hf backend (default: the backend's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both paths (1 is steadiest on a shared machine)")
    parser.add_argument("--neighbours", type=int, default=4, help="Neighbours per string for the ne timing")
    parser.add_argument("--no-extra", action="store_true", help="Skip timing the sweep, recall, ne and p")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mia_core import registry
    from mia_core.attack.items import Item
    from mia_core.attack.run import AttackConfig, attack

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load = time.perf_counter()
    backend = registry.backends.create(args.model, {"device": "cpu"})
    load = time.perf_counter() - load
    chunk_rows = None
    if args.head_chunk_rows:  # what-if experiment on the HF backend's head chunking (a module constant)
        module = sys.modules.get(type(backend).__module__)
        vocab = backend.model.get_output_embeddings().weight.shape[0]
        if module is None or not hasattr(module, "HEAD_CHUNK_ELEMENTS"):
            raise SystemExit("--head-chunk-rows needs the mia_hf backend")
        module.HEAD_CHUNK_ELEMENTS = args.head_chunk_rows * vocab
    module = sys.modules.get(type(backend).__module__)
    if module is not None and hasattr(module, "HEAD_CHUNK_ELEMENTS"):
        chunk_rows = module.HEAD_CHUNK_ELEMENTS // backend.model.get_output_embeddings().weight.shape[0]
    samples = [s for s in registry.datasets.create("corpus", {}) if s.text.strip()]
    encoded = backend.tokenizer.encode_batch([s.text for s in samples])
    pairs = [(s, ids[:args.tokens]) for s, ids in zip(samples, encoded, strict=True) if len(ids) >= args.tokens]
    pairs = pairs[:args.samples]
    sequences = [list(map(int, ids)) for _, ids in pairs]
    texts = backend.tokenizer.decode_batch(sequences)
    items = [Item(s.id, s.label or "", ids, text, True) for (s, _), ids, text in zip(pairs, sequences, texts,
                                                                                       strict=True)]
    bos = backend.tokenizer.bos_id if backend.describe().get("bos_prepended") else None
    # the scoring path only: no label check, no blind baseline (neither touches the model)
    config = AttackConfig(signals=["loss", "zlib", "mink"], batch_size=args.batch_size, n_boot=0, quiet=True,
                          blind=False, require_labels=False)
    config_pp = AttackConfig(signals=["loss", "zlib", "mink", "minkpp"], batch_size=args.batch_size, n_boot=0,
                             quiet=True, blind=False, require_labels=False)

    def run_mia() -> int:
        return attack(backend, items, config).counts["tokens_scored"]

    def run_mia_pp() -> int:
        return attack(backend, items, config_pp).counts["tokens_scored"]

    def run_raw() -> int:
        return raw_pass(backend.model, sequences, bos, args.batch_size)

    def run_raw_stats() -> int:
        return raw_pass(backend.model, sequences, bos, args.batch_size, stats=True)

    run_raw()  # warm-up (allocator, kernels)
    run_mia()  # warm-up (the backend checks its body/head split once)
    results: dict[str, list[tuple[float, float, int]]] = {"raw": [], "mia": [], "raw+stats": [], "mia+minkpp": []}
    for _ in range(args.repeats):
        results["raw"].append(timed(run_raw))
        results["mia"].append(timed(run_mia))
        results["raw+stats"].append(timed(run_raw_stats))
        results["mia+minkpp"].append(timed(run_mia_pp))
    extra = {} if args.no_extra else extra_signals(backend, items, args, figures_base=results)
    figures = {}
    for name, runs in results.items():
        n = runs[0][2]
        figures[name] = {"tokens": n, "wall_s": min(r[0] for r in runs), "cpu_s": min(r[1] for r in runs),
                         "tokens_per_s": n / min(r[0] for r in runs), "tokens_per_cpu_s": n / min(r[1] for r in runs)}
    summary = {
        "model": args.model, "samples": len(sequences), "tokens_per_sample": args.tokens,
        "batch_size": args.batch_size, "repeats": args.repeats, "head_chunk_rows": chunk_rows,
        "threads": args.threads, "model_load_s": load,
        "load_average": os.getloadavg(), "cpus": os.cpu_count(), **figures,
        "ratio_wall": figures["mia"]["tokens_per_s"] / figures["raw"]["tokens_per_s"],
        "ratio_cpu": figures["mia"]["tokens_per_cpu_s"] / figures["raw"]["tokens_per_cpu_s"],
        "ratio_wall_minkpp": figures["mia+minkpp"]["tokens_per_s"] / figures["raw+stats"]["tokens_per_s"],
        "ratio_cpu_minkpp": figures["mia+minkpp"]["tokens_per_cpu_s"] / figures["raw+stats"]["tokens_per_cpu_s"],
        "target": TARGET, "extra": extra,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.model}: {len(sequences)} sequences x {args.tokens} tokens, batch {args.batch_size}, "
          f"LM head in chunks of {chunk_rows} positions, best of {args.repeats};\n"
          f"  load average {summary['load_average'][0]:.1f} on {summary['cpus']} CPUs")
    for name in results:
        f = figures[name]
        print(f"  {name:10s} {f['tokens_per_s']:8.1f} tokens/s wall  {f['tokens_per_cpu_s']:8.1f} tokens/CPU-s  "
              f"({f['tokens']} tokens)")
    ok = "meets" if summary["ratio_wall"] >= TARGET else "misses"
    print(f"  mia/raw: {summary['ratio_wall']:.2f}x wall, {summary['ratio_cpu']:.2f}x CPU ({ok} the {TARGET}x target)")
    ok = "meets" if summary["ratio_wall_minkpp"] >= TARGET else "misses"
    print(f"  mia+minkpp/raw+stats: {summary['ratio_wall_minkpp']:.2f}x wall, "
          f"{summary['ratio_cpu_minkpp']:.2f}x CPU ({ok} the {TARGET}x target)")
    if extra:
        print("  new signals (timed once; time relative to the one-pass mia+minkpp path):")
        for name, e in extra.items():
            print(f"  {name:28s} {e['wall_s']:7.2f} s  {e['relative_time']:5.2f}x  "
                  f"forward passes per string: {e['passes']}")


def extra_signals(backend, items, args, figures_base) -> dict:
    """Wall time of each new signal (one run each) and its forward passes per string."""
    from mia_core.attack.run import AttackConfig, attack
    from mia_core.matching.probabilistic import probabilities
    from mia_core.types import Sampling

    base = min(r[0] for r in figures_base["mia+minkpp"])
    common = {"batch_size": args.batch_size, "n_boot": 0, "quiet": True, "blind": False, "require_labels": False}
    prefix = ("The committee met on a grey morning to discuss the budget for the coming year, and after a long "
              "debate about roads, schools and the harbour it adjourned without a vote.")
    runs = {
        "sweep mink+minkpp x4 fractions": AttackConfig(signals=["loss", "mink", "minkpp"], k=[0.05, 0.1, 0.2, 0.5],
                                                       **common),
        "recall": AttackConfig(signals=["loss", "recall"], recall_prefix=prefix, **common),
        f"ne ({args.neighbours} neighbours)": AttackConfig(signals=["loss", "ne"], neighbours=args.neighbours,
                                                           **common),
    }
    out = {}
    for name, config in runs.items():
        wall = time.perf_counter()
        outcome = attack(backend, items, config)
        wall = time.perf_counter() - wall
        out[name] = {"wall_s": wall, "relative_time": wall / base,
                     "passes": outcome.attrs["forward_passes_per_string"]}
    tail = 32
    wall = time.perf_counter()
    probabilities(backend, [it.tokens[:-tail] for it in items], [it.tokens[-tail:] for it in items],
                  Sampling(temperature=0.8, top_k=40, top_p=0.95), args.batch_size)
    wall = time.perf_counter() - wall
    out["probabilistic extraction p"] = {"wall_s": wall, "relative_time": wall / base, "passes": {"target": 1.0}}
    return out


if __name__ == "__main__":
    main()
