"""A `mia attack` SIGKILLed while it writes its results file block by block leaves no results file, only its
temporary file, which the next attack in the folder removes; that attack writes the whole file (docs/scale.md)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mia_core.formats.attack_results import AttackResults

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "scale_bench.py"
ROWS = 30_000


def _attack(work: Path, pmap: Path) -> subprocess.Popen:
    env = {**os.environ, "MIA_BENCH_RSS": str(work / ".rss"), "PYTHONPATH": str(ROOT / "bench")}
    return subprocess.Popen([sys.executable, str(BENCH), "--as-mia", "attack", str(pmap), "--model", "instant",
                             "--signals", "loss,zlib", "--bootstrap", "0", "--no-blind", "--no-plot", "--batch-size",
                             "512", "--out-dir", str(work / "attacks"), "-q"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_attack_killed_while_writing_leaves_no_results_file_and_the_next_one_is_whole(tmp_path):
    pmap = tmp_path / "map"
    subprocess.run([sys.executable, str(BENCH), "--build-map", str(pmap), str(ROWS)], check=True, timeout=300)
    killed = _attack(tmp_path, pmap)
    folder = tmp_path / "attacks"
    deadline = time.monotonic() + 300
    temporary: list[Path] = []
    while time.monotonic() < deadline and killed.poll() is None:  # a few blocks in, well before the last
        temporary = list(folder.glob(".*.tmp")) if folder.is_dir() else []
        if temporary and temporary[0].stat().st_size > 4 * 2**20:
            break
        time.sleep(0.05)
    assert killed.poll() is None, f"the attack ended before it could be killed: {killed.stderr.read()[-500:]}"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert temporary and temporary[0].exists() and not list(folder.glob("*.h5"))

    again = _attack(tmp_path, pmap)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert not list(folder.glob(".*.tmp"))  # the killed attack's temporary file is gone
    (path,) = folder.glob("*.h5")
    results = AttackResults(path)
    assert len(results) == ROWS and results.columns["row"].tolist() == list(range(ROWS))
    assert np.isfinite(results.signals["loss"]).all() and {m["signal"] for m in results.attrs["metrics"]} == {
        "loss", "zlib"}
    assert f"results: {path}" in out
