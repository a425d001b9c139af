"""mia export (per-row records with texts and scores), mia show, provenance and --config on a tiny model."""

import csv
import json

import numpy as np
import pytest
from tiny_models import make_tiny_llama, training_text

from mia_core import registry
from mia_core.cli import cli
from mia_core.formats.prefixmap import PrefixMapWriter


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = make_tiny_llama(root / "llama")
    tok = registry.tokenizers.create(str(model))
    ids = tok.encode_batch([training_text()])[0]
    n, p, s = 6, 8, 6
    w = PrefixMapWriter(root / "Prefixes" / "m", p, s,
                        {"tokenizer": str(model), "tokenizer_fingerprint": tok.fingerprint}, save_dataset=False)
    starts = [9 * i for i in range(n)]
    w.add_rows(np.array([ids[a:a + p] for a in starts]), [ids[a + p:a + p + s] for a in starts], list(range(n)),
               [f"doc{i}" for i in range(n)], ["member" if i % 2 == 0 else "nonmember" for i in range(n)], starts)
    folder = w.finish({})
    return root, model, tok, folder, ids, starts


def _run(runner, args):
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return res


def test_export_records_texts_scores_and_formats(tiny_map, runner, tmp_path):
    root, model, tok, folder, ids, starts = tiny_map
    gen = tmp_path / "gen.h5"
    _run(runner, ["prompt", "--prefix_map", str(folder), "--model", str(model), "--max_length", "6", "--out", str(gen),
                  "-q"])
    _run(runner, ["score", str(gen)])
    res = _run(runner, ["export", str(gen)])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 6
    r = rows[1]
    assert r["sample_id"] == "doc1" and r["label"] == "nonmember" and r["prefix_start"] == starts[1]
    assert r["prefix_text"] == tok.decode_batch([ids[starts[1]:starts[1] + 8]])[0]
    assert r["true_suffix_text"] == tok.decode_batch([ids[starts[1] + 8:starts[1] + 14]])[0]
    assert isinstance(r["generation_text"], str)
    assert {"score_exact", "score_matched_length", "score_edit_distance"} <= set(r)  # every per-row score
    assert "generated_tokens" not in r  # token ids only on request
    with_tokens = json.loads(_run(runner, ["export", str(gen), "--tokens"]).stdout.splitlines()[1])
    assert with_tokens["prefix_tokens"] == [int(t) for t in ids[starts[1]:starts[1] + 8]]
    assert len(with_tokens["generated_tokens"]) <= 6
    _run(runner, ["export", str(gen), "--format", "csv", "--out", str(tmp_path / "g.csv")])
    table = list(csv.DictReader(open(tmp_path / "g.csv", encoding="utf-8")))
    assert table[1]["prefix_text"] == r["prefix_text"] and table[1]["score_matched_length"] == str(
        r["score_matched_length"])
    pq = pytest.importorskip("pyarrow.parquet")
    _run(runner, ["export", str(gen), "--format", "parquet", "--tokens", "--out", str(tmp_path / "g.parquet")])
    back = pq.read_table(tmp_path / "g.parquet").to_pylist()
    assert back[1]["true_suffix_text"] == r["true_suffix_text"] and back[1]["prefix_tokens"] == with_tokens[
        "prefix_tokens"]
    bad = runner.invoke(cli, ["export", str(gen), "--format", "parquet"])
    assert bad.exit_code == 2 and "--out" in bad.stderr
    scores = runner.invoke(cli, ["export", str(tmp_path / "gen.scores.h5")])
    assert scores.exit_code == 1 and "is a scores file; export its run" in scores.stderr


def test_teacher_forced_export_has_no_generation(tiny_map, runner, tmp_path):
    root, model, tok, folder, ids, starts = tiny_map
    tf = tmp_path / "tf.h5"
    _run(runner, ["check", "--prefix_map", str(folder), "--model", str(model), "--out", str(tf), "-q"])
    rows = [json.loads(line) for line in _run(runner, ["export", str(tf), "--tokens"]).stdout.splitlines()]
    assert all("generation_text" not in r and "generated_tokens" not in r for r in rows)
    assert all(len(r["teacher_forced_argmax_tokens"]) == 6 and "matched_length" in r for r in rows)


