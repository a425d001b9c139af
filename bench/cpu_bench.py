"""CPU speed of gemma-3-270m: mia's backends against the raw engines, in one run and one process order.

Generation: greedy, ``--new`` new tokens from ``--prefix``-token prefixes of the embedded corpus, at each
batch size of ``--batches`` (batch 1 over ``--single-rows`` rows only: its tok/s does not depend on how
many). Scoring: one teacher-forced pass over prefix + suffix (``--prefix`` + ``--new`` tokens) of
every row, at batch 32, log-probs of the true tokens (mia: ``score(distribution=True)``, i.e. with the
Min-K%++ moments; raw: the engine's logits and a log-softmax), ``--score-repeats`` times per contender
(the median time counts: one pass takes seconds, so a single one is at the mercy of a noisy neighbour).

Contenders, in this order for every measurement: mia HF fp32 (``gemma-3-270m``, mia's CPU default),
mia HF bf16, mia llama.cpp (``llamacpp:gemma-3-270m``), mia HF bf16 with ``data_parallel_size=2`` on Ray
(``--replicas``: two replicas of one core each; their start is not timed), raw transformers fp32 and bf16
(``model.generate`` / ``model(ids)``), raw llama.cpp (llama-cpp-python's low-level batch API: every
sequence in one ``llama_decode`` per step, argmax in numpy; no mia code). tok/s counts generated
(or scored) tokens, up to EOS for generation, the same way for every contender.

    python bench/cpu_bench.py [--batches 1,32,128] [--prefix 32] [--new 32] [--score-repeats 3]
                              [--generate-repeats 1] [--replicas 2] [--only "mia llama.cpp,raw llama.cpp"]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mia_core import registry
from mia_core.types import Sampling

GEMMA = "gemma-3-270m"


def host() -> str:
    info = open("/proc/cpuinfo").read()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    extras = [f for f in ("avx512_bf16", "amx_bf16", "avx2") if f" {f}" in info]
    return f"{model} ({', '.join(extras)}), {len(__import__('os').sched_getaffinity(0))} CPUs"


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def corpus_rows(prefix: int, new: int) -> list[list[int]]:
    tok = registry.tokenizers.create(GEMMA)
    ids = tok.encode_batch([s.text for s in registry.datasets.create("corpus")])
    return [row[:prefix + new] for row in ids if len(row) >= prefix + new]


def count_new(rows: list[list[int]], eos: int | None) -> int:
    return sum(row.index(eos) if eos in row else len(row) for row in map(list, rows))


class RawLlama:
    """llama.cpp through llama-cpp-python's C bindings only (what a user of its batch API writes)."""

    def __init__(self, path: str, n_ctx: int = 16384, n_batch: int = 512) -> None:
        import llama_cpp
        from llama_cpp import _logger

        _logger.set_verbose(False)
        self.ll = llama_cpp
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab, self.bos = llama_cpp.llama_vocab_n_tokens(vocab), llama_cpp.llama_vocab_bos(vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_seq_max, params.kv_unified, params.swa_full = 256, True, True
        threads = len(__import__("os").sched_getaffinity(0))
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """(token, seq, pos, want logits) items, in calls of n_batch tokens; the logits wanted."""
        out = []
        for lo in range(0, len(items), self.n_batch):
            chunk = items[lo:lo + self.n_batch]
            b = self.batch
            b.n_tokens = len(chunk)
            for i, (token, seq, pos, logits) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
                b.seq_id[i][0] = seq
            assert self.ll.llama_decode(self.ctx, b) == 0
            for i, item in enumerate(chunk):  # llama_get_logits_ith maps a batch index to its logits row
                if item[3]:
                    ptr = self.ll.llama_get_logits_ith(self.ctx, i)
                    out.append(np.ctypeslib.as_array(ptr, shape=(1, self.n_vocab)).copy())
        return np.concatenate(out)

    def generate(self, prefixes: list[list[int]], new: int) -> list[list[int]]:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        rows = [[self.bos, *p] for p in prefixes]
        logits = self._decode([(t, s, p, p == len(r) - 1) for s, r in enumerate(rows) for p, t in enumerate(r)])
        out: list[list[int]] = [[] for _ in rows]
        for step in range(new):
            for s, token in enumerate(logits.argmax(-1).tolist()):
                out[s].append(token)
            if step < new - 1:
                logits = self._decode([(out[s][-1], s, len(rows[s]) + step, True) for s in range(len(rows))])
        return out

    def score(self, sequences: list[list[int]]) -> int:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        rows = [[self.bos, *q] for q in sequences]
        done = 0
        for lo in range(0, len(rows), 4):  # 4 rows per pass: their logits (65 x 262k floats each) fit in memory
            part = rows[lo:lo + 4]
            logits = self._decode([(t, lo + s, p, p < len(r) - 1) for s, r in enumerate(part) for p, t in enumerate(r)])
            x = logits.astype(np.float64)
            _ = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
            done += len(logits)
        return done


def raw_hf(dtype: str) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
    import torch
    from mia_hf.loading import gguf_model_dir
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(str(gguf_model_dir(GEMMA)), dtype=getattr(torch, dtype)).eval()
    tok = registry.tokenizers.create(GEMMA)
    bos, eos = tok.bos_id, tok.eos_id

    def generate(prefixes: list[list[int]], new: int) -> list[list[int]]:
        ids = torch.tensor([[bos, *p] for p in prefixes])
        config = GenerationConfig(max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=eos)
        with torch.inference_mode():
            return model.generate(input_ids=ids, generation_config=config)[:, ids.shape[1]:].tolist()

    def score(sequences: list[list[int]]) -> int:
        ids = torch.tensor([[bos, *q] for q in sequences])
        with torch.inference_mode():
            logits = model(input_ids=ids[:, :-1]).logits.float()
            torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])
        return ids[:, 1:].numel()

    return model, generate, score


