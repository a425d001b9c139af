"""Corpus index at scale: fixed-window fingerprints equal the suffix table, shards equal one index,
a killed build resumes to the same index, repetitive text stays fast, infini-gram indexes are read."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scoring_fixtures import FP, make_docs, make_map, make_run

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.formats.corpus_index.reader import CorpusIndex, tokengrams_module
from mia_core.formats.corpus_index.shard_writer import build_index
from mia_core.formats.corpus_index.suffix_sort import suffix_array


def _queries(docs, width, vocab, rng, n=400):
    flat = np.concatenate(docs)
    present = np.stack([flat[s:s + width] for s in rng.integers(0, len(flat) - width, n)])  # some span documents
    near = present.copy()
    near[:, -1] = (near[:, -1] + 1) % max(2, int(flat.max()) + 1)
    shifted = present.copy()
    shifted[:, 0] = (shifted[:, 0] + 1) % max(2, int(flat.max()) + 1)
    bad = np.full((2, width), vocab + 5)
    bad[1, 0] = -1
    return np.concatenate([present, near, shifted, rng.integers(0, int(flat.max()) + 1, (n, width)), bad])


def _naive_answers(docs, q):
    """Ground truth: the set of every window of the documents (none spans two)."""
    width = q.shape[1]
    present = {tuple(d[i:i + width]) for d in (x.tolist() for x in docs) for i in range(len(d) - width + 1)}
    return np.array([tuple(row) in present for row in q.tolist()])


CORPORA = {
    "random": lambda rng: [rng.integers(0, 500, rng.integers(1, 400)) for _ in range(40)],
    "small-alphabet": lambda rng: [rng.integers(0, 3, rng.integers(1, 300)) for _ in range(40)],
    "repetitive": lambda rng: [np.full(3000, 7), np.tile([1, 2, 3], 700), np.full(50, 7), np.r_[np.full(60, 7), 8]],
}


@pytest.mark.parametrize("corpus", sorted(CORPORA))
@pytest.mark.parametrize("hash_bits", [64, 5])  # 5 bits: fingerprints collide all the time
@pytest.mark.parametrize("shard_tokens", [None, 700, 60])  # 1, a few and many (10-70) shards
def test_fixed_window_membership_equals_suffix_table(tmp_path, corpus, hash_bits, shard_tokens):
    rng = np.random.default_rng(len(corpus) + hash_bits)
    docs = CORPORA[corpus](rng)
    vocab = 500
    build_index(tmp_path / "idx", docs, "toy", FP, vocab, {}, windows=(4, 50), hash_bits=hash_bits,
                shard_tokens=shard_tokens)
    idx = CorpusIndex(tmp_path / "idx")
    assert idx.windows == [4, 50] and (len(idx.shards) > 1) == (shard_tokens is not None)
    assert sorted(idx.global_windows) == ([4, 50] if len(idx.shards) > 1 else [])  # one shard: its own table
    for width in (4, 50, 7):  # 7: no fingerprint table, the suffix-table search answers
        q = _queries(docs, width, vocab, rng)
        expected = _naive_answers(docs, q)
        assert 0 < expected.sum() < len(q)
        got = idx.contains_many(q)  # through the index-level table
        assert (got == expected).all(), f"{(got != expected).sum()} differ"
        assert (idx.contains_many(q, per_shard=True) == expected).all()  # through each shard's table
        valid = (q >= 0).all(1) & (q < vocab).all(1)
        by_suffix_table = np.zeros(int(valid.sum()), dtype=bool)
        for shard in idx.shards:  # the suffix-table search alone agrees too
            by_suffix_table |= shard.search_windows(q[valid])
        assert (by_suffix_table == expected[valid]).all()


def test_fingerprints_collide_yet_answers_stay_exact(tmp_path):
    """With 5-bit fingerprints almost every lookup hits another window's fingerprint; verification catches all."""
    from mia_core.formats.corpus_index.window_table import WindowTable

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, 300) for _ in range(10)]
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {}, windows=(10,), hash_bits=5)
    idx = CorpusIndex(tmp_path / "idx")
    table: WindowTable = idx.shards[0].windows[10]
    assert len(table.hashes) <= 32  # every window collides into 32 fingerprints
    q = rng.integers(0, 50, (500, 10))
    cand = table.candidates(q)
    assert (cand >= 0).mean() > 0.9  # almost all have a candidate...
    assert not idx.contains_many(q).any()  # ...and none is a member (random 10-grams over 50 ids)
    flat = np.concatenate(docs)
    present = np.stack([flat[s:s + 10] for s in range(0, 2900, 7) if s % 300 <= 290])
    assert idx.contains_many(present).all()
    build_index(tmp_path / "many", docs, "toy", FP, 500, {}, windows=(10,), hash_bits=5, shard_tokens=250)
    many = CorpusIndex(tmp_path / "many")
    table = many.global_windows[10]
    assert len(many.shards) == 10 and len(table.hashes) <= 32
    hit, shard_of, _ = table.locate(q)
    assert len(hit) > 0.9 * len(q) and set(shard_of.tolist()) == {0}  # the first shard owns all 32
    # so windows of shards 1-9 are found only through the collision path (the suffix table of every shard)
    assert not many.contains_many(q).any() and many.contains_many(present).all()