def test_show_provenance_and_config_round_trip(tiny_map, runner, tmp_path):
    root, model, tok, folder, ids, starts = tiny_map
    config = tmp_path / "exp.toml"
    config.write_text(f'model = "{model}"\n[prompt]\nmax_length = 3\nnum_strings = 4\n')
    run = tmp_path / "c.h5"
    _run(runner, ["prompt", "--config", str(config), "--prefix_map", str(folder), "--num_strings", "5",
                  "--out", str(run), "-q"])
    info = json.loads(_run(runner, ["show", str(run), "--json"]).stdout)
    assert info["kind"] == "run" and info["counts"]["rows"] == 5  # the command line wins over the file
    assert info["attributes"]["max_length"] == 3  # the file's value where the command line is silent
    prov = info["provenance"]
    assert prov["command"] == "prompt" and prov["options"]["num_strings"] == 5 and prov["config_file"] == str(config)
    assert prov["device"] == "cpu" and prov["dtype"] == "float32" and "torch" in prov["libraries"]
    table = _run(runner, ["show", str(run)]).stdout
    assert "provenance" in table and "first 5 rows" in table and "command_line" in table
    reproduce = _run(runner, ["show", str(run), "--reproduce"]).stdout
    again_cfg = tmp_path / "again.toml"
    again_cfg.write_text(reproduce.replace(str(run), str(tmp_path / "again.h5")))
    _run(runner, ["prompt", "--config", str(again_cfg), "-q"])
    again = json.loads(_run(runner, ["show", str(tmp_path / "again.h5"), "--json"]).stdout)
    assert again["counts"]["rows"] == 5 and again["attributes"]["max_length"] == 3
    shown_map = json.loads(_run(runner, ["show", str(folder), "--json"]).stdout)
    assert shown_map["kind"] == "map" and shown_map["counts"]["labels"] == {"member": 3, "nonmember": 3}


