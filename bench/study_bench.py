"""`mia study`'s own overhead: the whole study against the same steps called by hand (the library
call the study makes for each step, study/adapters.py, with the same options, in the same process, on
the same data), alternated so both see the same machine load. Prints both wall times and their ratio (target ≤ 1.05×).

    python bench/study_bench.py [--limit 40] [--repeats 3] [--model PATH]

Without --model a tiny random Llama (tests/tiny_models.py) is built, so it runs anywhere.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def by_hand(config: dict, work: Path) -> None:
    """prefix → prompt → check → score ×2 → attack → dataset inference on its signals → estimate → report:
    each step the library call the study makes for it (study/adapters.py), with the same options, and
    nothing else (no study folder, state file, results.json or samples.jsonl)."""
    from mia_core.errors import MiaError
    from mia_core.study import adapters

    folder = adapters.build_map(config, work / "map", quiet=True)
    runs = [adapters.prompt_run(folder, config, method, folder / "runs" / f"{name}.h5", quiet=True)
            for name, method in (("generate", "generate"), ("check", "teacher-forced"))]
    for run in runs:
        adapters.score(run, config, save=True)
    attack = adapters.attack(folder, config, folder / "attacks" / "attack.h5", quiet=True).path
    setlevel = []
    try:
        setlevel.append(adapters.dataset_inference(attack, config, work / "dataset_inference.json", True))
    except MiaError:
        pass  # withheld below 20 strings per label, as the study withholds it
    try:
        adapters.estimate(runs[:1], config)
    except MiaError:
        pass  # withheld, as the study withholds it
    adapters.report(runs, [attack], config, work / "report.html", setlevel)


def with_study(config: dict, work: Path) -> None:
    from mia_core.study.folder import StudyRequest
    from mia_core.study.run import run_study

    run_study(StudyRequest(config=config, root=work / "studies", quiet=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a model folder or name (default: a tiny random Llama)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from mia_core.study.config import resolve

    with tempfile.TemporaryDirectory(prefix="mia_study_bench_") as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from tiny_models import make_tiny_llama

            model = str(make_tiny_llama(root / "tiny-llama"))
        config = resolve({}, {"model": model, "dataset": "corpus", "limit": args.limit, "name": "bench"})
        times: dict[str, list[float]] = {"by hand": [], "mia study": []}
        for i in range(args.repeats):
            for label, fn in (("by hand", by_hand), ("mia study", with_study)):
                work = root / f"{label.replace(' ', '_')}_{i}"
                work.mkdir()
                started = time.perf_counter()
                fn(config, work)
                times[label].append(time.perf_counter() - started)
        # the fastest of each: the run least disturbed by other load on the machine (medians printed beside)
        hand, study = min(times["by hand"]), min(times["mia study"])
        print(f"model {model}, {args.limit} samples, fastest of {args.repeats} alternated runs each "
              f"(medians: by hand {statistics.median(times['by hand']):.2f} s, "
              f"study {statistics.median(times['mia study']):.2f} s)")
        print(f"steps by hand (library calls): {hand:.2f} s  {[round(t, 2) for t in times['by hand']]}")
        print(f"mia study (same steps + state, results.json, samples.jsonl): {study:.2f} s  "
              f"{[round(t, 2) for t in times['mia study']]}")
        print(f"study / by hand (fastest runs): {study / hand:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()
