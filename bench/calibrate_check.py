"""The default `mia calibrate` (smollm2-135m on the embedded corpus) timed on one device, one line per figure.

    python bench/calibrate_check.py --device cuda     # in bench/gpu_check.sh
    python bench/calibrate_check.py --device cpu      # the figure docs/calibrate.md states for this CPU

Prints the wall time of the whole command, the fine-tune's own time, and the LOSS AUC on the
fine-tuned model and on the base model (the control); exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    mia = Path(sys.executable).with_name("mia")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run([str(mia), "calibrate", "--model", args.model, "--dataset", "corpus", "--model-option",
                               f"device={args.device}", "--out", out, "-q", "--json"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        print(f"mia calibrate failed (exit {done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
        return done.returncode
    report = json.loads(done.stdout)
    tune = report["finetune"]
    auc = {role: {m["signal"]: m["auc"] for m in report["results"][role]["attack"]["metrics"]}
           for role in ("fine-tuned", "base")}
    print(f"mia calibrate {args.model} corpus (defaults) on {tune['device']}: {wall:.0f} s wall, "
          f"fine-tune {tune['seconds']:.1f} s ({tune['steps']} steps)")
    print(f"LOSS AUC fine-tuned {auc['fine-tuned']['loss']:.3f}, base model (control) {auc['base']['loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
