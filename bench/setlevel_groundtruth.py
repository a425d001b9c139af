"""Ground truth for the set-level tests (docs/dataset_inference.md), through `mia calibrate`'s machinery.

    python bench/setlevel_groundtruth.py                       # smollm2-135m, the embedded corpus, CPU
    python bench/setlevel_groundtruth.py --model PATH --null-runs 5 --permutations 19   # a quick smoke run

Dataset inference: the corpus split by calibrate's seeded random split, the model fine-tuned on the
members (calibrate's defaults), the suspect set = members, the validation set = non-members; the test on
the fine-tuned model (detection), the sequences it needed, and the false-positive rate over
``--null-runs`` seeded null splits: on the base model (features computed once for every string, then
random halves: neither half was trained on) and on the fine-tuned model (halves of the validation set).

Contamination: a benchmark of ``--examples`` corpus openings (their first 12 tokens) in a seeded random
canonical order (exchangeable by construction), its shards' canonical concatenations fine-tuned on
(calibrate's defaults), the test on the fine-tuned model and on the base model, and a null on the base
model: ``--null-runs`` runs, each a fresh seeded canonical order of ``--null-examples`` examples in one
shard against 19 permutations (each run is a full test through the same code; 20 sequences per run keep
it affordable on a CPU).

Prints one line per figure and writes everything to ``OUT/groundtruth.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _timed(what: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"  [{what}: {seconds:.0f} s]", flush=True)
    return out, seconds


def null_rate(pool: np.ndarray, names: list[str], runs: int, splits: int, alpha: float) -> dict:
    """Seeded random halves of one pool of strings (H0 holds): the fraction with p ≤ alpha."""
    from scipy.stats import binomtest

    from mia_core.setlevel import dataset_inference as di

    rng = np.random.default_rng(1000)
    p_values = []
    for run in range(runs):
        order = rng.permutation(len(pool))
        half = len(pool) // 2
        p_values.append(di.dataset_inference(pool[order[:half]], pool[order[half:]], names, splits, seed=run).p_value)
    hits = int(np.sum(np.array(p_values) <= alpha))
    ci = binomtest(hits, runs).proportion_ci(0.95, method="exact")
    return {"runs": runs, "rejections": hits, "rate": hits / runs, "ci95": [ci.low, ci.high],
            "strings_per_half": [len(pool) // 2, len(pool) - len(pool) // 2], "splits": splits}


def sequences_needed(features, sizes: list[int], repeats: int, splits: int, alpha: float) -> dict:
    """Median p-value of the test on n suspect and n validation strings drawn (seeded) from the sets."""
    from mia_core.setlevel import dataset_inference as di

    rng = np.random.default_rng(2000)
    out = {}
    for n in sizes:
        if n > min(len(features.suspect), len(features.validation)):
            continue
        ps = [di.dataset_inference(features.suspect[rng.choice(len(features.suspect), n, replace=False)],
                                   features.validation[rng.choice(len(features.validation), n, replace=False)],
                                   features.names, splits, seed=r).p_value for r in range(repeats)]
        out[n] = {"median_p": float(np.median(ps)), "fraction_below_alpha": float(np.mean(np.array(ps) < alpha))}
    return out


def dataset_inference_truth(args, out: Path) -> dict:
    from mia_core import registry
    from mia_core.attack import scoring
    from mia_core.attack.items import load_dataset_items
    from mia_core.calibrate.run import CalibrateConfig, read_split
    from mia_core.calibrate.training import FinetuneConfig, finetune_into
    from mia_core.setlevel import run as sr
    from mia_core.types import MEMBER

    finetune = FinetuneConfig(seed=args.seed, quiet=True)
    labelled, _ = read_split(CalibrateConfig(model=args.model, seed=args.seed))
    members = [s for s in labelled if s.label == MEMBER]
    others = [s for s in labelled if s.label != MEMBER]
    print(f"dataset inference: corpus split (seed {args.seed}): {len(members)} suspect (fine-tuned on), "
          f"{len(others)} validation", flush=True)
    info, tune_s = _timed("fine-tune", finetune_into, args.model, {}, [s.text for s in members], out / "di-model",
                          finetune)
    config = sr.FeatureConfig(quiet=True, seed=args.seed)
    result: dict = {"suspect": len(members), "validation": len(others), "finetune": {**finetune.to_dict(), **info},
                    "finetune_seconds": tune_s}
    for role, model in (("fine-tuned", str(out / "di-model")), ("base", args.model)):
        backend = registry.backends.create(model)
        limit = scoring.effective_max_tokens(backend, finetune.max_tokens)  # what was trained: the first 64 tokens
        suspect, _ = load_dataset_items(members, backend, limit, quiet=True)
        validation, _ = load_dataset_items(others, backend, limit, quiet=True)
        # Distinct samples can open alike (two GPL chunks share their first 64 tokens): what is scored
        # must not be in both sets, so those validation strings are dropped (and counted).
        trained = {it.text.strip() for it in suspect}
        kept = [it for it in validation if it.text.strip() not in trained]
        result.setdefault("validation_dropped_as_identical_to_a_suspect_string", len(validation) - len(kept))
        validation = kept
        features, feat_s = _timed(f"{role} features", sr.set_features, backend, suspect, validation, config)
        test = sr.dataset_inference(features, args.splits, args.seed)
        row = {"p_value": test.p_value, "split_p_values": test.split_p_values, "weights": test.weights,
               "blind": features.blind, "passes_per_string": features.passes, "feature_seconds": feat_s,
               "strings": [len(features.suspect), len(features.validation)]}
        print(f"  {role}: p-value {test.p_value:.3g} (suspect {len(features.suspect)}, validation "
              f"{len(features.validation)}, {args.splits} splits); blind AUC {features.blind.get('auc')}", flush=True)
        if role == "fine-tuned":
            row["sequences_needed"] = sequences_needed(features, [20, 25, 30, 40, 50, 65], 20, args.splits,
                                                       args.alpha)
            row["null_validation_only"] = null_rate(features.validation, features.names, args.null_runs,
                                                    args.splits, args.alpha)
            print(f"  sequences needed: {row['sequences_needed']}", flush=True)
            print(f"  null (fine-tuned, validation halves): {row['null_validation_only']}", flush=True)
        else:
            row["null_random_halves"] = null_rate(np.vstack([features.suspect, features.validation]), features.names,
                                                  args.null_runs, args.splits, args.alpha)
            print(f"  null (base, random halves of all strings): {row['null_random_halves']}", flush=True)
        result[role] = row
    return result


def benchmark(args) -> list[str]:
    """``--examples`` corpus openings (12 tokens of the model's tokenizer) in a seeded random order."""
    from mia_core import registry

    tok = registry.backends.create(args.model).tokenizer
    texts = [s.text for s in registry.datasets.create("corpus", {}) if s.text.strip()]
    openings = [t.replace("\n", " ").strip() for t in tok.decode_batch([ids[:12] for ids in tok.encode_batch(texts)])]
    rng = np.random.default_rng(args.seed)
    return [openings[i] for i in rng.permutation(len(openings))[: args.examples]]


def contamination_truth(args, out: Path) -> dict:
    from mia_core import registry
    from mia_core.calibrate.training import FinetuneConfig, finetune_into
    from mia_core.setlevel import contamination as ct
    from mia_core.setlevel import run as sr

    examples = benchmark(args)
    bounds = ct.shard_bounds(len(examples), args.shards)
    shard_texts = ["".join(e + sr.EXAMPLE_SEPARATOR for e in examples[a:b]) for a, b in bounds]
    finetune = FinetuneConfig(seed=args.seed, quiet=True)
    print(f"contamination: {len(examples)} examples in {args.shards} shards, fine-tuned on the shards' canonical "
          f"concatenations ({finetune.epochs} epochs)", flush=True)
    info, tune_s = _timed("fine-tune", finetune_into, args.model, {}, shard_texts, out / "ct-model", finetune)
    result: dict = {"examples": len(examples), "shards": args.shards, "permutations": args.permutations,
                    "finetune": {**finetune.to_dict(), **info}, "finetune_seconds": tune_s}
    for role, model in (("fine-tuned", str(out / "ct-model")), ("base", args.model)):
        backend = registry.backends.create(model)
        test, secs = _timed(f"{role} test", sr.contamination, backend, examples, args.shards, args.permutations,
                            args.seed, 16, None, True)
        row = test.to_dict() | {"seconds": secs}
        # the examples needed: the permutation p-value over the first m shards
        row["p_by_shards"] = {int((m * len(examples)) // args.shards): ct.summed_permutation_p_value(
            test.canonical[:m], test.permuted[:m]) for m in range(1, args.shards + 1)}
        print(f"  {role}: permutation p-value {test.p_value:.3g} (resolution {test.resolution:.3g}), sharded t-test "
              f"{test.t_test}; by examples: {row['p_by_shards']}", flush=True)
        result[role] = row
    backend = registry.backends.create(args.model)
    rng = np.random.default_rng(3000)
    start, ps = time.perf_counter(), []
    for run in range(args.null_runs):
        order = [examples[i] for i in rng.permutation(len(examples))[: args.null_examples]]
        ps.append(sr.contamination(backend, order, 1, 19, run, 32, None, True).p_value)
    hits = int(np.sum(np.array(ps) <= args.alpha))
    from scipy.stats import binomtest

    ci = binomtest(hits, args.null_runs).proportion_ci(0.95, method="exact")
    result["null_base"] = {"runs": args.null_runs, "examples_per_run": args.null_examples, "shards": 1,
                           "permutations": 19, "rejections": hits, "rate": hits / args.null_runs,
                           "ci95": [ci.low, ci.high], "seconds": time.perf_counter() - start}
    print(f"  null (base, fresh canonical orders): {result['null_base']}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("setlevel_groundtruth"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--null-runs", type=int, default=100)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--permutations", type=int, default=99)
    parser.add_argument("--null-examples", type=int, default=4)
    parser.add_argument("--only", choices=["dataset-inference", "contamination"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    report: dict = {"model": args.model, "seed": args.seed, "alpha": args.alpha, "load_at_start": _uptime()}
    if args.only != "contamination":
        report["dataset_inference"] = dataset_inference_truth(args, args.out)
        (args.out / "groundtruth.json").write_text(json.dumps(report, indent=2, default=float))
    if args.only != "dataset-inference":
        report["contamination"] = contamination_truth(args, args.out)
    report["load_at_end"] = _uptime()
    (args.out / "groundtruth.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"load: {report['load_at_start']} -> {report['load_at_end']}; {args.out / 'groundtruth.json'}")
    return 0


def _uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