def contenders(replicas: int, only: set[str] | None = None) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """name -> (generate(prefixes, new) -> rows, score(sequences) -> tokens scored); ``only``: these names."""
    out: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}
    mia = [("mia HF fp32", GEMMA, {"device": "cpu", "dtype": "float32"}),
           ("mia HF bf16", GEMMA, {"device": "cpu", "dtype": "bfloat16"}),
           ("mia llama.cpp", f"llamacpp:{GEMMA}", {})]
    if replicas > 1:  # the cores shared out: replicas of one thread each on a 2-core machine
        mia.append((f"mia HF bf16 x{replicas} Ray", GEMMA,
                    {"device": "cpu", "dtype": "bfloat16", "data_parallel_size": replicas}))
    for name, model, options in mia:
        if only is not None and name not in only:
            continue
        backend = registry.backends.create(model, options)
        out[name] = (lambda p, n, b=backend: b.generate(p, n, Sampling()),
                     lambda q, b=backend: sum(len(s.logprob) for s in b.score(q, 1, distribution=True)))
    for dtype in ("float32", "bfloat16"):
        if only is None or f"raw transformers {dtype}" in only:
            _, generate, score = raw_hf(dtype)
            out[f"raw transformers {dtype}"] = (generate, score)
    if only is None or "raw llama.cpp" in only:
        from mia_hf import sources

        raw = RawLlama(str(sources.gguf_file(GEMMA)))
        out["raw llama.cpp"] = (raw.generate, raw.score)
    return out


