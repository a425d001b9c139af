"""Compare mia-mamba's two execution paths on a CUDA machine: greedy outputs and tokens/s.

    python bench/mamba_gpu_check.py                        # synthetic random Mamba (no download)
    python bench/mamba_gpu_check.py --model mamba-3b       # a real checkpoint (HF cache or folder)
    python bench/mamba_gpu_check.py --model /path/to/mamba-2.8b-slimpj --batch-size 32 --new-tokens 128

Loads the same checkpoint twice through the registry — ``kernel=torch`` (transformers'
MambaForCausalLM) and ``kernel=cuda`` (mamba-ssm's MambaLMHeadModel, CUDA-graph decoding) —
generates greedily from the same prefixes, and prints tokens/s of each, how many rows are
identical (and where the first differences start: bf16 kernels may flip near-ties), and the
teacher-forced argmax agreement of the two paths' ``score``.

Not run by CI. Without a CUDA GPU it says so and exits 0 (``--cpu`` times the torch path
alone); without mamba-ssm it says what to install and times the torch path alone.
``--require-gpu`` (bench/gpu_check.sh) makes both of these a failure, exit status 2.
Synthetic mode writes a random Mamba checkpoint in the mamba_ssm layout (hidden 768 and 24
layers by default, about the size of mamba-130m) with the tiny test tokenizer.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def synthetic_checkpoint(folder: Path, hidden: int, layers: int) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from mia_mamba.tiny import make_tiny_mamba
    from tiny_models import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    return str(make_tiny_mamba(folder / "synthetic-mamba", "mamba_ssm", tok, hidden_size=hidden, layers=layers,
                               state_size=16, seed=0))


def prefixes_for(tokenizer, batch: int, length: int) -> list[list[int]]:
    import random

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import training_text

    ids = tokenizer.encode_batch([training_text() * 4])[0]
    rng = random.Random(0)
    starts = [rng.randrange(0, max(1, len(ids) - length)) for _ in range(batch)]
    return [ids[s:s + length] for s in starts]


def timed_generate(backend, prefixes, new_tokens: int, batch: int) -> tuple[list[list[int]], float]:
    import torch

    from mia_core.types import Sampling

    # Warm-up with the timed shape: mamba-ssm captures one CUDA graph per (batch, max length).
    backend.generate(prefixes[:batch], new_tokens, Sampling())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out: list[list[int]] = []
    for i in range(0, len(prefixes), batch):
        out += backend.generate(prefixes[i:i + batch], new_tokens, Sampling())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Mamba checkpoint: mamba-3b, mamba-2.8b-hf, mamba:ID or a folder "
                                        "(default: a synthetic random checkpoint)")
    parser.add_argument("--hidden", type=int, default=768, help="synthetic model width")
    parser.add_argument("--layers", type=int, default=24, help="synthetic model depth")
    parser.add_argument("--dtype", default="bfloat16", help="weights dtype on the GPU (both paths)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--prefix-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--cpu", action="store_true", help="without a GPU, time the torch path on the CPU")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 2 (not 0) without a CUDA GPU or without mamba-ssm: for bench/gpu_check.sh")
    args = parser.parse_args()

    import torch
    from mia_mamba.kernel import INSTALL_HINT, mamba_ssm_import_error

    from mia_core import registry

    gpu = torch.cuda.is_available()
    problem = mamba_ssm_import_error()
    print(f"torch {torch.__version__}; CUDA: {torch.cuda.get_device_name(0) if gpu else 'none'}; "
          f"mamba-ssm: {'ok' if problem is None else problem}")
    if args.require_gpu and (not gpu or problem is not None):
        print(f"FAILED: --require-gpu, but {'torch sees no CUDA GPU' if not gpu else 'mamba-ssm does not import'}; "
              f"{INSTALL_HINT if gpu else 'run it on a GPU machine'}", file=sys.stderr)
        return 2
    if not gpu and not args.cpu:
        print("no CUDA GPU here: nothing to compare (the torch path is tested on CPU by tests/test_mamba.py; "
              "--cpu times it)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or synthetic_checkpoint(Path(tmp), args.hidden, args.layers)
        label = args.model or f"synthetic Mamba (hidden {args.hidden}, {args.layers} layers)"
        options = {"dtype": args.dtype if gpu else "float32", "device": "cuda" if gpu else "cpu"}
        paths = ["torch"] + (["cuda"] if gpu and problem is None else [])
        if gpu and problem is not None:
            print(f"mamba-ssm does not import, timing the torch path only: {INSTALL_HINT}")
        results = {}
        for kernel in paths:
            t0 = time.perf_counter()
            backend = registry.backends.create(model, {**options, "kernel": kernel})
            load_s = time.perf_counter() - t0
            prefixes = prefixes_for(backend.tokenizer, args.batch_size * args.batches, args.prefix_tokens)
            out, seconds = timed_generate(backend, prefixes, args.new_tokens, args.batch_size)
            tokens = sum(len(o) for o in out)
            seqs = [p + o for p, o in zip(prefixes, out, strict=True)]
            results[kernel] = {"backend": backend, "out": out, "seqs": seqs, "prefixes": prefixes}
            described = backend.describe()
            print(f"{kernel:5s} path ({described['class']}, {described['dtype']}): load {load_s:.1f}s, "
                  f"{tokens} tokens in {seconds:.2f}s = {tokens / seconds:.1f} tokens/s "
                  f"(batch {args.batch_size}, {args.prefix_tokens}+{args.new_tokens} tokens)")
        print(f"model: {label}")
        if len(paths) < 2:
            return 0
        a, b = results["torch"]["out"], results["cuda"]["out"]
        same = sum(x == y for x, y in zip(a, b, strict=True))
        diffs = [d for x, y in zip(a, b, strict=True) if (d := first_difference(x, y)) is not None]
        print(f"greedy outputs identical on {same}/{len(a)} rows"
              + (f"; first difference at token {min(diffs)} (median {statistics.median(diffs)})" if diffs else ""))
        # Teacher-forced agreement on the torch path's outputs (no compounding of an early flip).
        torch_backend, cuda_backend = results["torch"]["backend"], results["cuda"]["backend"]
        seqs, start = results["torch"]["seqs"][: args.batch_size], args.prefix_tokens
        sa, sb = torch_backend.score(seqs, start), cuda_backend.score(seqs, start)
        agree = sum(int((x.argmax == y.argmax).sum()) for x, y in zip(sa, sb, strict=True))
        total = sum(len(x.argmax) for x in sa)
        gap = max(float(abs(x.logprob - y.logprob).max()) for x, y in zip(sa, sb, strict=True))
        print(f"teacher-forced argmax agreement {agree}/{total}; max |logprob difference| {gap:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
