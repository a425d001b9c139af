"""A killed or interrupted `mia prefix` never leaves a folder that looks like a complete map.

Each test runs the real CLI in a subprocess on a large generated dataset (the example
plugin, registered in-process by a tiny launcher) and interrupts it mid-run.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mia_core.errors import MiaError
from mia_core.formats.prefixmap import PrefixMap, resolve_map

EXAMPLE = Path(__file__).parent / "plugins" / "mia_example"
LAUNCHER = f"""
import sys
sys.path.insert(0, {str(EXAMPLE)!r})
import mia_example
from mia_core.plugins import load_plugins, pm
load_plugins()
pm.register(mia_example, name="mia_example")
from mia_core.cli import cli
cli(sys.argv[1:], prog_name="mia")
"""


def start_big_run(out: Path) -> subprocess.Popen:
    """Start a map of 10 million samples and return once rows are being written."""
    env = {**os.environ, "MIA_LOAD_PLUGINS": ""}  # only the example plugin: no torch import
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "prefix", "--model", "example-bytes", "--dataset", "example-counting",
         "--dataset-option", "n=10000000", "--prefix_tokens", "8", "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list(out.glob("*.partial/prefix_map.h5"))
        if partial and partial[0].stat().st_size > 200_000:  # some batches are on disk
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never started writing")


def test_sigkill_leaves_only_a_partial_folder_that_is_refused(tmp_path):
    proc = start_big_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and folders[0].name.endswith(".partial")
    partial = folders[0]
    with pytest.raises(MiaError, match="not a complete prefix map"):
        resolve_map(partial)
    with pytest.raises(MiaError, match="not a complete prefix map"):
        PrefixMap(partial.name, prefixes_dir=tmp_path)
    with pytest.raises(MiaError, match="not found"):
        resolve_map(partial.name.removesuffix(".partial"), prefixes_dir=tmp_path)
    # Even renamed by hand it is refused: the file lacks the `complete` mark (or is unreadable).
    renamed = partial.rename(tmp_path / "renamed")
    with pytest.raises(MiaError, match="not a complete prefix map|damaged HDF5 file|not an HDF5 file"):
        resolve_map(renamed)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 1), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_ctrl_c_and_kill_remove_the_partial_folder(tmp_path, sig, code):
    proc = start_big_run(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert b"Traceback" not in err
    assert list(tmp_path.iterdir()) == []
