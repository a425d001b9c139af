"""The run-file writer and reader (mia_core.formats.runs)."""

import re

import h5py
import numpy as np
import pytest
from map_fixtures import write_map

from mia_core.errors import MiaError
from mia_core.formats.integrity import seal_file
from mia_core.formats.names import safe_name
from mia_core.formats.runs import API_COLUMNS, RunWriter, default_run_path, open_run


def make_map(folder, n=4, p=3, s=5):
    suffixes = [list(range(100 + i, 100 + i + s - (i % 2))) for i in range(n)]
    return write_map(folder, np.arange(n * p).reshape(n, p), suffixes, suffix_tokens=s, tokenizer="fake",
                     fingerprint="fp", labels=["member" if i % 2 else "nonmember" for i in range(n)])


def test_write_read_roundtrip(tmp_path):
    folder = make_map(tmp_path / "m")
    path = default_run_path(folder, "hf:org/x y")
    assert path.parent == folder / "runs" and path.name.startswith("hf-org-x-y_")
    w = RunWriter.create(path, {"model": "x", "prefix_map": str(folder)}, max_length=4,
                         columns={"logprobs": ("float32", "max_length"), **API_COLUMNS})
    w.append({"tokens": [[1, 2], [3, 4, 5, 6, 7]], "prefix_row": [0, 1], "text": ["a", "b"],
              "logprobs": [[-0.5, -1.0], [-1, -2, -3, -4]], "error": [None, "boom"]})
    w.append({"tokens": [[9]], "prefix_row": [2]})
    w.finish(elapsed_s=1.5)
    w.close()
    run = open_run(path)
    assert len(run) == 3 and run.complete and run.attrs["elapsed_s"] == 1.5
    assert [t.tolist() for t in run.tokens()] == [[1, 2], [3, 4, 5, 6], [9]]
    assert run.read("lengths").tolist() == [2, 4, 1]
    assert run.read("error").tolist() == ["", "boom", ""]
    assert np.isnan(run.read("cost_usd")).all()
    assert [s.tolist() for s in run.suffixes()] == [[100, 101, 102, 103, 104], [101, 102, 103, 104],
                                                     [102, 103, 104, 105, 106]]
    assert [p.tolist() for p in run.prefixes()][1] == [3, 4, 5]
    dicts = run.to_dicts()
    assert dicts[1]["sample_id"] == "s1" and dicts[1]["sample_label"] == "member"
    assert dicts[0]["logprobs"] == [-0.5, -1.0] and dicts[1]["error"] == "boom"


def test_reopen_cuts_unflushed_rows_and_never_overwrites(tmp_path):
    folder = make_map(tmp_path / "m")
    path = folder / "runs" / "r.h5"
    w = RunWriter.create(path, {"model": "x"}, max_length=3)
    w.append({"tokens": [[1], [2]], "prefix_row": [0, 1]})
    w.close()
    with h5py.File(path, "r+") as f:  # simulate rows written after the last recorded batch
        f["tokens"].resize(5, axis=0)
    with pytest.raises(MiaError, match="damaged HDF5 file .*checksum does not match"):
        RunWriter.reopen(path)  # a change made outside mia is damage
    with open(path, "r+b") as fh:  # as a writer of mia would have sealed it
        seal_file(fh)
    w = RunWriter.reopen(path)
    assert w.rows_done == 2
    w.append({"tokens": [[3]], "prefix_row": [2]})
    w.close()
    assert open_run(path).prefix_rows().tolist() == [0, 1, 2]
    with pytest.raises(MiaError, match="refusing to overwrite"):
        RunWriter.create(path, {}, max_length=3)


def test_static_retokenized_arrays(tmp_path):
    folder = make_map(tmp_path / "m")
    static = {"prefixes": np.array([[7, 8, -1], [9, 9, 9]]), "prefix_lengths": np.array([2, 3]),
              "suffixes": np.array([[1, 2], [3, -1]]), "suffix_lengths": np.array([2, 1])}
    w = RunWriter.create(folder / "runs" / "r.h5", {"prefix_map": str(folder)}, 2, static=static)
    w.append({"tokens": [[1], [2], [3]], "prefix_row": [0, 1, 0]})
    w.close()
    run = open_run(folder / "runs" / "r.h5")
    assert [p.tolist() for p in run.prefixes()] == [[7, 8], [9, 9, 9], [7, 8]]
    assert [s.tolist() for s in run.suffixes()] == [[1, 2], [3], [1, 2]]


