"""`mia prompt --model llamacpp:TINY.gguf` as a real process, SIGKILLed mid-run, then resumed: the
resumed run's tokens and verdicts equal an uninterrupted run's (bitwise: a resume replays whole
batches with the recorded batch size and seeds, docs/prompt.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by bash install.sh --llamacpp")
pytest.importorskip("mia_llamacpp")

from gguf_tiny import write_tiny_llama  # noqa: E402

from mia_core.formats.journal import journal_path  # noqa: E402
from mia_core.formats.runs import open_run  # noqa: E402

ROWS, BATCH = 120, 2
# Columns of the same rows that must be equal; timing attributes are not columns.
COMPARED = ("tokens", "lengths", "prefix_row")


def mia(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mia_core.cli import main; main()", *args]


def prompt_args(model: str, out: str) -> list[str]:
    return ["prompt", "--prefix_map", "tinymap", "--model", model, "--model-option", "threads=1",
            "--num_strings", str(ROWS), "--batch_size", str(BATCH), "--max_length", "24", "--temperature", "1.0",
            "--seed", "5", "--yes", "-q", "--out", out]


def columns(path) -> dict:
    run = open_run(path)
    return {name: np.asarray(run.read(name)) for name in run.columns if name in COMPARED or name.startswith("match")}


def kill_mid_run(args: list[str], out) -> None:
    """Start ``mia ARGS``; SIGKILL it as soon as its journal holds a batch (polling every 10 ms)."""
    process = subprocess.Popen(mia(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = journal_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.stat().st_size > 0:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"


def test_killed_run_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = f"llamacpp:{write_tiny_llama(tmp_path / 'tiny.gguf', seed=3)}"
    made = subprocess.run(mia("prefix", "--model", model, "--dataset", "corpus", "--prefix_tokens", "8",
                              "--suffix_tokens", "24", "--size", "60", "--out-dir", "Prefixes"),
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    (tmp_path / "Prefixes" / made.stdout.strip().splitlines()[-1].rstrip("/").split("/")[-1]).rename(
        tmp_path / "Prefixes" / "tinymap")
    whole = subprocess.run(mia(*prompt_args(model, "whole.h5")), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    kill_mid_run(prompt_args(model, "killed.h5"), tmp_path / "killed.h5")
    assert not open_run(tmp_path / "killed.h5").complete
    resumed = subprocess.run(mia("prompt", "--resume", "killed.h5", "--yes", "-q"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = columns(tmp_path / "whole.h5"), columns(tmp_path / "killed.h5")
    assert set(COMPARED) <= set(expected) and expected.keys() == got.keys()
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    assert open_run(tmp_path / "killed.h5").complete
    provenance = open_run(tmp_path / "whole.h5").attrs["provenance"]
    provenance = json.loads(provenance) if isinstance(provenance, str) else provenance
    assert provenance["dtype"].startswith("GGUF ") and "llama.cpp" in provenance["dtype"]
