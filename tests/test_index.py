"""mia index and corpus membership through the tokengrams suffix array."""

import json

import numpy as np
import pytest
from scoring_fixtures import FP, make_docs, make_map, make_run

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.formats.corpus_index.layout import storage_for
from mia_core.formats.corpus_index.reader import CorpusIndex, tokengrams_module
from mia_core.formats.corpus_index.shard_writer import build_index
from mia_core.formats.scores import read_scores, scores_path
from mia_core.scoring.summary import score_run
from mia_core.types import Sample


def test_storage_width_by_vocabulary():
    assert storage_for(50_000)[0].itemsize == 2
    assert storage_for(262_144)[0].itemsize == 4


def test_matching_statistics_and_separators(tmp_path):
    docs = make_docs(3, 100)
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {})
    idx = CorpusIndex(tmp_path / "idx")
    assert idx.tokens == 303 and idx.meta["dtype"] == "uint16"
    gen = np.r_[[499, 498], docs[1][20:80], [497]]
    ms = idx.matching_statistics(gen)
    assert ms.max() >= 60 and ms[2] >= 60
    assert idx.matching_statistics([-1, 70_000, *docs[0][:5]]).tolist()[:3] == [0, 0, 5]
    naive = [max(L for L in range(len(gen) - i + 1) if L == 0 or idx.contains(gen[i:i + L]))
             for i in range(len(gen))]
    assert ms.tolist() == naive
    assert not idx.contains(np.r_[docs[0][-5:], docs[1][:5]])  # no match across documents
    windows = np.stack([docs[0][:50], docs[2][10:60], np.arange(50)])
    assert idx.contains_many(np.r_[windows, windows]).tolist() == [True, True, False] * 2


def _scored(tmp_path, window=20):
    docs = make_docs(6, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=40)
    # gens: the true continuation (member of the corpus), a continuation copied from another
    # document, and random tokens
    gens = [docs[0][10:50], np.r_[[1, 2, 3], docs[3][30:55], [4, 5]], np.arange(100, 140),
            docs[0][10:50], docs[4][10:50], np.arange(200, 240)]
    run = make_run(folder, gens)
    return docs, folder, run


def test_index_from_map_and_score(tmp_path, runner):
    docs, folder, run = _scored(tmp_path)
    res = runner.invoke(cli, ["index", str(tmp_path / "idx"), "--prefix-map", str(folder), "--json", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    assert meta["tokens"] == 6 * 81 and meta["tokenizer_fingerprint"] == FP and meta["dtype"] == "uint16"
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "idx"), "--window", "20", "--json"])
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout)["corpus"]
    assert c["memorized"]["count"] == 4 and c["window"] == 20
    assert c["longest_match"]["max"] == 40
    # rows 0 and 3 repeat the same 40 tokens: 21 windows seen twice; row 1: 25-token match, 6 windows;
    # row 4: 21 windows once
    assert c["unique_windows"] == 21 + 6 + 21 and c["frequency_of_frequencies"] == {"1": 27, "2": 21}
    assert c["top_windows"][0]["count"] == 2 and c["top_windows"][0]["corpus_count"] == 1
    assert c["top_windows"][0]["documents"] == ["doc0"]
    assert c["by_label"]["member"]["count"] == 2  # rows 0 and 4 of the even (member) rows 0, 2, 4
    stored = read_scores(scores_path(run))["corpus"]
    longest = stored["data"]["longest_match"].tolist()
    assert longest[:2] == [40, 25] and longest[3:5] == [40, 40] and max(longest[2], longest[5]) < 5
    # rescoring without --index keeps the corpus results
    s = score_run(run)
    assert s["corpus"]["from_earlier_scoring"] and s["corpus"]["memorized"]["count"] == 4


def test_index_refuses_other_tokenizer_and_bad_indexes(tmp_path, runner):
    docs, folder, run = _scored(tmp_path)
    build_index(tmp_path / "other", docs, "other", "another-fingerprint", 500, {})
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "other"), "--window", "20"])
    assert res.exit_code == 1 and "refusing to compare" in res.output
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not found" in res.output
    build_index(tmp_path / "bad", docs, "toy", FP, 500, {})
    with open(tmp_path / "bad" / "shards" / "00000" / "table.bin", "r+b") as f:
        f.truncate(100)
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "bad"), "--window", "20"])
    assert res.exit_code == 1 and "corrupt" in res.output
    (tmp_path / "bad" / "index.json").write_text("{not json")
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "bad"), "--window", "20"])
    assert res.exit_code == 1 and "corrupt" in res.output
    build_index(tmp_path / "good", docs, "toy", FP, 500, {})
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "good"), "--window", "41"])
    assert res.exit_code == 1 and "longer than every generation" in res.output
    res = runner.invoke(cli, ["index", str(tmp_path / "other"), "--prefix-map", str(folder)])
    assert res.exit_code == 1 and "already exists" in res.output
    res = runner.invoke(cli, ["index", str(tmp_path / "x")])
    assert res.exit_code == 2
    nosave = make_map(tmp_path / "nosave", docs, save=False)
    res = runner.invoke(cli, ["index", str(tmp_path / "y"), "--prefix-map", str(nosave)])
    assert res.exit_code == 1 and "no saved dataset" in res.output and not (tmp_path / "y").exists()