def test_bad_files(tmp_path):
    with pytest.raises(MiaError, match="not found"):
        open_run(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(MiaError, match="junk.h5 is not an HDF5 file"):
        open_run(tmp_path / "junk.h5")
    assert safe_name("../x") == "x"


def test_default_run_path_keeps_dotted_model_names_and_numbers_clashes(tmp_path):
    from datetime import datetime

    from mia_core.formats.runs import default_run_path

    when = datetime(2026, 11, 27, 14, 30, 15)
    first = default_run_path(tmp_path, "hf:Qwen/Qwen2.5-0.5B", when)
    assert first.name == "hf-Qwen-Qwen2.5-0.5B_20261127_143015.h5"
    first.parent.mkdir(parents=True)
    first.touch()
    assert default_run_path(tmp_path, "hf:Qwen/Qwen2.5-0.5B", when).name == "hf-Qwen-Qwen2.5-0.5B_20261127_143015_2.h5"


def test_runs_named_by_an_older_mia_are_found_and_read(tmp_path):
    """Names are never parsed back: runs named before safe_name was shared (``hf_org_model_...``)
    stay runs of their map, read as before."""
    from mia_core.formats.filekinds import expand_runs, file_kind

    folder = make_map(tmp_path / "m")
    old = folder / "runs" / "hf_org_x_y_20261127_143015.h5"
    w = RunWriter.create(old, {"model": "hf:org/x y", "prefix_map": str(folder)}, max_length=2)
    w.append({"tokens": [[1, 2]], "prefix_row": [0]})
    w.finish()
    w.close()
    new = default_run_path(folder, "hf:org/x y")
    assert new.name.startswith("hf-org-x-y_") and new != old
    assert expand_runs([folder], "score") == [old] and file_kind(old) == "run"
    assert open_run(old).tokens()[0].tolist() == [1, 2]


def test_journal_rows_are_read_before_compaction_and_replay_is_idempotent(tmp_path):
    from mia_core.formats.journal import journal_path

    folder = make_map(tmp_path / "m")
    path = folder / "runs" / "j.h5"
    w = RunWriter.create(path, {"model": "x", "prefix_map": str(folder)}, max_length=3, columns=API_COLUMNS)
    w.append({"tokens": [[1], [2, 3]], "prefix_row": [0, 1], "error": ["", "boom"]}, generated_tokens=3)
    w.replace([1], {"tokens": [[4, 5, 6]], "prefix_row": [1], "error": [""]}, generated_tokens=4)
    w.append({"tokens": [[7]], "prefix_row": [2]}, generated_tokens=5)
    with pytest.raises(MiaError, match="is being written"):  # the writer holds the journal's lock
        open_run(path)
    w.journal.close()  # as if killed: the lock goes, the journal stays
    journal = journal_path(path).read_bytes()
    with h5py.File(path, "r") as f:
        assert int(f.attrs["rows"]) == 0  # nothing compacted yet: the rows live in the journal
    run = open_run(path)
    assert len(run) == 3 and run.attrs["generated_tokens"] == 5
    assert [t.tolist() for t in run.tokens()] == [[1], [4, 5, 6], [7]] and run.read("error").tolist() == [""] * 3
    RunWriter.reopen(path).close()  # compacted into the file
    assert not journal_path(path).exists()
    journal_path(path).write_bytes(journal)  # killed after the rename, before the journal was emptied
    again = open_run(path)
    assert len(again) == 3 and [t.tolist() for t in again.tokens()] == [[1], [4, 5, 6], [7]]


def test_a_torn_tail_is_dropped_but_a_corrupt_record_stops_every_reader_until_salvaged(tmp_path):
    """A record cut short at the end is what a kill leaves: dropped silently. A record failing its
    checksum is damage a kill cannot make: it used to end the journal, silently dropping the intact
    records after it (paid rows); now every reader and writer stops with one line until --salvage."""
    from mia_core.formats.journal import journal_path, read_records
    from mia_core.formats.runs import Salvage

    folder = make_map(tmp_path / "m")
    path = folder / "runs" / "t.h5"
    w = RunWriter.create(path, {"model": "x", "prefix_map": str(folder)}, max_length=2)
    for i in range(3):
        w.append({"tokens": [[i]], "prefix_row": [i]}, generated_tokens=i + 1)
    w.journal.close()  # as if killed
    data = journal_path(path).read_bytes()
    records, end = read_records(journal_path(path))
    assert [r.seq for r in records] == [1, 2, 3] and end == len(data)
    journal_path(path).write_bytes(data[:-7])  # the last record torn
    run = open_run(path)
    assert len(run) == 2 and run.attrs["generated_tokens"] == 2  # counters of the last whole record
    second = len(data) - len(data) // 3
    corrupt = bytearray(data)
    corrupt[second - 3] ^= 0xFF  # a flipped byte inside the second record: its checksum fails
    journal_path(path).write_bytes(bytes(corrupt))
    line = "record 2 is damaged (it held rows 1; intact after it: rows 2)"
    with pytest.raises(MiaError, match=re.escape(line)):
        open_run(path)
    with pytest.raises(MiaError, match=re.escape(line)):
        RunWriter.reopen(path)
    assert journal_path(path).read_bytes() == bytes(corrupt)  # refused: nothing cut
    salvage = Salvage(lambda rows: {"tokens": [[7]] * len(rows), "prefix_row": rows},
                      lambda columns: {"generated_tokens": int(columns["lengths"].sum())})
    w = RunWriter.reopen(path, salvage=salvage)
    assert w.rows_done == 3 and w.attrs["salvage_rows"] == [1] and w.attrs["generated_tokens"] == 3
    assert (path.parent / "t.h5.journal.damaged").read_bytes() == bytes(corrupt)
    w.append({"tokens": [[9]], "prefix_row": [3]})
    w.close()
    run = open_run(path)
    assert run.prefix_rows().tolist() == [0, 1, 2, 3] and [t.tolist() for t in run.tokens()] == [[0], [7], [2], [9]]


def test_text_with_nul_is_stored_visibly(tmp_path):
    """A byte-level tokenizer can decode a NUL, which HDF5 strings cannot hold: it is stored as U+2400
    (the token ids stay exact), both while the run is written and after compaction."""
    folder = make_map(tmp_path / "m")
    path = default_run_path(folder, "x")
    w = RunWriter.create(path, {"model": "x", "prefix_map": str(folder)}, max_length=4)
    w.append({"tokens": [[0, 65]], "prefix_row": [0], "text": ["\x00A"]})
    w.close()  # unfinished: the row is read from the journal
    assert open_run(path).read("text").tolist() == ["\u2400A"]
    w = RunWriter.reopen(path)
    w.finish()
    w.close()
    run = open_run(path)
    assert run.read("text").tolist() == ["\u2400A"] and run.tokens()[0].tolist() == [0, 65]
