"""vLLM against the HF backend: generated tokens/s and scored prompt tokens/s, one run.

    .venv-vllm/bin/python bench/vllm_bench.py                               # CPU: gemma-3-270m, float32
    .venv-vllm/bin/python bench/vllm_bench.py --dtype bfloat16 --batches 1,32,256   # on a GPU (bench/gpu_check.sh)

Both backends get the same prefixes (32-token windows of the embedded corpus, repeated to
fill a batch) and the same decoding (greedy, ``--new-tokens`` new tokens, EOS cut the same
way), one call per batch size:

- generate: new tokens returned per second of wall time (tokens up to EOS);
- score: teacher-forced prompt tokens (prefix + suffix, ``--score-tokens`` each) per second,
  HF ``score`` vs vLLM ``prompt_logprobs`` (Min-K%++ moments off for both: vLLM has none).

Each line prints both rates and the ratio vLLM/HF. With ``--data-parallel N`` (N GPUs, or N
cores on CPU), the single engine is then stopped and ``data_parallel_size=N`` measured on the
same calls: one more line per batch and task, its rate against the single engine's and how
many rows equal the single engine's. A batch size is skipped for a backend whose
call at the previous (smaller) batch size took longer than ``--budget-s``, and the line says so.
vLLM's engine start (about a minute on CPU) is timed separately and not in the rates; each
backend does one untimed warm-up call first. Needs the vLLM environment (bash install.sh --vllm).
"""

from __future__ import annotations

import argparse
import time

TARGET_BATCH, TARGET_RATIO = 256, 2.0  # the GPU target of docs/scale.md: vLLM >= 2x HF at batch 256