def _index_level_files(folder):
    return {p.name: p.read_bytes() for p in folder.glob("windows.*")}


def test_index_level_table_is_merged_in_bounded_ranges(tmp_path):
    """The merge cut into ranges of at most ``range_entries`` entries writes the same table as one range; every
    fingerprint of every shard is in it, pointing at a window of a shard that has it."""
    from mia_core.formats.corpus_index.global_table import SHARD_SHIFT, merge_window_tables, range_bounds

    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 30, rng.integers(10, 400)) for _ in range(60)]
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {}, windows=(6,), shard_tokens=900)
    idx = CorpusIndex(tmp_path / "idx")
    shards = [s.windows[6] for s in idx.shards]
    hashes = [t.hashes for t in shards]
    for limit in (64, 1000):
        bounds = range_bounds(hashes, limit)
        if limit == 64:
            assert len(bounds) > 3
        edges = np.r_[0, np.sort(np.concatenate(hashes)).searchsorted(bounds), sum(map(len, hashes))]
        assert np.diff(edges).max() <= limit  # no range holds more than the bound, all shards together
        record = merge_window_tables(tmp_path, [s.folder for s in idx.shards], [s.tokens for s in idx.shards], 6,
                                     64, range_entries=limit)
        assert _index_level_files(tmp_path) == _index_level_files(tmp_path / "idx")
        assert record == idx.meta["window_tables"]["6"]
    table = idx.global_windows[6]
    assert (table.hashes[1:] > table.hashes[:-1]).all()  # sorted, distinct
    assert set(table.hashes.tolist()) == set(np.concatenate(hashes).tolist())
    shard_of, position = table.values >> np.uint64(SHARD_SHIFT), table.values & np.uint64((1 << SHARD_SHIFT) - 1)
    for s, shard in enumerate(shards):
        mine = shard_of == s
        at = np.searchsorted(shard.hashes, table.hashes[mine])
        assert (shard.hashes[at] == table.hashes[mine]).all() and (shard.positions[at] == position[mine]).all()


def test_damaged_index_level_table_is_one_line(tmp_path):
    docs = [np.arange(i, i + 80) % 500 for i in range(40)]
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {}, windows=(10,), shard_tokens=600)
    q = np.stack([docs[3][:10], np.arange(10) + 400])
    assert CorpusIndex(tmp_path / "idx").contains_many(q).tolist() == [True, False]
    path = tmp_path / "idx" / "windows.10.loc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    idx = CorpusIndex(tmp_path / "idx")  # opening reads sizes only; the checksum is checked on first use
    with pytest.raises(MiaError, match=r"corrupt: windows.10.loc does not match the checksum its build recorded"):
        idx.contains_many(q)
    path.write_bytes(bytes(data[:-8]))
    with pytest.raises(MiaError, match=r"corrupt: windows.10.loc has \d+ bytes, expected"):
        CorpusIndex(tmp_path / "idx")
    path.unlink()
    with pytest.raises(MiaError, match="corrupt: windows.10.loc is missing"):
        CorpusIndex(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    meta["window_tables"]["10"] = {"entries": "x"}
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(MiaError, match="window table record is malformed"):
        CorpusIndex(tmp_path / "idx")


def test_score_refuses_an_index_whose_index_level_table_is_cut_short(tmp_path, runner):
    """Through the CLI: mia score with a sharded index answers as with one shard; a truncated or missing
    index-level table is one line and exit 1, never a traceback or a wrong answer."""
    docs = make_docs(12, 90, seed=8)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=40)
    run = make_run(folder, [d[10:50] if i % 2 == 0 else np.arange(40) + 300 for i, d in enumerate(docs)])
    build_index(tmp_path / "one", docs, "toy", FP, 500, {}, windows=(20,))
    build_index(tmp_path / "many", docs, "toy", FP, 500, {}, windows=(20,), shard_tokens=200)
    assert len(CorpusIndex(tmp_path / "many").shards) > 3 and (tmp_path / "many" / "windows.20.loc").is_file()
    scored = [runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / name), "--window", "20", "--json",
                                  "--no-save"]) for name in ("one", "many")]
    assert all(r.exit_code == 0 for r in scored), [r.output for r in scored]
    corpus = [json.loads(r.stdout)["corpus"] for r in scored]
    assert corpus[0]["memorized"] == corpus[1]["memorized"] and corpus[1]["memorized"]["count"] == 6
    loc = tmp_path / "many" / "windows.20.loc"
    with open(loc, "r+b") as f:
        f.truncate(loc.stat().st_size - 8)
    for damage in ("truncated", "missing"):
        res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "many"), "--window", "20"])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: index") and "windows.20.loc" in lines[0], damage
        loc.unlink(missing_ok=True)


