"""Sharded runs (`mia prompt --shard I/N`) and `mia merge` on a tiny randomly initialised HF
model (tests/tiny_models.py): merged shards equal the unsharded run, a shard killed with
SIGKILL resumes, and merges of overlapping, missing, unfinished or mismatched shards are
refused with one line."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_equality import LOGPROB_ATOL, assert_same_bytes, assert_same_rows, run_columns
from tiny_models import windows_map

from mia_core.cli import cli
from mia_core.extraction.merge import merge_runs
from mia_core.extraction.prompt import prompt
from mia_core.extraction.shards import Shard, parse_shard
from mia_core.formats.integrity import edit_hdf5
from mia_core.formats.runs import open_run
from mia_core.types import Sampling

N_MAP = 7


@pytest.fixture(scope="module")
def tiny(tiny_llama_backend, tmp_path_factory):
    path, backend, ids = tiny_llama_backend
    folder = windows_map(tmp_path_factory.mktemp("tiny_shards") / "map", backend, ids,
                         [9 * i for i in range(N_MAP)], 8, 6, ["member", "nonmember"] * 3 + ["member"])
    return str(path), backend, folder


def _shards(tiny, tmp_path, count, num_strings=17, **kw):
    name, backend, folder = tiny
    paths = []
    for i in range(count):
        path = tmp_path / f"shard{i}.h5"
        prompt(folder, name, backend=backend, out=path, num_strings=num_strings, batch_size=2, max_length=5,
               quiet=True, shard=f"{i}/{count}", **kw)
        paths.append(path)
    return paths


def test_parse_shard_and_rows():
    assert parse_shard("3/8") == Shard(3, 8) and parse_shard(None) == Shard(0, 1)
    for bad in ("8/8", "-1/4", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(Exception, match="--shard|I/N"):
            parse_shard(bad)
    shard = Shard(1, 3)
    assert shard.size(10) == 3 and shard.run_rows(0, 2, 10).tolist() == [1, 4]
    assert shard.run_rows(2, 5, 10).tolist() == [7]


@pytest.mark.parametrize("method", ["generate", "teacher-forced"])
def test_merged_shards_equal_the_unsharded_run(tiny, tmp_path, method):
    name, backend, folder = tiny
    whole = tmp_path / "whole.h5"
    prompt(folder, name, backend=backend, out=whole, num_strings=17, batch_size=2, max_length=5, quiet=True,
           method=method)
    paths = _shards(tiny, tmp_path, 3, method=method)
    assert [len(open_run(p)) for p in paths] == [6, 6, 5]
    assert open_run(paths[1]).attrs["shard"] == "1/3"
    assert open_run(paths[1]).read("prefix_row").tolist() == [r % N_MAP for r in range(1, 17, 3)]
    merged = merge_runs(list(reversed(paths)), tmp_path / "merged.h5")  # any order
    # The shards batch other rows together than the whole run (shard 0: rows 0 and 3), so float32
    # log-probs may differ in the last bits (LOGPROB_ATOL, tests/run_equality.py); tokens, lengths
    # and verdicts are exact. The merge itself copies the shards' stored bytes: bitwise.
    assert_same_rows(run_columns(merged), run_columns(whole), atol=LOGPROB_ATOL)
    shard_rows = [run_columns(p) for p in paths]
    merged_rows = run_columns(merged)
    for i, shard in enumerate(shard_rows):
        assert_same_bytes({name: np.asarray(v, dtype=object if np.asarray(v).dtype == object else None)[i::3]
                           for name, v in merged_rows.items()}, shard)
    run = open_run(merged)
    assert run.complete and "shard" not in run.attrs and run.attrs["shard_count"] == 3
    assert run.attrs["generated_tokens"] == sum(int(open_run(p).attrs["generated_tokens"]) for p in paths)


def test_merge_cli_and_refusals(tiny, tmp_path, runner):
    name, backend, folder = tiny
    paths = _shards(tiny, tmp_path, 3)
    result = runner.invoke(cli, ["merge", *map(str, paths), "-o", str(tmp_path / "m.h5")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "m.h5") and len(open_run(tmp_path / "m.h5")) == 17

    def refused(args, pattern):
        result = runner.invoke(cli, ["merge", *map(str, args), "-o", str(tmp_path / "never.h5")])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # no traceback
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
        assert not (tmp_path / "never.h5").exists() and not (tmp_path / "never.h5.partial").exists()

    refused(paths[:2], r"shard\(s\) 2/3 missing")  # a gap
    refused([paths[0], paths[1], paths[1], paths[2]], r"overlap.*given twice.*1/3")
    twin = tmp_path / "twin.h5"
    prompt(folder, name, backend=backend, out=twin, num_strings=17, batch_size=2, max_length=5, quiet=True,
           shard="1/3")
    refused([paths[0], paths[1], twin, paths[2]], r"overlap.*both shard 1/3")
    other_n = _shards(tiny, tmp_path / "n2", 2)
    refused([paths[0], other_n[1]], r"different ways")
    sampled = _shards(tiny, tmp_path / "t", 3, sampling=Sampling(temperature=0.7, top_k=3, seed=1))
    refused([paths[0], paths[1], sampled[2]], r"temperature=0\.0.*temperature=0\.7")
    longer = _shards(tiny, tmp_path / "l", 3, num_strings=18)
    refused([paths[0], paths[1], longer[2]], r"num_strings")
    whole = tmp_path / "whole.h5"
    prompt(folder, name, backend=backend, out=whole, num_strings=17, max_length=5, quiet=True)
    refused([whole], r"not a shard")
    refused([tmp_path / "missing.h5"], r"not found")
    refused([*paths[:2], _unfinished(paths[2], tmp_path)], r"unfinished: 3 of 5 rows.*--resume")
    result = runner.invoke(cli, ["merge", *map(str, paths), "-o", str(tmp_path / "m.h5")])
    assert result.exit_code == 1 and "already exists" in result.stderr  # never overwrites


def _unfinished(path: Path, tmp_path: Path) -> Path:
    """A copy of a shard cut back to 3 rows, as a shard killed mid-way leaves it."""
    cut = tmp_path / "unfinished.h5"
    cut.write_bytes(path.read_bytes())
    with edit_hdf5(cut) as f:
        f.attrs["rows"] = 3
        f.attrs["complete"] = False
    return cut


def test_shard_resume_refuses_another_shard(tiny, tmp_path):
    name, backend, folder = tiny
    (path,) = _shards(tiny, tmp_path, 1)
    cut = _unfinished(path, tmp_path)
    with pytest.raises(Exception, match="the run is shard 0/1, not 1/2"):
        prompt(resume=cut, backend=backend, quiet=True, shard="1/2")


def _spawn_mia(args: list[str], cwd: Path) -> subprocess.Popen:
    log = open(cwd / "mia.log", "wb")  # a file, not a pipe: a full pipe would block the child
    proc = subprocess.Popen([sys.executable, "-c", "from mia_core.cli import main; main()", *args], cwd=cwd,
                            env={**os.environ, "MIA_LOAD_PLUGINS": "mia-hf"}, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return proc


def test_killed_shard_resumed_then_merged(tiny, tmp_path, runner):
    """A shard killed with SIGKILL mid-run keeps its finished batches; --resume finishes it and
    the merge equals the unsharded run."""
    name, backend, folder = tiny
    num = 300
    kw = dict(num_strings=num, batch_size=1, max_length=5, quiet=True)
    whole = tmp_path / "whole.h5"
    prompt(folder, name, backend=backend, out=whole, **{**kw, "batch_size": 8})
    paths = [tmp_path / f"s{i}.h5" for i in range(3)]
    for i in (0, 2):
        prompt(folder, name, backend=backend, out=paths[i], shard=f"{i}/3", **kw)
    proc = _spawn_mia(["prompt", "--prefix_map", folder, "--model", name, "--num_strings", str(num), "--batch_size",
                       "1", "--max_length", "5", "--shard", "1/3", "--out", str(paths[1])], tmp_path)
    deadline = time.monotonic() + 120
    while not re.search(r" ([1-9]\d*)/100 ", (tmp_path / "mia.log").read_text(errors="replace")):
        assert proc.poll() is None, (tmp_path / "mia.log").read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the shard never showed progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed = open_run(paths[1])
    assert 0 < len(killed) < 100 and not killed.complete, len(killed)
    result = runner.invoke(cli, ["merge", *map(str, paths), "-o", str(tmp_path / "early.h5")])
    assert result.exit_code == 1 and "unfinished" in result.stderr
    result = runner.invoke(cli, ["prompt", "--resume", str(paths[1]), "-q"])
    assert result.exit_code == 0, result.output
    assert open_run(paths[1]).complete and len(open_run(paths[1])) == 100
    # The resume replays the killed shard's batches as they were (batch size 1): bitwise equal to
    # the shard run uninterrupted; the merge against the whole run (batch 8) to LOGPROB_ATOL.
    uninterrupted = tmp_path / "s1_whole.h5"
    prompt(folder, name, backend=backend, out=uninterrupted, shard="1/3", **kw)
    assert_same_bytes(run_columns(paths[1]), run_columns(uninterrupted))
    assert_same_rows(run_columns(merge_runs(paths, tmp_path / "merged.h5")), run_columns(whole), atol=LOGPROB_ATOL)


class ReportsRows:
    """The tiny HF backend made to report each row as it finishes, as the vLLM backend does."""

    def __init__(self, backend):
        self.backend, self.on_rows_done, self.seen = backend, None, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prefixes, *args, **kwargs):
        out = self.backend.generate(prefixes, *args, **kwargs)
        for _ in out:
            self.on_rows_done(1, 0)
            self.seen.append(self.bars[-1].n)
        return out


def test_bar_advances_within_a_batch_without_double_counting(tiny, tmp_path, monkeypatch):
    import mia_core.extraction.prompt as prompt_module

    name, backend, folder = tiny
    wrapped = ReportsRows(backend)
    wrapped.bars = []

    def keep(total=None, initial=0, **kwargs):
        import io

        from tqdm import tqdm

        wrapped.bars.append(tqdm(total=total, initial=initial, file=io.StringIO()))
        return wrapped.bars[-1]

    monkeypatch.setattr(prompt_module, "progress", keep)
    prompt(folder, name, backend=wrapped, out=tmp_path / "r.h5", num_strings=7, batch_size=3, max_length=3,
           shard="0/1")
    assert wrapped.seen == [1, 2, 3, 4, 5, 6, 7]  # moved row by row inside each batch of 3
    assert wrapped.bars[-1].n == 7 and len(open_run(tmp_path / "r.h5")) == 7
