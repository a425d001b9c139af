"""`mia calibrate` on a real full disk and a read-only folder: one line, exit 1, no model folder.

The disk is a real tmpfs mounted by the test (needs root; skipped with the reason otherwise,
tests/test_calibrate.py covers the same refusal with an injected free-space figure).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from test_calibrate import _write_dataset
from test_prompt_disk import fill, mounted, one_line

MIA = str(Path(sys.executable).with_name("mia"))


def calibrate(tiny_llama: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [MIA, "calibrate", "--model", str(tiny_llama), "--dataset", str(data), "--out", str(out),
            "--max-tokens", "32", "--prefix-tokens", "8", "--suffix-tokens", "8", "--bootstrap", "0", "-q", *extra]


def test_a_disk_too_small_for_the_model_is_refused_before_training(tiny_llama, tmp_path):
    data = _write_dataset(tmp_path / "data")
    with mounted(tmp_path / "disk", "size=8m") as disk:  # the check wants the weights + 50 MB
        done = subprocess.run(calibrate(tiny_llama, data, disk / "cal"), capture_output=True, text=True, timeout=300)
        line = one_line(done)
        assert line.startswith("Error: not enough disk space for the fine-tuned model in ") and "--out" in line
        assert not list(disk.glob("cal/*/model")) and not list(disk.glob("cal/*/.model*"))


def test_the_disk_filling_up_during_the_fine_tune_leaves_no_model_folder(tiny_llama, tmp_path):
    """The space check passes, then another writer fills the disk while the model trains: the
    model's save hits a real ENOSPC, and the half-written temporary folder is removed."""
    data = _write_dataset(tmp_path / "data")
    with mounted(tmp_path / "disk", "size=64m") as disk:
        args = [a for a in calibrate(tiny_llama, data, disk / "cal", "--epochs", "400") if a != "-q"]  # progress on
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        stderr: list[str] = []
        reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1), "")))
        reader.start()
        try:
            deadline = time.time() + 120
            while time.time() < deadline and "epoch=" not in "".join(stderr) and proc.poll() is None:
                time.sleep(0.05)
            assert "epoch=" in "".join(stderr), "the fine-tune never started: " + "".join(stderr)[-300:]
            fill(disk, 0)  # another process takes every free byte while the model trains
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join()
        text = "".join(stderr).replace("\r", "\n")
        assert proc.returncode == 1 and "Traceback" not in text
        errors = [line for line in text.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and "no space left on the device while writing the fine-tuned model" in errors[0], text
        assert not list(disk.glob("cal/*/model")) and not list(disk.glob("cal/*/.model*"))


def test_a_read_only_output_folder_gets_one_line(tiny_llama, tmp_path):
    data = _write_dataset(tmp_path / "data")
    with mounted(tmp_path / "disk", "size=1m", "ro") as disk:
        line = one_line(subprocess.run(calibrate(tiny_llama, data, disk / "cal"), capture_output=True, text=True,
                                       timeout=300))
        assert "read-only" in line.lower() and str(disk) in line, line
        assert os.listdir(disk) == []
