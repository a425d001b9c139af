"""vLLM against the HF backend: generated tokens/s and scored prompt tokens/s, one run.

    .venv-vllm/bin/python bench/vllm_bench.py                               # CPU: gemma-3-270m, float32
    .venv-vllm/bin/python bench/vllm_bench.py --dtype bfloat16 --batches 1,32,256   # on a GPU (bench/gpu_check.sh)

Both backends get the same prefixes (32-token windows of the embedded corpus, repeated to
fill a batch) and the same decoding (greedy, ``--new-tokens`` new tokens, EOS cut the same
way), one call per batch size:

- generate: new tokens returned per second of wall time (tokens up to EOS);
- score: teacher-forced prompt tokens (prefix + suffix, ``--score-tokens`` each) per second,
  HF ``score`` vs vLLM ``prompt_logprobs`` (Min-K%++ moments off for both: vLLM has none).

Each line prints both rates and the ratio vLLM/HF. A batch whose HF call would take longer
than ``--budget-s`` (estimated from the previous batch size) is skipped, and the line says so.
vLLM's engine start (about a minute on CPU) is timed separately and not in the rates; each
backend does one untimed warm-up call first. Needs the vLLM environment (bash install.sh --vllm).
"""

from __future__ import annotations

import argparse
import time


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
    args = parser.parse_args()

    from mia_core import registry

    batches = [int(b) for b in args.batches.split(",")]
    hf = registry.backends.create(args.model, {"device": args.device, "dtype": args.dtype})
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
    prefixes = corpus_windows(hf.tokenizer, max(batches), args.prefix_tokens)
    sequences = corpus_windows(hf.tokenizer, max(batches), args.score_tokens)
    for backend in (hf, vllm):  # warm-up: first calls allocate and compile
        backend.generate(prefixes[:2], 4)
        backend.score(sequences[:2], 0, distribution=False)
    hf_rate = {"generate": None, "score": None}
    for batch in batches:
        for task in ("generate", "score"):
            work = batch * (args.new_tokens if task == "generate" else args.score_tokens)
            rate = hf_rate[task]
            if rate and work / rate > args.budget_s:
                print(f"batch {batch:4d} {task:8s}: skipped (HF would take about {work / rate:.0f} s > --budget-s "
                      f"{args.budget_s:.0f})")
                continue
            if task == "generate":
                hf_s, hf_out = timed(hf.generate, prefixes[:batch], args.new_tokens)
                v_s, v_out = timed(vllm.generate, prefixes[:batch], args.new_tokens)
                hf_n, v_n = sum(map(len, hf_out)), sum(map(len, v_out))
                same = sum(a == b for a, b in zip(hf_out, v_out, strict=True))
                what = f"new tokens/s (greedy, {args.new_tokens} per row; rows identical {same}/{batch})"
            else:
                hf_s, _ = timed(hf.score, sequences[:batch], 0, distribution=False)
                v_s, _ = timed(vllm.score, sequences[:batch], 0, distribution=False)
                hf_n = v_n = batch * args.score_tokens
                what = f"prompt tokens/s scored ({args.score_tokens} per row)"
            hf_rate[task] = hf_n / hf_s
            print(f"batch {batch:4d} {task:8s}: HF {hf_n / hf_s:9.1f}  vLLM {v_n / v_s:9.1f}  "
                  f"ratio vLLM/HF {(v_n / v_s) / (hf_n / hf_s):5.2f}x  {what}", flush=True)


if __name__ == "__main__":  # vLLM starts worker processes: the guard keeps them from rerunning this
    main()
