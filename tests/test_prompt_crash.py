"""Fault injection: `mia prompt` SIGKILLed at hundreds of instants, inside writes too, then resumed.

Each trial is a real process (forked from the test with the fake plugin already loaded,
so a trial costs milliseconds, not a Python start-up) that is killed either by the
writer's own test hook (``MIA_FAULT_KILL_AT=k``: SIGKILL at its k-th durable step: half
a journal record, an fsync, a rename, a truncation), swept over every k of a run, or by
the test at a random instant. Then `mia prompt --resume` (or a fresh run when the kill
came before the run file existed) must end with exactly the rows and counters of an
uninterrupted run.
"""

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, make_fake_map

from mia_core.formats import safeio
from mia_core.formats.journal import journal_path
from mia_core.formats.runs import open_run

N_STRINGS, BATCH = 12, 2
COUNTERS = ("rows", "generated_tokens", "cost_usd", "usage", "num_strings", "complete", "rows_failed")
COLUMNS = ("tokens", "lengths", "prefix_row", "text", "raw_text", "stop_reason", "error", "input_tokens",
           "output_tokens", "cost_usd", "usage")


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-crash")
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def prompt_args(out, *extra):
    return ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--num_strings", str(N_STRINGS),
            "--batch_size", str(BATCH), "--max_length", "5", "--yes", "-q", "--out", str(out), *extra]


def forked(args, env=None, kill_after=None):
    """Run ``mia ARGS`` in a forked child; its exit code, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:  # the child: the real CLI, output discarded
        code = 70
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.environ.update(env or {})
            safeio._steps = 0
            from mia_core.cli import cli

            cli(args, prog_name="mia")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def snapshot(path):
    run = open_run(path)
    return ({k: run.attrs.get(k) for k in COUNTERS},
            {c: [v.tolist() if isinstance(v, np.ndarray) else v for v in run.read(c)] for c in COLUMNS})


def recover(out):
    """After a kill: resume the run (or start it again when no run file was made)."""
    if not out.exists():
        assert not journal_path(out).exists()
        return forked(prompt_args(out))
    if open_run(out).complete:  # killed after the last record: nothing left to do
        return 0
    return forked(["prompt", "--resume", str(out), "-q", "--yes"])


def check_trial(out, expected, label):
    attrs, columns = snapshot(out)
    assert attrs == expected[0], label
    assert columns == expected[1], label
    assert not journal_path(out).exists() or open_run(out).complete, label


def test_kill_at_every_durable_step_then_resume(fake, in_tmp, monkeypatch):
    monkeypatch.setenv(safeio.FAULT_NO_FSYNC_ENV, "1")
    rng = random.Random(5)
    reference = in_tmp / "reference.h5"
    log = in_tmp / "steps.log"
    assert forked(prompt_args(reference), {safeio.FAULT_LOG_ENV: str(log)}) == 0
    expected = snapshot(reference)
    assert expected[0]["rows"] == N_STRINGS and expected[0]["complete"]
    assert expected[0]["cost_usd"] == pytest.approx(0.12) and expected[0]["generated_tokens"] == 60
    kills = 0
    # Compact after every batch (every write path exercised), and only at the end (long journal).
    for compact_bytes in ("1", str(2**30)):
        monkeypatch.setenv("MIA_RUN_COMPACT_BYTES", compact_bytes)
        log.unlink(missing_ok=True)
        assert forked(prompt_args(in_tmp / f"count{compact_bytes}.h5"), {safeio.FAULT_LOG_ENV: str(log)}) == 0
        steps = len(log.read_text().splitlines())
        assert steps > 3 * N_STRINGS // BATCH
        for k in range(1, steps + 1):
            out = in_tmp / f"k{compact_bytes}_{k}.h5"
            code = forked(prompt_args(out), {safeio.FAULT_KILL_ENV: str(k)})
            assert code == -signal.SIGKILL, f"step {k} of {steps}: exit {code}"
            kills += 1
            if out.exists() and not open_run(out).complete:  # kill the resume too, at one of its first steps
                second = rng.randint(1, 12)
                code = forked(["prompt", "--resume", str(out), "-q", "--yes"], {safeio.FAULT_KILL_ENV: str(second)})
                kills += code == -signal.SIGKILL
            assert recover(out) == 0, f"step {k}"
            check_trial(out, expected, f"killed at step {k} of {steps} (compaction at {compact_bytes} bytes)")
    print(f"{kills} kills at durable steps")
    assert kills >= 150


def test_kill_at_random_instants_then_resume(fake, in_tmp, monkeypatch):
    monkeypatch.setenv(safeio.FAULT_NO_FSYNC_ENV, "1")
    reference = in_tmp / "reference.h5"
    started = time.perf_counter()
    assert forked(prompt_args(reference, "--model-option", "delay=0.002")) == 0
    duration = time.perf_counter() - started
    expected = snapshot(reference)
    rng = random.Random(11)
    monkeypatch.setenv("MIA_RUN_COMPACT_BYTES", "1")
    for trial in range(40):
        out = in_tmp / f"t{trial}.h5"
        code = forked(prompt_args(out, "--model-option", "delay=0.002"), kill_after=rng.uniform(0, duration))
        assert code in (0, -signal.SIGKILL)
        assert recover(out) == 0, f"trial {trial}"
        check_trial(out, expected, f"random kill {trial}")


def test_torn_journal_record_is_ignored_and_counters_follow_rows(fake, in_tmp):
    out = in_tmp / "torn.h5"
    monkey = {"MIA_RUN_COMPACT_BYTES": str(2**30)}
    # Step 3 is the second half of the first batch's record: the kill leaves a torn record.
    log = in_tmp / "log"
    forked(prompt_args(out), {**monkey, safeio.FAULT_LOG_ENV: str(log)})
    first_record = [line.split()[0] for line in log.read_text().splitlines() if "journal record" in line]
    out.unlink()
    code = forked(prompt_args(out), {**monkey, safeio.FAULT_KILL_ENV: str(int(first_record[3]))})
    assert code == -signal.SIGKILL
    run = open_run(out)  # one whole batch in the journal, the second cut in half
    assert len(run) == BATCH and run.attrs["generated_tokens"] == 5 * BATCH
    assert run.attrs["cost_usd"] == pytest.approx(0.01 * BATCH) and not run.complete
    assert journal_path(out).stat().st_size > 0
    exported = in_tmp / "killed.jsonl"  # readers see the journal's rows before any resume
    assert forked(["export", str(out), "--tokens", "--out", str(exported)]) == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(BATCH)) and all(len(r["generated_tokens"]) == 5 for r in rows)
    fakes.CALLS.clear()
    assert forked(["prompt", "--resume", str(out), "-q"]) == 0
    assert len(open_run(out)) == N_STRINGS and not journal_path(out).exists()


def test_usage_counter_is_the_sum_of_committed_rows(fake, in_tmp):
    out = in_tmp / "u.h5"
    code = forked(prompt_args(out), {safeio.FAULT_KILL_ENV: "20", "MIA_RUN_COMPACT_BYTES": str(2**30)})
    assert code == -signal.SIGKILL
    run = open_run(out)
    usage = [json.loads(u) for u in run.read("usage")]
    assert run.attrs["usage"]["output_tokens"] == sum(u["output_tokens"] for u in usage)
    assert run.attrs["cost_usd"] == pytest.approx(float(np.nansum(run.read("cost_usd"))))
    assert run.attrs["generated_tokens"] == int(run.read("lengths").sum())
