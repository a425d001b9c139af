"""Corrupt inputs refused before work starts, no empty run left by an early failure, a run
being written says so, and the last tracebacks (unknown encoding, very long model names)."""

import os
import shutil
import subprocess
import time

import h5py
import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, FakeTokenizer, cli_command, make_fake_map

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.errors import BackendOutOfMemory
from mia_core.extraction.prefix import map_folder
from mia_core.formats.runs import default_run_path, open_run


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-inputs")
    fakes.CALLS.clear()
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def flip(h5_path, dataset, count=16):
    """XOR the first ``count`` bytes of the dataset's first chunk in the file itself."""
    with h5py.File(h5_path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(h5_path, "r+b") as fh:
        fh.seek(info.byte_offset)
        data = bytearray(fh.read(count))
        fh.seek(info.byte_offset)
        fh.write(bytes(b ^ 0x5A for b in data))


def error_line(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("dataset", ["prefixes", "sample_id", "sample_label"])
def test_damaged_map_is_refused_before_any_request(fake, runner, dataset):
    flip(fake / "prefix_map.h5", dataset)
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "-q"])
    line = error_line(result)
    assert "damaged HDF5 file Prefixes/fakemap/prefix_map.h5: its SHA-256 checksum does not match" in line
    assert "remake the map" in line
    assert fakes.CALLS == [] and not (fake / "runs").exists()


def test_damaged_suffixes_refused_for_the_check(fake, runner):
    flip(fake / "prefix_map.h5", "suffixes")
    for command in ("prompt", "check"):  # the whole file is checked, not only the datasets a command needs
        line = error_line(runner.invoke(cli, [command, "--prefix_map", "fakemap", "--model", "fake-lm", "-q"]))
        assert "damaged HDF5 file" in line and fakes.CALLS == []


def test_damaged_run_is_refused_by_export_score_and_resume(fake, runner, in_tmp):
    out = in_tmp / "r.h5"
    assert runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--out", str(out),
                               "-q"]).exit_code == 0
    flip(out, "tokens")
    for args in (["export", str(out)], ["score", str(out)], ["prompt", "--resume", str(out)]):
        line = error_line(runner.invoke(cli, args))
        assert f"damaged HDF5 file {out}: its SHA-256 checksum does not match" in line, args


class AlwaysOOM(fakes.RuleLM):
    def generate(self, prefixes, max_new_tokens, sampling):
        fakes.CALLS.append({"kind": "generate", "n": len(prefixes)})
        raise BackendOutOfMemory("fake OOM")


class OOMPlugin:
    @hookimpl
    def mia_register_backends(self, register):
        register("fake-oom", AlwaysOOM, description="runs out of memory at any batch size")


def test_failure_before_the_first_row_leaves_no_run_file(fake, register_plugin, runner, in_tmp):
    register_plugin(OOMPlugin(), name="fake-oom")
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-oom", "--batch_size", "1",
                                 "--out", str(in_tmp / "oom.h5"), "-q"])
    line = error_line(result)
    assert "out of memory even at batch size 1" in line and "no run file left" in line
    assert not (in_tmp / "oom.h5").exists() and not (in_tmp / "oom.h5.journal").exists()
    huge = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-oom", "--max_length",
                               "1000000000", "-q"])
    assert huge.exit_code == 2 and "Traceback" not in huge.output  # a usage error: click's usage, then one line
    assert huge.stderr.strip().splitlines()[-1].endswith("1000000000 is above 1048576 new tokens per string "
                                                         "(the run stores max_length values per row)")
    assert not (fake / "runs").exists() and fakes.CALLS == [{"kind": "generate", "n": 1}]