def measure(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32,128", help="generation batch sizes ('': scoring only)")
    parser.add_argument("--prefix", type=int, default=32)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--single-rows", type=int, default=4)
    parser.add_argument("--score-repeats", type=int, default=3,
                        help="score the 32 rows this many times per contender; the median speed counts (0: no scoring)")
    parser.add_argument("--generate-repeats", type=int, default=1,
                        help="time each generation this many times per contender; the median speed counts")
    parser.add_argument("--replicas", type=int, default=2,
                        help="also mia HF bf16 with data_parallel_size=N on Ray (replicas share the cores; 0: not)")
    parser.add_argument("--only", help="comma-separated contender names (a rerun of some; default: all)")
    args = parser.parse_args()
    print(f"CPU: {host()}; load average at start {load()}")
    rows = corpus_rows(args.prefix, args.new)
    prefixes = [r[:args.prefix] for r in rows]
    runs = contenders(args.replicas, set(args.only.split(",")) if args.only else None)
    speeds: dict[tuple[str, int, str], float] = {}
    eos = registry.tokenizers.create(GEMMA).eos_id
    for batch in [int(b) for b in args.batches.split(",") if b]:
        n = args.single_rows if batch == 1 else min(batch, len(prefixes))
        if batch > len(prefixes):
            prefixes_b = (prefixes * (batch // len(prefixes) + 1))[:batch]
        else:
            prefixes_b = prefixes[:n]
        for name, (generate, _) in runs.items():
            calls = [prefixes_b[i:i + batch] for i in range(0, len(prefixes_b), batch)]
            timed = [measure(lambda calls=calls, g=generate: [r for c in calls for r in g(c, args.new)])
                     for _ in range(args.generate_repeats)]
            outs, seconds = timed[0][0], statistics.median(t for _, t in timed)
            tokens = count_new(outs, eos)
            speeds[("generate", batch, name)] = tokens / seconds
            print(f"generate batch {batch:3d} ({len(prefixes_b)} rows, {args.new} new): {name:26s} "
                  f"{tokens / seconds:8.1f} tok/s ({tokens} tokens, {seconds:.1f} s"
                  + (f", median of {len(timed)}: {', '.join(f'{t:.1f}' for _, t in timed)} s" if len(timed) > 1 else "")
                  + f"; load {load()})")
    sequences = rows[:32]
    for name, (_, score) in runs.items() if args.score_repeats > 0 else ():
        timed = [measure(lambda s=score: s(sequences)) for _ in range(args.score_repeats)]
        scored, seconds = timed[0][0], statistics.median(t for _, t in timed)
        speeds[("score", 32, name)] = scored / seconds
        print(f"score batch 32 ({len(sequences)} rows of {args.prefix + args.new} tokens): {name:26s} "
              f"{scored / seconds:8.1f} tok/s ({scored} positions, median of {len(timed)}: {seconds:.1f} s, "
              f"all {', '.join(f'{t:.1f}' for _, t in timed)} s; load {load()})")
    print_ratios(speeds)
    print(f"load average at end {load()}")


def print_ratios(speeds: dict[tuple[str, int, str], float]) -> None:
    """Against the issue's targets: mia's fastest path over mia's CPU default (HF fp32), and mia on
    llama.cpp over raw llama.cpp, per measurement (tok/s ratios; those whose contenders ran)."""
    for kind, batch in sorted({(k, b) for k, b, _ in speeds}):
        got = {name: v for (k, b, name), v in speeds.items() if (k, b) == (kind, batch)}
        mia = {name: v for name, v in got.items() if name.startswith("mia")}
        parts = []
        if "mia HF fp32" in mia:
            fastest = max(mia, key=mia.get)
            parts.append(f"fastest mia path {fastest} = {mia[fastest] / mia['mia HF fp32']:.2f}x mia HF fp32")
            if "mia HF bf16" in mia:
                parts.append(f"mia HF bf16 = {mia['mia HF bf16'] / mia['mia HF fp32']:.2f}x mia HF fp32")
        if "mia llama.cpp" in mia and "raw llama.cpp" in got:
            parts.append(f"mia llama.cpp = {mia['mia llama.cpp'] / got['raw llama.cpp']:.2f}x raw llama.cpp")
        print(f"{kind} batch {batch:3d}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