def test_index_without_index_level_table_answers_through_its_shards(tmp_path):
    """An index built by a mia before the index-level table (no ``window_tables``) answers the same."""
    rng = np.random.default_rng(6)
    docs = [rng.integers(0, 20, rng.integers(10, 200)) for _ in range(50)]
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {}, windows=(5,), shard_tokens=400)
    q = _queries(docs, 5, 500, rng)
    expected = _naive_answers(docs, q)
    assert (CorpusIndex(tmp_path / "idx").contains_many(q) == expected).all()
    meta_path = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    del meta["window_tables"]
    meta_path.write_text(json.dumps(meta))
    for name in _index_level_files(tmp_path / "idx"):
        (tmp_path / "idx" / name).unlink()
    old = CorpusIndex(tmp_path / "idx")
    assert old.global_windows == {} and old.windows == [5] and len(old.shards) > 3
    assert (old.contains_many(q) == expected).all()


def test_more_shards_than_locations_hold_write_no_index_level_table(tmp_path, monkeypatch):
    """Past the shards a location can name, the build writes no index-level table and lookups ask each shard."""
    from mia_core.formats.corpus_index import global_table

    assert global_table.MAX_SHARDS << global_table.SHARD_SHIFT == 1 << 63  # locations stay positive as int64
    monkeypatch.setattr(global_table, "MAX_SHARDS", 3)
    rng = np.random.default_rng(9)
    docs = [rng.integers(0, 20, rng.integers(10, 200)) for _ in range(40)]
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {}, windows=(5,), shard_tokens=400)
    idx = CorpusIndex(tmp_path / "idx")
    assert len(idx.shards) > 3 and idx.global_windows == {} and idx.meta["window_tables"] == {}
    assert not list((tmp_path / "idx").glob("windows.*"))
    q = _queries(docs, 5, 500, rng)
    assert (idx.contains_many(q) == _naive_answers(docs, q)).all()


def test_suffix_sort_equals_tokengrams_and_naive(tmp_path):
    rng = np.random.default_rng(1)
    for _trial in range(30):
        tokens = rng.integers(0, 3, rng.integers(1, 80)).astype(np.uint16)
        naive = sorted(range(len(tokens)), key=lambda i: tokens[i:].tolist())
        assert suffix_array(tokens).tolist() == naive
    tokens = np.r_[rng.integers(0, 4, 5000), np.full(3000, 2), 65535].astype("<u2")
    (tmp_path / "t.bin").write_bytes(tokens.tobytes())
    tokengrams_module().MemmapIndex.build(str(tmp_path / "t.bin"), str(tmp_path / "s.bin"), vocab=2**16,
                                          verbose=False)
    assert (np.fromfile(tmp_path / "s.bin", dtype="<u8") == suffix_array(tokens)).all()
    wide = np.r_[rng.integers(0, 300_000, 4000), 2**32 - 1].astype("<u4")
    assert suffix_array(wide).tolist() == sorted(range(len(wide)), key=lambda i: wide[i:].tolist())