def test_a_kill_just_after_creation_leaves_a_resumable_run(fake, runner, in_tmp):
    """The first record of a run is its creation: a run file that exists is whole (0 rows) and resumes."""
    from mia_core.formats.runs import RunWriter

    w = RunWriter.create(in_tmp / "r.h5", {"model": "fake-lm", "method": "generate", "num_strings": 7,
                                           "max_length": 4, "temperature": 0.0, "top_k": None, "top_p": None,
                                           "seed": None, "retokenized": False, "batch_size": 3,
                                           "prefix_map": str(fake.resolve())}, 4)
    w.journal.close()  # as if killed: no compaction, no clean-up
    assert len(open_run(in_tmp / "r.h5")) == 0
    result = runner.invoke(cli, ["prompt", "--resume", str(in_tmp / "r.h5"), "-q"])
    assert result.exit_code == 0, result.output
    assert len(open_run(in_tmp / "r.h5")) == 7
    (in_tmp / "old.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # a 96-byte stub of the old writer
    line = error_line(runner.invoke(cli, ["prompt", "--resume", str(in_tmp / "old.h5")]))
    assert f"damaged HDF5 file {in_tmp / 'old.h5'}" in line and "delete it and start a new run" in line
    assert not (in_tmp / "old.h5.journal").exists()  # a refused resume leaves nothing beside it
    line = error_line(runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--out",
                                          str(in_tmp / "old.h5")]))
    assert "exists but is not a readable mia run" in line and "delete it or choose another --out" in line
    line = error_line(runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--out",
                                          str(in_tmp / "r.h5")]))
    assert "already exists; refusing to overwrite it (use --resume to continue it)" in line


def test_a_run_being_written_says_so(fake, in_tmp):
    out = in_tmp / "live.h5"
    trace = in_tmp / "trace"
    env = {**os.environ, "MIA_LOAD_PLUGINS": ""}
    proc = subprocess.Popen(cli_command("prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--num_strings",
                                        "400", "--batch_size", "2", "--model-option", "delay=0.05",
                                        "--model-option", f"trace={trace}", "--out", str(out), "-q"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (trace.exists() and len(trace.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.02)
        for args in (["export", str(out)], ["score", str(out)], ["prompt", "--resume", str(out)]):
            done = subprocess.run(cli_command(*args), env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert f"{out} is being written by a running mia process" in done.stderr, args
    finally:
        proc.kill()
        proc.wait()
    assert 0 < len(open_run(out)) < 400  # killed: readable at once, the journal's rows included


class LongNamePlugin:
    NAME = "local/" + "very-long-model-folder-name_" * 12 + "final"

    @hookimpl
    def mia_register_tokenizers(self, register):
        register(self.NAME, lambda name, options: FakeTokenizer(name, "a"))


def test_a_very_long_model_name_makes_a_short_map_name(fake, register_plugin, runner, in_tmp):
    register_plugin(LongNamePlugin(), name="long-name")
    (in_tmp / "docs.txt").write_text("\n".join(" ".join(f"t{(i + j) % 40 + 1}" for j in range(30))
                                               for i in range(5)))
    result = runner.invoke(cli, ["prefix", "--model", LongNamePlugin.NAME, "--dataset", "files", "--dataset-option",
                                 f"path={in_tmp / 'docs.txt'}", "--dataset-option", "by=line",
                                 "--prefix_tokens", "4", "-q"])
    assert result.exit_code == 0, result.output
    folder = result.stdout.strip().splitlines()[-1]
    name = os.path.basename(folder)
    assert len(name.encode()) < 255 and "final" in name
    assert map_folder(in_tmp, LongNamePlugin.NAME, "files", 4, "start").name != \
        map_folder(in_tmp, LongNamePlugin.NAME + "x", "files", 4, "start").name
    run = default_run_path(in_tmp / "m", LongNamePlugin.NAME)
    assert len(run.name.encode()) < 255 and "final" in run.name


def test_unknown_encoding_is_one_line(fake, runner, in_tmp):
    (in_tmp / "docs.txt").write_text("t1 t2 t3 t4 t5 t6\n")
    result = runner.invoke(cli, ["prefix", "--model", "fake-tok-a", "--dataset", "files", "--dataset-option",
                                 f"path={in_tmp / 'docs.txt'}", "--dataset-option", "encoding=utf-nine"])
    assert "unknown encoding 'utf-nine'" in error_line(result)
    assert not any(p.name.startswith("fake") for p in (in_tmp / "Prefixes").iterdir() if p != fake)


def test_stale_temporary_files_of_killed_writers_are_removed(fake, in_tmp):
    from mia_core.formats.safeio import write_atomically

    stale = in_tmp / ".x.bin.999999.tmp"  # pid 999999: not running
    stale.write_bytes(b"half")
    write_atomically(in_tmp / "x.bin", b"whole")
    assert (in_tmp / "x.bin").read_bytes() == b"whole" and not stale.exists()
    with pytest.raises(FileExistsError):
        write_atomically(in_tmp / "x.bin", b"other", overwrite=False)
    assert (in_tmp / "x.bin").read_bytes() == b"whole"
    assert shutil.which("true") is None or [p.name for p in in_tmp.iterdir() if p.name.endswith(".tmp")] == []
