"""Every interrupted command can be finished by a command it names (issue #24, item 6): `mia merge`
killed (a real SIGKILL, at every durable step of its write) is finished by `mia merge --resume`; a cost
cap below the first batch writes nothing and names no file; a kill at a run's final compaction rename
is tidied by the next `--resume`."""

import os
import re
import subprocess

import numpy as np
import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, cli_command, make_fake_map

from mia_core.cli import cli
from mia_core.formats.runs import open_run

SHARDS = ["s0.h5", "s1.h5"]


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-interrupted")
    fakes.CALLS.clear()
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def mia(*args, env=None):
    """``mia ARGS`` in a new process (the fake model registered), with extra environment ``env``."""
    return subprocess.run(cli_command(*args), env={**os.environ, "MIA_LOAD_PLUGINS": "", **(env or {})},
                          capture_output=True, text=True, timeout=120)


def one_line(result, code=1, last=False):
    """The one error line (``last``: the last line, after notes)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert (last or len(lines) == 1) and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("Error: ")
    return lines[-1]


def columns(path):
    run = open_run(path)
    return {name: run.read(name) for name in run.columns}


def make_shards(runner):
    for i, out in enumerate(SHARDS):
        result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--shard", f"{i}/2",
                                     "--batch_size", "2", "--out", out, "-q"])
        assert result.exit_code == 0, result.output


def test_a_merge_killed_at_any_step_is_finished_by_merge_resume(fake, runner, in_tmp):
    make_shards(runner)
    assert mia("merge", *SHARDS, "--out", "whole.h5", "-q").returncode == 0
    expected = columns("whole.h5")
    log = in_tmp / "steps.log"
    assert mia("merge", *SHARDS, "--out", "count.h5", "-q", env={"MIA_FAULT_LOG": str(log)}).returncode == 0
    steps = len(log.read_text().splitlines())
    assert steps >= 8  # create, journal record, final record, compaction: each several durable steps
    resumed = 0
    # a kill while the partial run is created, in its row record, its final record, its compaction, its rename
    for k in sorted({1, 2, steps // 3, steps // 2, 2 * steps // 3, steps - 1, steps}):
        out = f"m{k}.h5"
        killed = mia("merge", *SHARDS, "--out", out, "-q", env={"MIA_FAULT_KILL_AT": str(k), "MIA_FAULT_NO_FSYNC": "1"})
        assert killed.returncode == -9, (k, killed.stderr)
        assert not (in_tmp / out).exists()  # the final name appears only once the merge is whole
        again = mia("merge", *SHARDS, "--out", out, "-q")
        if (in_tmp / f"{out}.partial").exists():  # killed after the partial run existed: the rerun names --resume
            line = one_line(again)
            assert re.search(rf"a merge of these shards was interrupted and left {out}\.partial; finish it with: "
                             rf"mia merge --resume s0\.h5 s1\.h5 --out {out}", line), line
            finished = mia("merge", "--resume", *SHARDS, "--out", out, "-q")
            assert finished.returncode == 0, finished.stderr
            resumed += 1
        else:  # killed before: nothing to finish, the rerun merges from the start
            assert again.returncode == 0, again.stderr
        got = columns(in_tmp / out)
        assert got.keys() == expected.keys() and all(np.array_equal(got[c], expected[c]) for c in got), k
        leftovers = sorted(p.name for p in in_tmp.iterdir() if p.name.startswith((out, f".{out}")))
        assert leftovers == [out], (k, leftovers)  # no partial, journal or temporary file stays
    assert resumed >= 2


def test_merge_resume_without_an_interrupted_merge_says_so(fake, runner, in_tmp):
    make_shards(runner)
    line = one_line(mia("merge", "--resume", *SHARDS, "--out", "x.h5"))
    assert "no interrupted merge of these shards to resume" in line and not (in_tmp / "x.h5").exists()


def test_a_cost_cap_below_the_first_batch_writes_nothing_and_names_no_file(fake, runner, in_tmp):
    result = mia("prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--batch_size", "3", "--yes",
                 "--max-cost", "0.0004", "--out", "acap.h5", "-q")
    assert result.stderr.startswith("estimated cost: $0.0700 for 7 requests")  # the note before any request
    line = one_line(result, code=3, last=True)
    assert "stopped before the first batch: it would cost about $0.03, above --max-cost $0.0004" in line, line
    assert "nothing was sent or written (no run file)" in line and "--resume" not in line
    assert not (in_tmp / "acap.h5").exists() and not (in_tmp / "acap.h5.journal").exists()


def test_the_cap_prints_with_its_digits(fake, runner, in_tmp):
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--batch_size", "2",
                                 "--yes", "--max-cost", "0.0312", "--out", "c.h5", "-q"])
    assert result.exit_code == 3, result.output
    assert "(--max-cost $0.0312)" in result.stderr and "continue with: mia prompt --resume c.h5" in result.stderr


def test_a_kill_at_the_final_compaction_rename_is_tidied_by_resume(fake, in_tmp):
    args = ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--out", "r.h5", "-q"]
    log = in_tmp / "steps.log"
    assert mia(*args[:-3], "--out", "count.h5", "-q", env={"MIA_FAULT_LOG": str(log)}).returncode == 0
    steps = log.read_text().splitlines()
    last_rename = max(int(line.split()[0]) for line in steps if line.endswith(" rename"))
    killed = mia(*args, env={"MIA_FAULT_KILL_AT": str(last_rename), "MIA_FAULT_NO_FSYNC": "1"})
    assert killed.returncode == -9
    temps = [p.name for p in in_tmp.iterdir() if re.fullmatch(r"\.r\.h5\.\d+\.tmp", p.name)]
    assert temps and (in_tmp / "r.h5.journal").exists()  # what the issue saw left behind
    before = columns("r.h5")  # the journal makes the run whole already
    result = mia("prompt", "--resume", "r.h5", "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    note, error = result.stderr.strip().splitlines()
    assert "finished the compaction a killed run left" in note and "is already complete (7 rows)" in error
    assert sorted(p.name for p in in_tmp.iterdir() if "r.h5" in p.name) == ["r.h5"]
    after = columns("r.h5")
    assert all(np.array_equal(before[c], after[c]) for c in before) and open_run("r.h5").complete