def corpus_windows(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` windows of ``length`` tokens cut from the embedded corpus (repeated when short)."""
    from mia_core import registry

    windows = []
    for sample in registry.datasets.create("corpus"):
        ids = tokenizer.encode_batch([sample.text])[0]
        windows += [ids[a:a + length] for a in range(0, len(ids) - length + 1, length)]
    return [windows[i % len(windows)] for i in range(count)]


def timed(call, *args, **kwargs) -> tuple[float, object]:  # noqa: ANN001
    start = time.perf_counter()
    out = call(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="mia-hf name; vLLM gets vllm:NAME")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="auto", help="HF device (vLLM runs where it was installed for)")
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--prefix-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--score-tokens", type=int, default=64)
    parser.add_argument("--memory", default=None, help="vLLM gpu_memory_utilization (default 0.2 on CPU, 0.9 GPU)")
    parser.add_argument("--eager", action="store_true", help="vLLM enforce_eager (on CPU: starts in half the time)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip a batch whose HF call would take longer")
    parser.add_argument("--data-parallel", type=int, default=1, help="also measure vLLM with data_parallel_size=N")
    args = parser.parse_args()

    from mia_core import registry

    batches = [int(b) for b in args.batches.split(",")]
    hf = registry.backends.create(args.model, {"device": args.device, "dtype": args.dtype})
    prefixes = corpus_windows(hf.tokenizer, max(batches), args.prefix_tokens)
    sequences = corpus_windows(hf.tokenizer, max(batches), args.score_tokens)
    # HF first, vLLM after: vLLM's engine processes keep threads bound to the cores, which would
    # slow down anything timed next to them.
    hf_results = measure(hf, batches, prefixes, sequences, args)
    options = {"dtype": args.dtype, "max_model_len": str(max(args.prefix_tokens + args.new_tokens,
                                                             args.score_tokens) + 8)}
    if args.memory:
        options["gpu_memory_utilization"] = args.memory
    if args.eager:
        options["enforce_eager"] = "true"
    start_s, vllm = timed(registry.backends.create, f"vllm:{args.model}", options)
    hf_d, v_d = hf.describe(), vllm.describe()
    print(f"model {args.model}: HF {hf_d['class']} on {hf_d['device']} ({hf_d['dtype']}); {v_d['engine']} on "
          f"{v_d['device']} ({v_d['dtype']}{', eager' if args.eager else ''}); "
          f"vLLM engine start {start_s:.1f} s (not in the rates)")
    v_results = measure(vllm, batches, prefixes, sequences, args)
    dp_results = None
    if args.data_parallel > 1:
        vllm.close()  # its memory (on a GPU, its share of GPU 0) goes to the replicas
        dp_start_s, dp = timed(registry.backends.create, f"vllm:{args.model}",
                               {**options, "data_parallel_size": str(args.data_parallel)})
        print(f"vLLM data_parallel_size={args.data_parallel}: replicas started in {dp_start_s:.1f} s (not timed)")
        dp_results = measure(dp, batches, prefixes, sequences, args)
        dp.close()
    for batch in batches:
        for task in ("generate", "score"):
            (hf_rate, hf_out), (v_rate, v_out) = hf_results[batch, task], v_results[batch, task]
            what = (f"new tokens/s (greedy, {args.new_tokens} per row" if task == "generate"
                    else f"prompt tokens/s scored ({args.score_tokens} per row")
            if task == "generate" and hf_out is not None and v_out is not None:
                what += f"; rows identical {sum(a == b for a, b in zip(hf_out, v_out, strict=True))}/{batch}"
            line = f"batch {batch:4d} {task:8s}: HF {_rate(hf_rate)}  vLLM {_rate(v_rate)}  "
            if isinstance(hf_rate, float) and isinstance(v_rate, float):
                line += f"ratio vLLM/HF {v_rate / hf_rate:5.2f}x  "
            print(line + what + ")", flush=True)
            if dp_results is not None:
                print(dp_line(batch, task, v_results[batch, task], dp_results[batch, task], args), flush=True)
    hf_rate, v_rate = (results.get((TARGET_BATCH, "generate"), (None,))[0] for results in (hf_results, v_results))
    if isinstance(hf_rate, float) and isinstance(v_rate, float):
        verdict = "met" if v_rate >= TARGET_RATIO * hf_rate else "NOT met"
        print(f"target on a GPU, vLLM >= {TARGET_RATIO:g}x HF new tokens/s at batch {TARGET_BATCH}: {verdict} "
              f"({v_rate / hf_rate:.2f}x on {v_d['device']})")


def dp_line(batch: int, task: str, single: tuple, replicated: tuple, args) -> str:  # noqa: ANN001
    """One figure: data_parallel_size=N against the single engine on the same call."""
    (one_rate, one_out), (dp_rate, dp_out) = single, replicated
    line = f"batch {batch:4d} {task:8s}: vLLM DP={args.data_parallel} {_rate(dp_rate)}  vLLM DP=1 {_rate(one_rate)}  "
    if isinstance(one_rate, float) and isinstance(dp_rate, float):
        line += f"ratio DP={args.data_parallel}/DP=1 {dp_rate / one_rate:5.2f}x  "
    line += "(new tokens/s" if task == "generate" else "(prompt tokens/s scored"
    if one_out is not None and dp_out is not None:
        line += f"; rows identical to DP=1 {sum(a == b for a, b in zip(one_out, dp_out, strict=True))}/{batch}"
    return line + ")"


def _rate(rate: float | str | None) -> str:
    return f"{rate:9.1f}" if isinstance(rate, float) else f"{rate or '-':>9s}"


def measure(backend, batches, prefixes, sequences, args) -> dict:  # noqa: ANN001
    """{(batch, task): (tokens/s or why skipped, outputs)} for one backend, after a warm-up call."""
    backend.generate(prefixes[:2], 4)  # first calls allocate (and on GPU compile)
    backend.score(sequences[:2], 0, distribution=False)
    results, last_seconds = {}, {"generate": 0.0, "score": 0.0}
    for batch in batches:
        for task in ("generate", "score"):
            if last_seconds[task] > args.budget_s:  # a bigger batch would take longer still
                results[batch, task] = (f"skipped (previous batch took {last_seconds[task]:.0f}s > --budget-s)", None)
                continue
            if task == "generate":
                seconds, out = timed(backend.generate, prefixes[:batch], args.new_tokens)
                tokens = sum(map(len, out))
            else:
                seconds, out = timed(backend.score, sequences[:batch], 0, distribution=False)
                tokens = batch * args.score_tokens
            last_seconds[task] = seconds
            results[batch, task] = (tokens / seconds, out if task == "generate" else None)
    return results

if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from rerunning this
    main()