def test_shards_answer_as_one_index(tmp_path):
    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 40, rng.integers(20, 200)) for _ in range(50)]
    docs[30] = docs[3].copy()  # a document repeated in another shard
    build_index(tmp_path / "one", docs, "toy", FP, 500, {}, windows=(8,))
    build_index(tmp_path / "many", docs, "toy", FP, 500, {}, windows=(8,), shard_tokens=500)
    one, many = CorpusIndex(tmp_path / "one"), CorpusIndex(tmp_path / "many")
    assert len(one.shards) == 1 and len(many.shards) > 5 and one.tokens == many.tokens
    assert one.meta["documents"] == many.meta["documents"] == 50
    flat = np.concatenate(docs)
    for width in (1, 3, 8, 30):
        q = np.concatenate([np.stack([flat[s:s + width] for s in rng.integers(0, len(flat) - width, 200)]),
                            rng.integers(0, 40, (200, width))])
        assert (one.contains_many(q) == many.contains_many(q)).all()
        for row in q[:40].tolist():
            assert one.count(row) == many.count(row)
            assert one.documents_of(row, limit=100) == many.documents_of(row, limit=100)
    gens = [np.r_[docs[3][5:60], [1, 2]], np.r_[docs[10][:20], docs[11][:20]], rng.integers(0, 40, 50)]
    a, b = one.longest_matches(gens, 10), many.longest_matches(gens, 10)
    assert a.longest.tolist() == b.longest.tolist() and a.windows == b.windows
    assert a.longest[0] == 55 and one.documents_of(docs[3][:20]) == ["3", "30"]


RESUME_SCRIPT = """
import sys, time
import numpy as np
from mia_core.formats.corpus_index.shard_writer import build_index

out, resume, delay = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])

def docs():
    rng = np.random.default_rng(5)
    for i in range(60):
        if delay:
            time.sleep(delay)
        yield rng.integers(0, 500, 100 + i % 7)

build_index(out, docs(), "toy", "fp", 500, {"corpus": "toy"}, shard_tokens=1000, windows=(5, 50), resume=resume)
"""


def _build(tmp_path, out, resume=False, delay=0.0):
    return subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(out), "1" if resume else "0", str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, timeout=60.0):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def _index_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != "index.json"}