class ToyTokenizer:
    name = "toychars"
    vocab_size = 300
    eos_id = None
    bos_id = None
    fingerprint = "toychars-fp"

    def encode_batch(self, texts):
        return [[min(ord(c), 299) for c in t] for t in texts]

    def decode_batch(self, ids):
        return ["".join(map(chr, x)) for x in ids]


class ToyData:
    name = "toytexts"
    length = 3

    def __iter__(self):
        yield from (Sample("a", "the quick brown fox jumps over the lazy dog", "member"),
                    Sample("b-é", "lorem ipsum dolor sit amet", "nonmember"),
                    Sample("c", "", None))


class ToyPlugin:
    @hookimpl
    def mia_register_tokenizers(self, register):
        register("toychars", lambda name, options: ToyTokenizer())

    @hookimpl
    def mia_register_datasets(self, register):
        register("toytexts", lambda name, options: ToyData())


@pytest.fixture
def toy_plugin(register_plugin):
    return register_plugin(ToyPlugin(), name="toy-scoring")


def test_index_from_dataset_with_tokenizer(tmp_path, runner, toy_plugin):
    res = runner.invoke(cli, ["index", str(tmp_path / "idx"), "--model", "toychars", "--dataset", "toytexts",
                              "--dataset-option", "x=1", "-q"])
    assert res.exit_code == 0, res.output
    assert "indexed 72 tokens of 3 documents" in res.output
    idx = CorpusIndex(tmp_path / "idx")
    assert idx.meta["tokenizer"] == "toychars" and idx.meta["source"]["dataset_options"] == {"x": "1"}
    assert idx.contains(ToyTokenizer().encode_batch(["brown fox"])[0])
    assert idx.count(ToyTokenizer().encode_batch(["the "])[0]) == 2
    assert idx.documents_of(ToyTokenizer().encode_batch(["ipsum"])[0]) == ["b-é"]
    idx.verify()


@pytest.mark.real_model
def test_real_tokenizer_corpus_index_is_u32(tmp_path, gemma_tokenizer):
    from mia_core.scoring.build import index_dataset

    meta = index_dataset(tmp_path / "idx", "gemma-3-270m", "corpus", {}, quiet=True, tokenizer=gemma_tokenizer)
    assert meta["dtype"] == "uint32" and meta["tokenizer_fingerprint"] == gemma_tokenizer.fingerprint
    idx = CorpusIndex(tmp_path / "idx")
    zen = gemma_tokenizer.encode_batch(["Beautiful is better than ugly.\nExplicit is better than implicit."])[0]
    assert idx.contains(zen) and not idx.contains(zen[::-1])


@pytest.mark.parametrize("vocab", [500, 70_000])  # u16 and u32 storage
def test_batched_search_agrees_with_tokengrams(tmp_path, vocab):
    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 6, rng.integers(1, 300)) for _ in range(30)]  # tiny alphabet: many ties
    docs += [rng.integers(0, vocab, 200) for _ in range(3)]
    build_index(tmp_path / "idx", docs, "toy", FP, vocab, {})
    idx = CorpusIndex(tmp_path / "idx")
    shard = tmp_path / "idx" / "shards" / "00000"
    tg = tokengrams_module().MemmapIndex(str(shard / "tokens.bin"), str(shard / "table.bin"),
                                         vocab=idx.meta["tokengrams_vocab"])
    assert tg.is_sorted()  # tokengrams reads the table mia sorted
    flat = np.concatenate(docs)
    for w in (1, 3, 12, 50):
        present = np.stack([flat[s:s + w] for s in rng.integers(0, len(flat) - w, 300)])
        near = present.copy()
        near[:, -1] = (near[:, -1] + 1) % 6
        edge = np.stack([docs[0][:w] if len(docs[0]) >= w else np.resize(docs[0], w),
                         docs[-1][-w:], np.r_[docs[1][-1:], docs[2][:w - 1]]])
        bad = np.full((2, w), vocab + 5)
        bad[1, 0] = -1
        q = np.concatenate([present, near, edge, rng.integers(0, 6, (300, w)), bad])
        expected = np.array([tg.contains(row) if min(row) >= 0 and max(row) < vocab else False
                             for row in q.tolist()])
        assert (idx.contains_many(q) == expected).all()
        assert (idx.contains_many([list(r) for r in q[:50]]) == expected[:50]).all()  # ragged path


