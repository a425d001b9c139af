"""A full disk and a read-only folder: one line, exit 1, finished rows kept and resumable.

The disk is a real 5 MB tmpfs mounted by the test (needs root; the mount is skipped, with
the reason, otherwise). The same path is also exercised without root by an injected
ENOSPC (``MIA_FAULT_ENOSPC_AT``: the k-th durable write and every later one fail).
"""

import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from test_prompt_fakes import FakePlugin, cli_command, make_fake_map

from mia_core.formats.journal import journal_path
from mia_core.formats.runs import open_run
from mia_core.formats.safeio import FAULT_ENOSPC_ENV

ENV = {**os.environ, "MIA_LOAD_PLUGINS": ""}
PROMPT = ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--num_strings", "200", "--batch_size", "2",
          "--max_length", "6", "-q"]


def mia(*args, env=None, cwd=None):
    return subprocess.run(cli_command(*args), env=env or ENV, capture_output=True, text=True, timeout=300, cwd=cwd)


def one_line(result, code=1):
    assert result.returncode == code, (result.returncode, result.stderr)  # never a signal (-11: segfault)
    assert "Traceback" not in result.stderr and "Segmentation" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextmanager
def mounted(folder, *options):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); "
                    "the injected-ENOSPC test covers the same path")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder, leave):
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-disk")
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def reference_tokens(in_tmp):
    ref = in_tmp / "reference.h5"
    assert mia(*PROMPT, "--out", str(ref)).returncode == 0
    run = open_run(ref)
    return [t.tolist() for t in run.tokens()], run.attrs["generated_tokens"]


def assert_resumes_to(out, expected):
    resumed = mia("prompt", "--resume", str(out), "-q")
    assert resumed.returncode == 0, resumed.stderr
    run = open_run(out)
    assert run.complete and [t.tolist() for t in run.tokens()] == expected[0]
    assert run.attrs["generated_tokens"] == expected[1]
    assert not journal_path(out).exists()


def test_prompt_on_a_full_tmpfs_keeps_finished_rows(fake, in_tmp):
    expected = reference_tokens(in_tmp)
    with mounted(in_tmp / "disk", "size=5m") as disk:
        fill(disk, 48 * 1024)
        out = disk / "run.h5"
        line = one_line(mia(*PROMPT, "--out", str(out)))
        assert line.startswith(f"Error: no space left on device writing {disk}/run.h5")
        assert f"continue with mia prompt --resume {out}" in line
        kept = open_run(out)
        assert 0 < len(kept) < 200 and not kept.complete
        assert f"{len(kept)} finished rows are kept" in line
        assert [t.tolist() for t in kept.tokens()] == expected[0][:len(kept)]
        assert kept.attrs["generated_tokens"] == sum(len(t) for t in expected[0][:len(kept)])
        refused = mia("prompt", "--resume", str(out), "-q")  # still full: refused in one line, nothing lost
        assert "no space left on device" in one_line(refused) and len(open_run(out)) == len(kept)
        (disk / "filler").unlink()
        assert_resumes_to(out, expected)


def test_prompt_with_injected_enospc_keeps_finished_rows(fake, in_tmp):
    expected = reference_tokens(in_tmp)
    out = in_tmp / "run.h5"
    # step 1-5: the run file is created; each batch then takes 3 steps (two half-writes and an fsync)
    line = one_line(mia(*PROMPT, "--out", str(out), env={**ENV, FAULT_ENOSPC_ENV: "40"}))
    assert "no space left on device writing" in line and "--resume" in line
    kept = open_run(out)
    assert 0 < len(kept) < 200 and kept.attrs["generated_tokens"] == sum(len(t) for t in expected[0][:len(kept)])
    assert_resumes_to(out, expected)


def test_prompt_with_no_space_for_the_run_file_leaves_nothing(fake, in_tmp):
    out = in_tmp / "run.h5"
    line = one_line(mia(*PROMPT, "--out", str(out), env={**ENV, FAULT_ENOSPC_ENV: "1"}))
    assert line == f"Error: no space left on device writing {out}; no run file was created"
    assert not out.exists() and not journal_path(out).exists() and os.listdir(in_tmp) == ["Prefixes"]


def test_read_only_folder_is_one_line(fake, in_tmp):
    with mounted(in_tmp / "ro", "size=1m", "ro") as ro:
        line = one_line(mia(*PROMPT, "--out", str(ro / "run.h5")))
        assert line == f"Error: cannot write {ro}/run.h5: the file system is read-only; no run file was created"


def write_docs(path, lines=3000):
    words = [f"t{i}" for i in range(1, 50)]
    with open(path, "w") as fh:
        for n in range(lines):
            fh.write(" ".join(words[(n * 7 + j * 3) % 49] for j in range(60)) + "\n")


PREFIX_ENV = {k: v for k, v in ENV.items() if k != "MIA_LOAD_PLUGINS"}  # the files dataset is a plugin's


def test_prefix_on_a_full_or_read_only_disk(fake, in_tmp):
    write_docs(in_tmp / "docs.txt")
    args = ["prefix", "--model", "fake-tok-a", "--dataset", "files", "--dataset-option",
            f"path={in_tmp / 'docs.txt'}", "--prefix_tokens", "8", "-q"]
    with mounted(in_tmp / "disk", "size=1m") as disk:
        line = one_line(mia(*args, "--out-dir", str(disk), env=PREFIX_ENV))
        assert line.startswith(f"Error: no space left on device writing {disk}/") and "no map was written" in line
        assert os.listdir(disk) == []  # the .partial folder is gone
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        line = one_line(mia(*args, "--out-dir", str(disk), env=PREFIX_ENV))
        assert "the file system is read-only" in line


def test_score_on_a_full_or_read_only_disk(fake, in_tmp):
    with mounted(in_tmp / "disk", "size=5m") as disk:
        shutil.copytree(fake, disk / "fakemap")
        run = disk / "fakemap" / "runs" / "r.h5"
        assert mia(*PROMPT, "--prefix_map", str(disk / "fakemap"), "--out", str(run)).returncode == 0
        fill(disk, 0)
        line = one_line(mia("score", str(run)))
        assert line.startswith(f"Error: no space left on device writing {disk}/fakemap/runs/r.scores.h5")
        (disk / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        line = one_line(mia("score", str(run)))
        assert "the file system is read-only" in line
        assert len(open_run(run)) == 200  # the run is untouched
