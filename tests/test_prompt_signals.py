"""Crash safety with real processes: SIGKILL mid-run then --resume, and Ctrl-C (SIGINT)."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from test_prompt_fakes import FakePlugin, cli_command, make_fake_map

from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import open_run

N_STRINGS = 40


@pytest.fixture
def fake_map(in_tmp):
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def start(out, trace, *extra):
    env = {**os.environ, "MIA_LOAD_PLUGINS": ""}
    args = ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--num_strings", str(N_STRINGS),
            "--batch_size", "2", "--max_length", "6", "--model-option", "delay=0.05",
            "--model-option", f"trace={trace}", *extra]
    if out is not None:
        args += ["--out", str(out)]
    # SIGINT's default restored in the child: a suite started in the background (nohup ... &) ignores it,
    # and Python then never turns it into KeyboardInterrupt, so the test would measure the shell, not mia
    return subprocess.Popen(cli_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_calls(trace, n, proc, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if trace.exists() and len(trace.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("the run never got going")


def expected_rows(register_plugin):
    register_plugin(FakePlugin(), name="fake-signals")
    return prompt("fakemap", "fake-lm", num_strings=N_STRINGS, batch_size=5, max_length=6, quiet=True)


def test_sigkill_then_resume_gives_exactly_num_strings_rows(fake_map, in_tmp, register_plugin):
    out, trace = in_tmp / "killed.h5", in_tmp / "trace.txt"
    proc = start(out, trace)
    wait_for_calls(trace, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = open_run(out)  # readable after a hard kill
    done = len(killed)
    assert 0 < done < N_STRINGS and not killed.complete
    resumed = subprocess.run(cli_command("prompt", "--resume", str(out), "-q"), env={**os.environ,
                             "MIA_LOAD_PLUGINS": ""}, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    run = open_run(out)
    assert run.complete and len(run) == N_STRINGS
    assert run.prefix_rows().tolist() == [i % 7 for i in range(N_STRINGS)]  # no duplicates, no gaps
    want = expected_rows(register_plugin)
    assert [t.tolist() for t in run.tokens()] == [r["generated_tokens"] for r in want]


def test_sigint_stops_cleanly_and_says_how_to_resume(fake_map, in_tmp):
    out, trace = in_tmp / "int.h5", in_tmp / "trace.txt"
    proc = start(out, trace)
    wait_for_calls(trace, 4, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    run = open_run(out)
    assert 0 < len(run) < N_STRINGS and not run.complete
    assert np.array_equal(run.prefix_rows(), np.arange(len(run)) % 7)