def test_killed_build_resumes_to_the_uninterrupted_index(tmp_path):
    ref = _build(tmp_path, tmp_path / "ref")
    assert ref.wait(120) == 0, ref.communicate()
    reference = _index_files(tmp_path / "ref")
    ref_meta = json.loads((tmp_path / "ref" / "index.json").read_text())
    assert len(ref_meta["shards"]) == 6
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    for kill_after in ("00001", "00003"):  # killed twice, each time between two shards
        proc = _build(tmp_path, out, resume=kill_after != "00001", delay=0.02)
        _wait_for(partial / "shards" / kill_after, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists() and (partial / "shards" / kill_after / "shard.json").exists()
    # without --resume: refused, nothing removed
    with pytest.raises(MiaError, match="interrupted build .* rerun with --resume"):
        build_index(out, [np.arange(5)], "toy", "fp", 500, {"corpus": "toy"}, shard_tokens=1000, windows=(5, 50))
    # other settings: refused
    with pytest.raises(MiaError, match="other settings \\(shard_tokens\\)"):
        build_index(out, [np.arange(5)], "toy", "fp", 500, {"corpus": "toy"}, shard_tokens=999, windows=(5, 50),
                    resume=True)
    assert partial.exists()
    proc = _build(tmp_path, out, resume=True)
    assert proc.wait(120) == 0, proc.communicate()
    assert _index_files(out) == reference
    meta = json.loads((out / "index.json").read_text())
    assert meta["resumed_documents"] > 0 and meta["shards"] == ref_meta["shards"]
    for key in ("tokens", "documents", "windows", "source", "shard_tokens"):
        assert meta[key] == ref_meta[key]


def test_kill_while_a_shard_is_written_leaves_a_resumable_build(tmp_path):
    """Killed at random instants (inside a shard's sort or writes included): a resume always ends equal."""
    ref = _build(tmp_path, tmp_path / "ref")
    assert ref.wait(120) == 0
    reference = _index_files(tmp_path / "ref")
    rng = np.random.default_rng(0)
    out = tmp_path / "idx"
    for _trial in range(3):
        proc = _build(tmp_path, out, resume=True)
        _wait_for(tmp_path / "idx.partial" / "build.json", proc)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            break
    if not out.exists():
        proc = _build(tmp_path, out, resume=True)
        assert proc.wait(120) == 0, proc.communicate()
    assert _index_files(out) == reference


KILLED_IN_MERGE = """
import os, signal
from mia_core.formats.corpus_index import shard_writer

def half_merge_then_die(root, *args, **kwargs):  # every shard is written: the kill lands inside the merge
    (root / "windows.5.hash").write_bytes(b"half a table")
    os.kill(os.getpid(), signal.SIGKILL)

shard_writer.merge_window_tables = half_merge_then_die
"""


def test_kill_while_the_index_level_table_is_merged_resumes_to_the_same_index(tmp_path):
    ref = _build(tmp_path, tmp_path / "ref")
    assert ref.wait(120) == 0, ref.communicate()
    out = tmp_path / "idx"
    script = KILLED_IN_MERGE + RESUME_SCRIPT  # the same build, its merge replaced by a write and a SIGKILL
    proc = subprocess.run([sys.executable, "-c", script, str(out), "0", "0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = tmp_path / "idx.partial"
    assert not out.exists() and (partial / "windows.5.hash").read_bytes() == b"half a table"
    assert len(list((partial / "shards").iterdir())) == 6  # every shard finished before the kill
    proc = _build(tmp_path, out, resume=True)
    assert proc.wait(120) == 0, proc.communicate()
    assert _index_files(out) == _index_files(tmp_path / "ref")  # the tables merged anew, byte for byte
    idx = CorpusIndex(out)
    assert sorted(idx.global_windows) == [5, 50]
    rng = np.random.default_rng(2)
    tokens = np.asarray(idx.shards[3]._arrays()[0][:90], dtype=np.int64)  # inside its first document
    q = np.concatenate([np.stack([tokens[s:s + 5] for s in range(0, 85, 5)]), rng.integers(0, 500, (40, 5))])
    got = idx.contains_many(q)
    assert got[:17].all() and (got == idx.contains_many(q, per_shard=True)).all()


def test_repetitive_text_builds_in_bounded_time_with_progress(tmp_path, runner):
    """One token repeated a million times: tokengrams' sort was quadratic here (minutes); prefix doubling is not."""
    tokens = np.full(1_000_000, 7)
    t0 = time.perf_counter()
    build_index(tmp_path / "idx", [tokens, tokens[:1000]], "toy", FP, 500, {})
    assert time.perf_counter() - t0 < 60
    idx = CorpusIndex(tmp_path / "idx")
    idx.verify()
    assert idx.count([7] * 50) == (1_000_000 - 49) + (1000 - 49)
    assert idx.contains_many(np.full((3, 50), 7)).all() and not idx.contains([7, 8])
    assert idx.longest_matches([np.full(60, 7)], 50).longest.tolist() == [60]


class ToyTokenizer:
    name = "toyids"
    vocab_size = 500
    eos_id = None
    bos_id = None
    fingerprint = FP

    def encode_batch(self, texts):
        return [[int(w) for w in t.split()] for t in texts]

    def decode_batch(self, ids):
        return [" ".join(map(str, x)) for x in ids]


class BigTokenizer(ToyTokenizer):
    name = "big"
    vocab_size = 70_000
    fingerprint = "big-fp"


class ToyPlugin:
    @hookimpl
    def mia_register_tokenizers(self, register):
        register("toyids", lambda name, options: ToyTokenizer())
        register("big", lambda name, options: BigTokenizer())


def write_infini_gram(folder: Path, docs, width=2, shard=0):
    """An infini-gram shard as its indexing.py lays it out: each document preceded by the all-ones separator,
    little-endian tokens, a suffix array of byte offsets (even ones) sorted by the suffixes' bytes, entries of
    ceil(log2(size) / 8) bytes, and u64 document byte offsets."""
    folder.mkdir(exist_ok=True)
    sep = b"\xff" * width
    parts = [sep + np.asarray(d, dtype=f"<u{width}").tobytes() for d in docs]
    ds = b"".join(parts)
    offsets = np.r_[0, np.cumsum([len(p) for p in parts])[:-1]].astype("<u8")
    ptrs = sorted(range(0, len(ds), width), key=lambda p: ds[p:])
    ptr_size = max(1, math.ceil(math.log2(len(ds)) / 8))
    (folder / f"tokenized.{shard}").write_bytes(ds)
    (folder / f"table.{shard}").write_bytes(b"".join(p.to_bytes(ptr_size, "little") for p in ptrs))
    (folder / f"offset.{shard}").write_bytes(offsets.tobytes())


def test_infini_gram_index_is_read_and_checked(tmp_path, runner, register_plugin):
    register_plugin(ToyPlugin(), name="toy-infini")
    rng = np.random.default_rng(4)
    docs = make_docs(8, 200, seed=3) + [rng.integers(0, 3, 300) for _ in range(4)]  # many ties
    # two infini-gram shards holding half the documents each (ids above 255: byte order differs from value order)
    docs[0][:10] = [256, 1, 257, 2, 511 - 12, 300, 255, 256, 0, 1]
    write_infini_gram(tmp_path / "ig", docs[:6])
    write_infini_gram(tmp_path / "ig", docs[6:], shard=1)
    res = runner.invoke(cli, ["score", "x", "--index", str(tmp_path / "ig")])
    res = runner.invoke(cli, ["index", str(tmp_path / "link"), "--infini-gram", str(tmp_path / "ig"),
                              "--model", "toyids"])
    assert res.exit_code == 0, res.output
    assert "linked infini-gram index" in res.output
    linked = CorpusIndex(tmp_path / "link")
    build_index(tmp_path / "mia", docs, "toy", FP, 500, {})
    ours = CorpusIndex(tmp_path / "mia")
    assert linked.tokens == ours.tokens and len(linked.shards) == 2
    linked.verify()
    flat = np.concatenate(docs)
    for width in (1, 2, 5, 50):
        q = np.concatenate([np.stack([flat[s:s + width] for s in rng.integers(0, len(flat) - width, 150)]),
                            rng.integers(0, 3, (100, width)), np.full((1, width), 600)])
        assert (linked.contains_many(q) == ours.contains_many(q)).all()
        for row in q[:30].tolist():
            assert linked.count(row) == ours.count(row)
    assert linked.documents_of(docs[7][:30]) == ["1:1"]  # shard 1, its second document
    gens = [np.r_[docs[0][:70], 499], docs[9][50:120], rng.integers(0, 500, 40), np.r_[docs[2][:30], 700, 1]]
    a, b = linked.longest_matches(gens, 20), ours.longest_matches(gens, 20)
    assert a.longest.tolist() == b.longest.tolist() and a.windows == b.windows and a.longest[0] == 70

    # mia score through the link: same corpus results as through a mia index of the same documents
    folder = make_map(tmp_path / "map", docs[:6], prefix=10, suffix=40)
    run = make_run(folder, [d[10:50] for d in docs[:6]])
    via_link = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "link"), "--window", "20", "--json",
                                   "--no-save"])
    via_mia = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "mia"), "--window", "20", "--json",
                                  "--no-save"])
    assert via_link.exit_code == 0, via_link.output
    c_link, c_mia = json.loads(via_link.stdout)["corpus"], json.loads(via_mia.stdout)["corpus"]
    assert c_link["memorized"] == c_mia["memorized"] and c_link["unique_windows"] == c_mia["unique_windows"]


