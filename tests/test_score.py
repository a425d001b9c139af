"""mia score: suffix-match scores, summaries, teacher-forced runs, bad input."""

import json
import re

import h5py
import numpy as np
import pytest
from scoring_fixtures import make_docs, make_map, make_run

from mia_core.cli import cli
from mia_core.formats.integrity import edit_hdf5
from mia_core.formats.runs import open_run
from mia_core.formats.scores import read_scores, scores_path
from mia_core.formatting import wilson_interval
from mia_core.matching.tokens import levenshtein_batch, score_matches
from mia_core.scoring.summary import format_summary, score_run


def _lev(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_levenshtein_batch_matches_reference():
    rng = np.random.default_rng(1)
    a = [rng.integers(0, 4, rng.integers(0, 9)) for _ in range(40)]
    b = [rng.integers(0, 4, rng.integers(1, 9)) for _ in range(40)]
    pa = np.full((40, 8), -2)
    pb = np.full((40, 8), -3)
    for i in range(40):
        pa[i, :len(a[i])], pb[i, :len(b[i])] = a[i], b[i]
    got = levenshtein_batch(pa, np.array([len(x) for x in a]), pb, np.array([len(x) for x in b]))
    assert got.tolist() == [_lev(list(x), list(y)) for x, y in zip(a, b, strict=True)]


def test_score_matches_definitions():
    suffix = np.arange(10, 20)
    gens = [suffix.copy(),                      # exact
            np.r_[suffix[:7], 99, suffix[8:]],  # one substitution at 7: approx, not exact
            suffix[:4],                         # stopped early
            np.r_[5, suffix[:9]],               # shifted by one: edit distance 2 -> 0.2
            np.r_[suffix, 1, 2]]                # longer than k: still exact on the first k
    s = score_matches(gens, [suffix] * 5, k=10)
    assert s.exact.tolist() == [True, False, False, False, True]
    assert s.matched_length.tolist() == [10, 7, 4, 0, 10]
    assert np.allclose(s.agreement, [1, 0.9, 0.4, 0.0, 1])
    assert np.allclose(s.edit_distance, [0, 0.1, 0.6, 0.2, 0])
    assert s.approximate.tolist() == [True, True, False, False, True]
    k5 = score_matches(gens, [suffix] * 5, k=5)
    assert k5.exact.tolist() == [True, True, False, False, True]
    short = score_matches([suffix[:3]], [suffix[:3]], k=5)
    assert not short.eligible[0] and short.exact[0]


def _words(rows):  # a detokenizer: token id n -> word "wn"
    return [" ".join(f"w{t}" for t in row) for row in rows]


def test_bleu_is_ippolito_on_detokenized_text():
    """--bleu: sacrebleu sentence BLEU of the decoded texts (Ippolito et al. 2022), checked against
    sacrebleu called directly and against NLTK (equal where every n-gram order has a match)."""
    import sacrebleu
    from nltk.translate.bleu_score import sentence_bleu

    suffix = np.arange(100, 150)
    gens = [suffix.copy(), np.r_[suffix[:25], np.arange(500, 525)], np.r_[suffix[:40], np.arange(600, 610)]]
    s = score_matches(gens, [suffix] * 3, k=50, bleu_threshold=0.75, detokenize=_words)
    ref = _words([suffix])[0]
    for got, g in zip(s.bleu, gens, strict=True):
        hyp = _words([g])[0]
        assert got == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score / 100, abs=1e-6)
        assert got == pytest.approx(sentence_bleu([ref.split()], hyp.split()), abs=1e-5)
    assert s.bleu[0] == pytest.approx(1.0) and s.bleu[1] < 0.75 < s.bleu[2]
    assert s.approximate.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="detokenize"):
        score_matches(gens, [suffix] * 3, k=50, bleu_threshold=0.75)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.17