@pytest.mark.parametrize("content, message", [
    ("[prompt]\nnum_strang = 3\n", "'num_strang' is not an option of mia prompt"),
    ("bogus_option = 1\n", "'bogus_option' is not an option of any mia command"),
    ("[prompt\n", "is not valid TOML"),
])
def test_bad_config_is_one_line(tmp_path, runner, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    res = runner.invoke(cli, ["prompt", "--config", str(config), "--prefix_map", "x"])
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_show_refuses_other_files(tmp_path, runner):
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    res = runner.invoke(cli, ["show", str(tmp_path / "x.h5")])
    assert res.exit_code == 1 and "x.h5 is a text file, not a mia map, run, scores or attack file" in res.stderr
    assert runner.invoke(cli, ["show", str(tmp_path / "nope")]).exit_code == 1


def test_model_loading_shows_a_bar_unless_quiet(tiny_map, runner, tmp_path):
    root, model, tok, folder, ids, starts = tiny_map
    loud = _run(runner, ["check", "--prefix_map", str(folder), "--model", str(model), "--out", str(tmp_path / "a.h5")])
    assert f"loading {model}" in loud.stderr and "2/2" in loud.stderr  # both stages done
    quiet = _run(runner, ["check", "--prefix_map", str(folder), "--model", str(model), "--out", str(tmp_path / "b.h5"),
                          "-q"])
    assert "loading" not in quiet.stderr


def test_exports_hold_no_figure_the_summary_withholds(tiny_map, runner, tmp_path):
    """A teacher-forced run's records have no approximate/edit-distance/BLEU field (the summary prints n/a)
    and call the per-row figure next-token accuracy; the metadata says why, in each format."""
    root, model, tok, folder, ids, starts = tiny_map
    tf = tmp_path / "tf.h5"
    _run(runner, ["check", "--prefix_map", str(folder), "--model", str(model), "--out", str(tf), "-q"])
    summary = json.loads(_run(runner, ["score", str(tf), "--json"]).stdout)
    assert summary["approximate"]["rate"] is None
    res = _run(runner, ["export", str(tf), "--tokens"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    for r in rows:
        assert not {"score_approximate", "score_edit_distance", "score_bleu", "score_position_agreement"} & set(r)
        argmax, truth = r["teacher_forced_argmax_tokens"], r["true_suffix_tokens"]
        assert r["score_next_token_accuracy"] == pytest.approx(np.mean(np.array(argmax) == np.array(truth)))
    assert res.stderr.count("is absent: teacher-forced run") == 3
    _run(runner, ["export", str(tf), "--format", "csv", "--out", str(tmp_path / "tf.csv")])
    meta = json.loads((tmp_path / "tf.csv.meta.json").read_text())
    assert meta["method"] == "teacher-forced" and set(meta["absent_fields"]) == {
        "score_approximate", "score_edit_distance", "score_bleu"}
    assert "score_approximate" not in next(csv.DictReader(open(tmp_path / "tf.csv", encoding="utf-8")))
    again = runner.invoke(cli, ["export", str(tf), "--format", "csv", "--out", str(tmp_path / "tf2.csv")])
    assert again.exit_code == 0
    (tmp_path / "tf2.csv").unlink()  # the data file gone, its metadata left: still never overwritten silently
    refused = runner.invoke(cli, ["export", str(tf), "--format", "csv", "--out", str(tmp_path / "tf2.csv")])
    assert refused.exit_code == 1 and "tf2.csv.meta.json already exists" in refused.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    _run(runner, ["export", str(tf), "--format", "parquet", "--out", str(tmp_path / "tf.parquet")])
    stored = json.loads(pq.read_schema(tmp_path / "tf.parquet").metadata[b"mia"])
    assert stored["absent_fields"] == meta["absent_fields"]


def test_generated_export_names_position_agreement_and_reads_old_scores_files(tiny_map, runner, tmp_path):
    from mia_core.formats.integrity import edit_hdf5

    root, model, tok, folder, ids, starts = tiny_map
    gen = tmp_path / "gen.h5"
    _run(runner, ["prompt", "--prefix_map", str(folder), "--model", str(model), "--max_length", "6", "--out", str(gen),
                  "-q"])
    _run(runner, ["score", str(gen)])
    rows = [json.loads(line) for line in _run(runner, ["export", str(gen), "--tokens"]).stdout.splitlines()]
    for r in rows:
        gen_tokens, truth = r["generated_tokens"], r["true_suffix_tokens"]
        agree = sum(a == b for a, b in zip(gen_tokens, truth, strict=False)) / len(truth)
        assert r["score_position_agreement"] == pytest.approx(agree) and "score_next_token_accuracy" not in r
        assert "score_approximate" in r
    # a scores file of an older mia, with the column called memorization_score, exports under today's name
    # (renamed in place and sealed again: the checksum of docs/report.md's "Damaged files" is not the point here)
    with edit_hdf5(tmp_path / "gen.scores.h5") as f:
        f["match"].move("position_agreement", "memorization_score")
    old = [json.loads(line) for line in _run(runner, ["export", str(gen)]).stdout.splitlines()]
    assert [r["score_position_agreement"] for r in old] == [r["score_position_agreement"] for r in rows]
    assert "score_memorization_score" not in old[0]


def test_export_in_slices_equals_one_slice(tiny_map, runner, tmp_path, monkeypatch):
    """An export reads, decodes and writes EXPORT_ROWS rows at a time (memory flat in the run's size): slices that
    cut the run anywhere give the same records, and a Parquet file of several row groups the same table."""
    from mia_core.inspection import export

    pq = pytest.importorskip("pyarrow.parquet")
    root, model, tok, folder, ids, starts = tiny_map
    gen = tmp_path / "gen.h5"
    _run(runner, ["prompt", "--prefix_map", str(folder), "--model", str(model), "--max_length", "6", "--out", str(gen),
                  "-q"])
    _run(runner, ["score", str(gen)])
    whole = list(export.records(gen, tokens=True))
    _run(runner, ["export", str(gen), "--format", "parquet", "--tokens", "--out", str(tmp_path / "whole.parquet")])
    monkeypatch.setattr(export, "EXPORT_ROWS", 4)  # 6 rows: a slice of 4 and one of 2
    assert json.dumps(list(export.records(gen, tokens=True))) == json.dumps(whole)
    _run(runner, ["export", str(gen), "--format", "parquet", "--tokens", "--out", str(tmp_path / "sliced.parquet")])
    sliced = pq.ParquetFile(tmp_path / "sliced.parquet")
    assert sliced.metadata.num_row_groups == 2
    assert sliced.read().to_pylist() == pq.read_table(tmp_path / "whole.parquet").to_pylist() == json.loads(
        json.dumps(whole))
    assert json.loads(sliced.schema_arrow.metadata[b"mia"]) == export.metadata(gen)