def test_infini_gram_refusals(tmp_path, runner, register_plugin):
    register_plugin(ToyPlugin(), name="toy-infini2")
    docs = make_docs(3, 50)
    write_infini_gram(tmp_path / "ig", docs)
    # the folder itself (no tokenizer recorded): one line saying how to link it
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    run = make_run(folder, [d[10:30] for d in docs])
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "ig"), "--window", "10"])
    assert res.exit_code == 1 and "is an infini-gram index" in res.output and "--infini-gram" in res.output
    # a tokenizer whose ids do not fit the index's tokens
    res = runner.invoke(cli, ["index", str(tmp_path / "l1"), "--infini-gram", str(tmp_path / "ig"), "--model", "big"])
    assert res.exit_code == 1 and "another tokenizer" in res.output and not (tmp_path / "l1").exists()
    # linked with another tokenizer than the run's: refused by mia score as for any index
    register_plugin(type("P", (), {"mia_register_tokenizers": hookimpl(
        lambda self, register: register("other", lambda n, o: type("T", (ToyTokenizer,), {"fingerprint": "x"})()))})(),
        name="toy-other")
    res = runner.invoke(cli, ["index", str(tmp_path / "l2"), "--infini-gram", str(tmp_path / "ig"), "--model", "other"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "l2"), "--window", "10"])
    assert res.exit_code == 1 and "refusing to compare" in res.output
    # a corrupt shard: one line
    (tmp_path / "ig" / "table.0").write_bytes(b"\x00" * 7)
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "l2"), "--window", "10"])
    assert res.exit_code == 1 and "table.0" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["index", str(tmp_path / "l3"), "--infini-gram", str(tmp_path / "nothing"),
                              "--model", "toyids"])
    assert res.exit_code == 1 and "not an infini-gram index" in res.output


