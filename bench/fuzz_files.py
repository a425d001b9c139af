"""Byte-flip fuzzing of every file kind mia reads (docs/report.md, "Damaged files").

Builds one set of undamaged files (map, unfinished run, scores, attack results, corpus index), then
for each kind runs ``--trials`` seeded trials: damage the file (bit flips, a truncation or a zeroed
range) and run every mia command that reads it, in a child process with a time limit. Prints, per
kind, the trials, command runs, time and verdicts; exits 1 if any run hung, printed a traceback, or
succeeded with a result other than the undamaged file's.

    python bench/fuzz_files.py --trials 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("MIA_LOAD_PLUGINS", "")  # the fake model is registered in-process; no real plugin needed

import fuzz_harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="damaged copies per file kind")
    parser.add_argument("--kinds", default=",".join(fuzz_harness.KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=float, default=30.0, help="seconds a command may take before it is a hang")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="mia_fuzz_") as tmp:
        fixtures, work = Path(tmp) / "fixtures", Path(tmp) / "work"
        t0 = time.perf_counter()
        fuzz_harness.build_fixtures(fixtures, work)
        print(f"fixtures built in {time.perf_counter() - t0:.1f} s", flush=True)
        for kind in args.kinds.split(","):
            r = fuzz_harness.fuzz(kind, args.trials, fixtures, work, seed=args.seed, limit_s=args.limit)
            verdicts = ", ".join(f"{v}: {n}" for v, n in sorted(r.verdicts.items()))
            print(f"{kind:7s} {r.trials} trials, {r.runs} command runs in {r.seconds:.1f} s "
                  f"({r.seconds / max(r.runs, 1):.2f} s per run): {verdicts}", flush=True)
            if r.same_after:
                print(f"        unchanged results after: {dict(r.same_after)}", flush=True)
            for failure in r.failures:
                print("  FAILED " + failure, flush=True)
            failures += len(r.failures)
    print("no hang, no traceback, no different result" if not failures else f"{failures} failed command runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
