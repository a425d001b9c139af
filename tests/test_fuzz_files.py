"""Damaged files: a flipped byte in any file mia reads is one line and exit 1, or changes nothing.

The fuzz harness (tests/fuzz_harness.py) damages each file kind and runs the real commands that
read it in child processes with a time limit; bench/fuzz_files.py runs hundreds of trials per kind.
Here: a few trials per kind, then the specific damages the issue reported, each through ``mia`` in
a new Python process."""

import os
import subprocess
from pathlib import Path

import fuzz_harness
import pytest
from test_prompt_fakes import cli_command

ENV = {**os.environ, "MIA_LOAD_PLUGINS": ""}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(fixtures, work): the undamaged files and the folder every trial copies them to."""
    root = tmp_path_factory.mktemp("fuzz")
    plugin = fuzz_harness.register_fakes()  # for this module only: other tests register their own fakes
    try:
        fuzz_harness.build_fixtures(root / "fixtures", root / "work")
        yield root / "fixtures", root / "work"
    finally:
        fuzz_harness.unregister_fakes(plugin)


@pytest.fixture
def work(folders):
    """A fresh undamaged copy at the path the fixtures were made in."""
    fuzz_harness.fresh_copy(*folders)
    return folders[1]


@pytest.mark.parametrize("kind", fuzz_harness.KINDS)
def test_damaged_files_are_refused_in_one_line_or_read_unchanged(folders, kind):
    report = fuzz_harness.fuzz(kind, trials=6, fixtures=folders[0], work=folders[1], limit_s=30)
    print(f"{kind}: {report.trials} trials, {report.runs} command runs in {report.seconds:.1f} s: "
          f"{dict(report.verdicts)}")
    assert report.failures == []
    assert report.verdicts["refused"] > 0  # the damage was seen, not just survived


def mia(*args, cwd):
    """``mia ARGS`` in a new Python process (the fake model and tokenizer registered, no other plugin)."""
    return subprocess.run(cli_command(*args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60)


def one_error_line(result):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def flip_bits(path: Path, count: int, seed: int) -> None:
    import random

    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for _ in range(count):
        i = rng.randrange(512, len(data))
        data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def test_twenty_bit_flips_in_a_run_never_reach_libhdf5(work):
    """The reported hang (H5HG__cache_heap_deserialize): the checksum is checked before HDF5 opens the file."""
    flip_bits(work / fuzz_harness.RUN, 20, seed=1)
    for args in (["show", fuzz_harness.RUN], ["score", fuzz_harness.RUN], ["export", fuzz_harness.RUN]):
        line = one_error_line(mia(*args, cwd=work))
        assert f"damaged HDF5 file {fuzz_harness.RUN}: its SHA-256 checksum does not match" in line, line
        assert "restore it from a copy" in line


def test_string_data_of_a_map_is_covered(work):
    """A bit flip in string data (a sample id in HDF5's global heap, where Fletcher-32 does not reach) is
    refused too: the checksum covers every byte."""
    path = work / fuzz_harness.MAP / "prefix_map.h5"
    data = bytearray(path.read_bytes())
    at = data.find(b"doc3")
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    for args in (["show", fuzz_harness.MAP], ["score", fuzz_harness.RUN]):
        line = one_error_line(mia(*args, cwd=work))
        assert "damaged HDF5 file" in line and f"{fuzz_harness.MAP}/prefix_map.h5: " in line, line
        assert "remake the map with mia prefix" in line or "make it again" in line  # how to recover


def test_damaged_scores_file_is_one_line_for_show_and_export(work):
    flip_bits(work / fuzz_harness.SCORES, 10, seed=2)
    for args in (["show", fuzz_harness.SCORES], ["export", fuzz_harness.RUN]):
        line = one_error_line(mia(*args, cwd=work))
        assert f"damaged HDF5 file {fuzz_harness.SCORES}" in line and "score the run again" in line


def test_damaged_index_shard_is_refused(work):
    tokens = work / "index" / "shards" / "00000" / "tokens.bin"
    data = bytearray(tokens.read_bytes())
    data[10] ^= 0x04
    tokens.write_bytes(bytes(data))
    line = one_error_line(mia("score", fuzz_harness.RUN, "--index", "index", "--window", "10", "--no-save", cwd=work))
    assert "index index/shards/00000 is corrupt: tokens.bin does not match the checksum" in line


def test_older_files_without_a_checksum_still_open(tmp_path):
    """A file an older mia wrote (no user block) is read as before."""
    import h5py

    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.create_dataset("match/matched_length", data=[1, 2])
    from mia_core.formats.integrity import verify
    from mia_core.formats.scores import read_scores

    assert verify(old) is False
    assert read_scores(old)["match"]["matched_length"].tolist() == [1, 2]