def test_index_cli_options_and_streamed_progress(tmp_path, runner, register_plugin):
    from mia_core.types import Sample

    class Stream:
        name = "stream"

        def __iter__(self):  # no length: a streamed dataset
            rng = np.random.default_rng(0)
            for i in range(30):
                yield Sample(f"s{i}", " ".join(map(str, rng.integers(0, 500, 50))), None)

    class Plugin(ToyPlugin):
        @hookimpl
        def mia_register_datasets(self, register):
            register("stream", lambda name, options: Stream())

    register_plugin(Plugin(), name="toy-stream")
    res = runner.invoke(cli, ["index", str(tmp_path / "i"), "--model", "toyids", "--dataset", "stream",
                              "--shard-tokens", "400", "--window", "8", "--window", "50"])
    assert res.exit_code == 0, res.output
    assert "1530 tokens of 30 documents in 4 shard(s)" in res.stdout and "windows 8,50" in res.stdout
    assert "tok" in res.stderr and "indexing" in res.stderr  # the progress bar counts tokens
    assert "sorting shard 3" in res.stderr  # and each shard's sort shows its own
    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    assert [s["tokens"] for s in meta["shards"]] == [408, 408, 408, 306]
    res = runner.invoke(cli, ["index", str(tmp_path / "j"), "--model", "toyids", "--dataset", "stream",
                              "--max-memory", "lots"])
    assert res.exit_code == 2 and "not a size" in res.output
    res = runner.invoke(cli, ["index", str(tmp_path / "j"), "--model", "toyids", "--dataset", "stream",
                              "--window", "0"])
    assert res.exit_code == 2
    res = runner.invoke(cli, ["index", str(tmp_path / "j"), "--model", "toyids", "--dataset", "stream",
                              "--max-memory", "1G", "--resume", "-q"])
    assert res.exit_code == 0, res.output
    assert not os.path.exists(tmp_path / "j.partial")


def test_format_1_indexes_are_still_read(tmp_path):
    """An index written before shards (one flat folder, no fingerprint tables) answers as before."""
    docs = make_docs(4, 120)
    build_index(tmp_path / "new", docs, "toy", FP, 500, {})
    old = tmp_path / "old"
    old.mkdir()
    for name in ("tokens.bin", "table.bin", "doc_offsets.npy", "doc_ids.json"):
        (old / name).write_bytes((tmp_path / "new" / "shards" / "00000" / name).read_bytes())
    meta = json.loads((tmp_path / "new" / "index.json").read_text())
    meta = {k: v for k, v in meta.items() if k not in ("shards", "windows", "hash_bits", "shard_tokens")}
    (old / "index.json").write_text(json.dumps({**meta, "format": 1}))
    a, b = CorpusIndex(old), CorpusIndex(tmp_path / "new")
    assert a.windows == [] and b.windows == [50]
    q = np.stack([docs[1][5:55], docs[2][60:110], np.arange(50)])
    assert a.contains_many(q).tolist() == b.contains_many(q).tolist() == [True, True, False]
    assert a.documents_of(docs[2][:10]) == b.documents_of(docs[2][:10]) == ["2"]


def test_a_build_killed_while_recording_its_settings_starts_again(tmp_path):
    """``build.json`` goes through the one atomic write: a killed build may leave only its temporary
    file (``.build.json.PID.tmp``, or ``build.json.tmp`` from an older mia); that is mia's own, so the
    next build starts again. A file mia did not write is still refused."""
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    for leftover in (".build.json.999999999.tmp", "build.json.tmp"):
        partial.mkdir()
        (partial / leftover).write_text("{")
        build_index(out, [np.arange(5)], "toy", "fp", 500, {"corpus": "toy"}, shard_tokens=1000, windows=(5,))
        assert (out / "index.json").is_file() and not partial.exists()
        shutil.rmtree(out)
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(MiaError, match="holds files mia did not write"):
        build_index(out, [np.arange(5)], "toy", "fp", 500, {"corpus": "toy"}, shard_tokens=1000, windows=(5,))