@pytest.fixture
def scored_run(tmp_path):
    docs = make_docs(6, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    true = [d[10:30] for d in docs]
    gens = [true[0], true[1][:12], np.r_[true[2][:5], 7, true[2][6:]], true[3], np.arange(20), true[5][:20]]
    return folder, make_run(folder, gens), docs


def test_score_run_summary_and_store(scored_run):
    folder, run, _ = scored_run
    s = score_run(run)
    assert s["k"] == 20 and s["rows"] == 6 and s["eligible"] == 6
    assert s["extraction"]["count"] == 3 and s["extraction"]["rate"] == pytest.approx(0.5)
    assert s["extraction"]["wilson95"][0] < 0.5 < s["extraction"]["wilson95"][1]
    assert s["approximate"]["count"] == 4  # the one-substitution row is 0.05 away
    assert s["matched_length"]["histogram"]["20"] == 3 and s["matched_length"]["histogram"]["12"] == 1
    assert s["by_label"]["member"]["extraction"]["count"] == 1  # rows 0, 2, 4 are members
    assert s["by_label"]["nonmember"]["extraction"]["count"] == 2
    assert list(s["by_prefix_loc"]) == ["start"] and "0 (document start)" in s["by_prefix_start"]
    assert s["extracted_samples"]["unique"] == 3
    stored = read_scores(scores_path(run))
    assert stored["match"]["exact"].tolist() == [True, False, False, True, False, True]
    assert stored["attrs"]["k"] == 20
    with h5py.File(run, "r") as f:  # the run itself is untouched
        assert "scores" not in f and f["tokens"].shape[0] == 6
    text = format_summary(s)
    assert "exact extraction" in text and "3/6 = 50.0%" in text and "nonmember" in text
    assert text.endswith(f"scores saved to {scores_path(run)}")


def test_cli_score_table_and_json(scored_run, runner, register_plugin):
    from test_prompt_fakes import FakePlugin

    folder, run, _ = scored_run
    res = runner.invoke(cli, ["score", str(run), "--k", "10"])
    assert res.exit_code == 0, res.output
    assert "k = 10" in res.output and "by label" in res.output
    assert "mia's criterion, not Ippolito et al.'s" in res.output
    res = runner.invoke(cli, ["score", str(run), "--json", "--bleu"])
    assert res.exit_code == 1 and "tokenizer 'toy' cannot be loaded" in res.output  # one line, no traceback
    register_plugin(FakePlugin(), name="fake-score-bleu")
    gens = [g for g in open_run(run).tokens()]
    bleu_run = make_run(folder, [g % 50 for g in gens], name="bleu.h5", tokenizer="fake-tok-a")
    res = runner.invoke(cli, ["score", str(bleu_run), "--json", "--bleu"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["approximate"]["criterion"].startswith("BLEU >= 0.75 on detokenized text")
    res = runner.invoke(cli, ["score", str(run), "--json"])
    data = json.loads(res.stdout)
    assert data["extraction"]["count"] == 3
    res = runner.invoke(cli, ["score", str(run), str(run), "--json", "--no-save"])
    both = json.loads(res.stdout)
    assert len(both) == 2 and both[1]["scores_file"] is None


def test_teacher_forced_run_is_scored(tmp_path, runner):
    docs = make_docs(4, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    argmax = [d[10:30].copy() for d in docs]
    argmax[1][5] = 499 if argmax[1][5] != 499 else 498  # greedy stops matching at position 5
    argmax[2][12] = 499 if argmax[2][12] != 499 else 498  # a later miss: greedy stops at 12, per-position 19/20
    run = make_run(folder, argmax, method="teacher-forced")
    s = score_run(run)
    assert s["method"] == "teacher-forced" and s["extraction"]["count"] == 2
    assert s["matched_length"]["histogram"]["5"] == 1 and any("teacher-forced" in n for n in s["notes"])
    # the per-position figure is the next-token accuracy (teacher-forced), never a generation's position agreement
    assert s["next_token_accuracy"] == pytest.approx((20 + 19 + 19 + 20) / 80)
    assert "position_agreement" not in s and "memorized_pythia" not in s
    assert s["approximate"]["rate"] is None and "teacher-forced" in s["approximate"]["withheld"]
    text = format_summary(s)
    assert re.search(r"next-token accuracy \(teacher-forced\), mean\s+0\.975", text)
    assert "position agreement (generated)" not in text and "Pythia" not in text
    # the scores file holds the per-row figure under the same name, never under the other kind's
    from mia_core.formats.scores import read_scores

    stored = read_scores(s["scores_file"])["match"]
    assert "next_token_accuracy" in stored and "position_agreement" not in stored
    assert stored["next_token_accuracy"].tolist() == pytest.approx([1.0, 19 / 20, 19 / 20, 1.0])


def test_wraparound_rows_use_prefix_row(tmp_path):
    docs = make_docs(2, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    run = make_run(folder, [docs[0][10:30], docs[1][10:30], docs[0][10:30], np.arange(20)],
                   prefix_rows=[0, 1, 0, 1])
    s = score_run(run)
    assert s["extraction"]["count"] == 3
    assert s["extracted_samples"]["frequency_of_frequencies"] == {"1": 1, "2": 1}


def test_bad_inputs(tmp_path, runner):
    docs = make_docs(2, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    empty = make_run(folder, [], name="empty.h5")
    res = runner.invoke(cli, ["score", str(empty)])
    assert res.exit_code == 1 and "empty" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["score", str(tmp_path / "nope.h5")])
    assert res.exit_code == 1 and "not found" in res.output
    run = make_run(folder, [docs[0][10:30], docs[1][10:30]], max_length=40)
    res = runner.invoke(cli, ["score", str(run), "--k", "30"])
    assert res.exit_code == 1 and "longer than every true suffix" in res.output
    nosuf = make_map(tmp_path / "map0", docs, prefix=10, suffix=0)
    run0 = make_run(nosuf, [docs[0][10:30]])
    res = runner.invoke(cli, ["score", str(run0)])
    assert res.exit_code == 1 and "no true suffixes" in res.output
    res = runner.invoke(cli, ["score", str(run), "--edit-threshold", "2"])
    assert res.exit_code == 2


def test_retokenized_run_uses_its_own_suffixes(tmp_path):
    from mia_core.formats.runs import RunWriter

    docs = make_docs(2, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    own = np.full((2, 20), -1, dtype=np.int32)
    own[0, :15] = np.arange(300, 315)  # the run's tokenizer gives a 15-token suffix for row 0
    own[1, :20] = docs[1][10:30]
    w = RunWriter.create(folder / "runs" / "retok.h5", {"model": "other", "method": "generate",
                                                        "prefix_map": str(folder), "retokenized": True},
                         20, static={"suffixes": own, "suffix_lengths": np.array([15, 20], dtype=np.int32)})
    w.append({"tokens": [list(range(300, 315)), list(docs[1][10:30])], "prefix_row": [0, 1]})
    w.finish()
    w.close()
    s = score_run(folder / "runs" / "retok.h5", k=15)
    assert s["extraction"]["count"] == 2 and s["eligible"] == 2


def test_default_k_is_the_runs_max_length(tmp_path, runner):
    """A seed-default run (--max_length 20) of a map with 50-token suffixes is scored with k = 20:
    a row reproducing its 20 tokens counts as extracted, not as an impossible 50-token match."""
    docs = make_docs(4, 100)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=50)
    gens = [docs[0][10:30], docs[1][10:25], np.arange(20), docs[3][10:30]]
    run = make_run(folder, gens, max_length=20)
    s = score_run(run)
    assert s["k"] == 20 and s["max_length"] == 20 and s["extraction"]["count"] == 2 and s["eligible"] == 4
    res = runner.invoke(cli, ["score", str(run), "--k", "30"])
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "--k 30" in res.output and "20 tokens per row" in res.output and "Traceback" not in res.output
    assert score_run(run, k=10)["extraction"]["count"] == 3  # an explicit smaller k is fine


def test_one_denominator_for_every_figure(tmp_path):
    """Mean matched length, position agreement and rates are over the same eligible rows; a short suffix
    is in none of them (brute force over the rows by hand)."""
    docs = make_docs(3, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)

    with edit_hdf5(folder / "prefix_map.h5") as f:  # row 2's suffix is cut to 5 tokens (document end)
        f["suffix_lengths"][2] = 5
    gens = [docs[0][10:30], np.r_[docs[1][10:14], 7, docs[1][15:30]], docs[2][10:15]]
    s = score_run(make_run(folder, gens))
    assert s["eligible"] == 2 and s["skipped_short_suffix"] == 1
    assert s["matched_length"]["mean"] == pytest.approx((20 + 4) / 2)
    assert s["position_agreement"] == pytest.approx((1.0 + 19 / 20) / 2)
    assert sum(s["matched_length"]["histogram"].values()) == 2
    assert s["by_label"]["member"]["mean_matched_length"] == pytest.approx(20)  # row 2 (member) left out
    # the eligible rows per label are printed next to the rates, and each group table names its figure
    text = format_summary(s)
    assert "eligible rows by label: member 1 of 2, nonmember 1 of 1" in text
    assert "(rates and means over each group's eligible rows)" in text and "position agreement (generated)" in text


def test_api_run_with_a_failed_reply_reports_failed_1(register_plugin, in_tmp, runner):
    """An API run where one request fails (the fake text backend answers prompts starting with t13 with an
    error): the row is recorded with its error, reported as failed 1 and left out of every rate."""
    from test_prompt_fakes import FakePlugin, make_fake_map

    register_plugin(FakePlugin(), name="fake-score-api")
    folder = make_fake_map(in_tmp / "Prefixes" / "errmap", n=6)
    with edit_hdf5(folder / "prefix_map.h5") as f:
        row = f["prefixes"][2]
        f["prefixes"][2] = [13, *row[1:]]
    res = runner.invoke(cli, ["prompt", "--prefix_map", "errmap", "--model", "fake-api", "--max_length", "6",
                              "--yes"])
    assert res.exit_code == 0, res.output
    assert "failed 1" in res.stderr
    run_path = res.stdout.strip()
    run = open_run(run_path)
    errors = run.read("error")
    assert [bool(e) for e in errors] == [False, False, True, False, False, False]
    s = score_run(run_path)
    assert s["failed"] == 1 and s["rows"] == 6
    # brute force: eligible = suffix of k tokens and no error; rates over those rows only
    suffixes, tokens = run.suffixes(), run.tokens()
    k = s["k"]
    eligible = [len(sf) >= k and not e for sf, e in zip(suffixes, errors, strict=True)]
    exact = [el and list(t[:k]) == list(sf[:k]) for el, t, sf in zip(eligible, tokens, suffixes, strict=True)]
    assert s["eligible"] == sum(eligible) and s["extraction"]["count"] == sum(exact)
    assert s["extraction"]["n"] == sum(eligible)
    assert "failed 1" in format_summary(s)
    assert read_scores(scores_path(run_path))["match"]["failed"].tolist() == [bool(e) for e in errors]


def test_seed_default_prompt_run_is_scored_with_k_20(register_plugin, in_tmp, runner):
    """End to end: a map with 50-token suffixes prompted with the seed's default --max_length (20): the
    closing line of mia prompt and mia score both use k = 20, and the extraction count equals a brute-force
    comparison of the first 20 tokens."""
    from test_prompt_fakes import FakePlugin, make_fake_map

    register_plugin(FakePlugin(), name="fake-score-seed")
    make_fake_map(in_tmp / "Prefixes" / "seedmap", n=8, s=50)
    res = runner.invoke(cli, ["prompt", "--prefix_map", "seedmap", "--model", "fake-lm"])
    assert res.exit_code == 0, res.output
    run_path = res.stdout.strip()
    run = open_run(run_path)
    assert run.attrs["max_length"] == 20
    suffixes, tokens = run.suffixes(), run.tokens()
    eligible = [len(sf) >= 20 for sf in suffixes]
    exact = [el and list(t[:20]) == list(sf[:20]) for el, t, sf in zip(eligible, tokens, suffixes, strict=True)]
    assert sum(exact) > 0  # the even rows' suffixes are the greedy continuation
    assert f"{sum(exact)} of {sum(eligible)} eligible suffixes reproduced exactly (first k = 20 tokens)" in res.stderr
    s = score_run(run_path)
    assert s["k"] == 20 and s["extraction"]["count"] == sum(exact) and s["eligible"] == sum(eligible)


def test_scoring_in_blocks_equals_scoring_at_once(monkeypatch):
    """score_matches scores a long run in blocks of SCORE_ROWS rows (flat memory); every score equals
    the one-block computation, bit for bit (each row is scored on its own)."""
    import dataclasses

    from mia_core.matching import tokens

    rng = np.random.default_rng(0)
    generated = [rng.integers(0, 5, rng.integers(0, 12)) for _ in range(2500)]
    suffixes = [rng.integers(0, 5, rng.integers(0, 12)) for _ in range(2500)]
    whole = tokens.score_matches(generated, suffixes, 10, 0.2)
    monkeypatch.setattr(tokens, "SCORE_ROWS", 1000)
    blocks = tokens.score_matches(generated, suffixes, 10, 0.2)
    for field in dataclasses.fields(whole):
        a, b = getattr(whole, field.name), getattr(blocks, field.name)
        assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), field.name
    assert whole.exact.sum() > 0 and (~whole.eligible).sum() > 0  # both cases occur in the data