def test_index_use_does_not_import_transformers(tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from mia_core.formats.corpus_index.reader import CorpusIndex\n"
            "from mia_core.formats.corpus_index.shard_writer import build_index\n"
            f"build_index({str(tmp_path / 'i')!r}, [np.arange(20)], 't', 'f', 100, {{}})\n"
            f"assert CorpusIndex({str(tmp_path / 'i')!r}).contains([3, 4])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class IdTokenizer(ToyTokenizer):
    name = "toy"
    fingerprint = FP

    def decode_batch(self, ids):
        return [" ".join(f"t{i}" for i in x) for x in ids]


class IdPlugin:
    @hookimpl
    def mia_register_tokenizers(self, register):
        register("toy", lambda name, options: IdTokenizer())


def test_decode_shows_memorized_windows_as_text(tmp_path, runner, register_plugin):
    register_plugin(IdPlugin(), name="toy-decode")
    docs, folder, run = _scored(tmp_path)
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {})
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "idx"), "--window", "20", "--decode"])
    assert res.exit_code == 0, res.output
    assert "most frequent memorized windows:" in res.output
    res = runner.invoke(cli, ["score", str(run), "--index", str(tmp_path / "idx"), "--window", "20", "--decode",
                              "--json"])
    top = json.loads(res.stdout)["corpus"]["top_windows"][0]
    assert top["text"] == " ".join(f"t{i}" for i in top["tokens"]) and top["documents"] == ["0"]
    assert " ".join(map(str, top["tokens"])) in " ".join(map(str, docs[0]))


def test_add_many_in_chunks_equals_one_document_at_a_time(tmp_path):
    from mia_core.formats.corpus_index.shard_writer import IndexBuilder

    docs = make_docs(7, 30) + [np.zeros(0, dtype=np.int64)]
    flat = np.concatenate(docs)
    offsets = np.r_[0, np.cumsum([len(d) for d in docs])]
    a = IndexBuilder(tmp_path / "a", "toy", FP, 500, {})
    for lo, hi in ((0, 3), (3, 8)):  # chunks that do not start at offset 0
        a.add_many(flat[offsets[lo]:offsets[hi]], offsets[lo:hi + 1], [f"d{i}" for i in range(lo, hi)])
    a.finish()
    b = IndexBuilder(tmp_path / "b", "toy", FP, 500, {})
    for i, d in enumerate(docs):
        b.add(d, f"d{i}")
    b.finish()
    for name in ("tokens.bin", "doc_offsets.npy", "doc_ids.json", "table.bin", "windows.50.hash"):
        assert (tmp_path / "a" / "shards" / "00000" / name).read_bytes() == \
            (tmp_path / "b" / "shards" / "00000" / name).read_bytes()


def test_corpus_membership_in_blocks_equals_one_block(tmp_path, monkeypatch):
    """`mia score --index` looks the generations up one block of rows at a time (memory flat in the rows): blocks of
    2 rows give the summary and the scores file's corpus group of one block, span rows and offsets included; a
    rescoring without --index reads the stored per-row columns a slice at a time into the same figures."""
    from mia_core.formats import runs
    from mia_core.matching import tokens

    docs, folder, run = _scored(tmp_path)
    build_index(tmp_path / "idx", docs, "toy", FP, 500, {})
    whole = score_run(run, index=tmp_path / "idx", window=20)
    stored_whole = read_scores(scores_path(run))["corpus"]
    monkeypatch.setattr(tokens, "SCORE_ROWS", 2)
    monkeypatch.setattr(runs, "CHECK_ROWS", 2)
    blocks = score_run(run, index=tmp_path / "idx", window=20)
    stored_blocks = read_scores(scores_path(run))["corpus"]
    assert blocks["corpus"] == whole["corpus"]
    assert stored_blocks["attrs"] == stored_whole["attrs"]
    assert set(stored_blocks["data"]) == set(stored_whole["data"])
    for name, values in stored_whole["data"].items():
        assert np.array_equal(stored_blocks["data"][name], values), name
    assert stored_whole["data"]["span_row"].tolist() == [0, 1, 3, 4]  # one span per memorized row, in row order
    again = score_run(run)  # no --index: the stored corpus group, read back in slices
    assert again["corpus"].pop("from_earlier_scoring") and again["corpus"] == whole["corpus"]
