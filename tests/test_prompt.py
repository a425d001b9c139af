"""`mia prompt` / `mia check` / `mia export` with the fake backends of test_prompt_fakes."""

import csv
import io
import json

import numpy as np
import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, make_fake_map, next_token

from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import open_run
from mia_core.types import Sampling


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-prompt")
    fakes.CALLS.clear()
    fakes.SUBMISSIONS.clear()
    return make_fake_map(in_tmp / "Prefixes" / "fakemap")


def greedy(prefix, n):
    seq, new = list(prefix), []
    for _ in range(n):
        seq.append(next_token(seq[-2], seq[-1]))
        if seq[-1] == 0:  # EOS ends the text and is not returned (the contract's EOS rule)
            break
        new.append(seq[-1])
    return new


def test_api_returns_dicts_with_wraparound_and_writes_run(fake):
    rows = prompt("fakemap", "fake-lm", num_strings=17, batch_size=5, max_length=8, quiet=True)
    assert len(rows) == 17 and [r["prefix_index"] for r in rows] == [i % 7 for i in range(17)]
    for r in rows:
        assert r["generated_tokens"] == greedy(r["prefix_tokens"], 8)
        assert r["text"] == " ".join(f"t{t}" for t in r["generated_tokens"])
        assert r["sample_id"] == f"doc{r['prefix_index']}"
    assert [c["n"] for c in fakes.CALLS] == [5, 5, 5, 2]
    (path,) = (fake / "runs").glob("fake-lm_*.h5")
    run = open_run(path)
    assert run.complete and len(run) == 17 and run.attrs["method"] == "generate"
    assert run.attrs["num_strings"] == 17 and run.attrs["max_length"] == 8 and run.attrs["temperature"] == 0.0
    assert run.attrs["tokens_per_s"] > 0 and run.attrs["backend"]["kind"] == "fake"


def test_rows_as_an_iterator_or_not_at_all(fake):
    """rows="iter" gives the same dictionaries as the list, read from the file in chunks (a chunk
    boundary inside the run changes nothing); rows="none" writes the run and returns nothing."""
    from mia_core.errors import UsageError

    listed = prompt("fakemap", "fake-lm", num_strings=17, batch_size=5, max_length=8, quiet=True, out="a.h5")
    iterated = prompt("fakemap", "fake-lm", num_strings=17, batch_size=5, max_length=8, quiet=True, out="b.h5",
                      rows="iter")
    assert not isinstance(iterated, list) and list(iterated) == listed
    assert list(open_run("a.h5").iter_dicts(chunk_rows=4)) == listed == open_run("a.h5").to_dicts()
    assert prompt("fakemap", "fake-lm", num_strings=17, max_length=8, quiet=True, out="c.h5", rows="none") is None
    assert open_run("c.h5").to_dicts() == listed
    with pytest.raises(UsageError, match="must be one of list, iter, none, got 'all'"):
        prompt("fakemap", "fake-lm", quiet=True, rows="all")


def test_cli_defaults_and_spellings(fake, runner):
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "-q"])
    assert result.exit_code == 0, result.output
    run = open_run(result.stdout.strip())
    assert len(run) == 7 and run.attrs["batch_size"] == 10 and run.attrs["max_length"] == 20
    out = fake / "x.h5"
    result = runner.invoke(cli, ["prompt", "--prefix-map", str(fake), "--model", "fake-lm", "--num-strings", "3",
                                 "--batch-size", "2", "--max-length", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 rows written" in result.stderr and "reproduced exactly" in result.stderr
    assert open_run(out).read("tokens").shape == (3, 4)


def test_sampling_is_reproducible(fake):
    s = Sampling(temperature=0.8, top_k=10, seed=123)
    a = prompt("fakemap", "fake-lm", max_length=6, sampling=s, quiet=True, batch_size=3)
    b = prompt("fakemap", "fake-lm", max_length=6, sampling=s, quiet=True, batch_size=3)
    c = prompt("fakemap", "fake-lm", max_length=6, sampling=Sampling(0.8, 10, None, 124), quiet=True, batch_size=3)
    assert [r["generated_tokens"] for r in a] == [r["generated_tokens"] for r in b]
    assert [r["generated_tokens"] for r in a] != [r["generated_tokens"] for r in c]
    d = prompt("fakemap", "fake-lm", max_length=6, sampling=Sampling(0.8), quiet=True)  # seed chosen + recorded
    runs = sorted((fake / "runs").glob("*.h5"))
    assert any(open_run(p).attrs["seed"] is not None and open_run(p).attrs["temperature"] == 0.8 for p in runs)
    assert len(d) == 7


def test_fingerprint_refused_unless_retokenize(fake, runner):
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm-b", "-q"])
    assert result.exit_code == 1 and "--retokenize" in result.stderr and "Traceback" not in result.output
    rows = prompt("fakemap", "fake-lm-b", max_length=5, retokenize=True, quiet=True, batch_size=4)
    run = open_run(sorted((fake / "runs").glob("fake-lm-b_*.h5"))[0])
    assert run.attrs["retokenized"] and run.has("prefixes") and run.has("suffixes")
    tok_b = fakes.FakeTokenizer("b", "b")
    map_prefixes = run.prefix_map.read("prefixes")
    for r, own in zip(rows, run.prefixes(), strict=True):
        assert own.tolist() == tok_b.encode_batch([" ".join(f"t{t}" for t in map_prefixes[r["prefix_index"]])])[0]
        assert r["prefix_tokens"] == own.tolist()
        # same model function in the shifted id space: identical continuation words
        words = [t - 100 for t in r["generated_tokens"]]
        assert words == greedy([t for t in map_prefixes[r["prefix_index"]]], 5)


def test_oom_halves_batch_and_says_so(fake, runner):
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm", "--batch_size", "8",
                                 "--model-option", "oom_above=2", "-q"])
    assert result.exit_code == 0, result.output
    assert "out of memory at batch size 8; retrying with batch size 4" in result.stderr
    assert "retrying with batch size 2" in result.stderr
    assert len(open_run(result.stdout.strip())) == 7
    assert [c["n"] for c in fakes.CALLS] == [7, 4, 2, 2, 2, 1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prefix_map", "nope", "--model", "fake-lm"], 1, "not found"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--num_strings", "0"], 2, "--num_strings"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--batch_size", "-1"], 2, "--batch_size"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--max_length", "0"], 2, "--max_length"),
        (["--prefix_map", "fakemap", "--model", "fake-lmm"], 2, "Did you mean 'fake-lm'"),
        (["--model", "fake-lm"], 2, "--prefix_map"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--model-option", "oops"], 2, "KEY=VALUE"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--out", "x.txt"], 2, ".h5"),
        (["--prefix_map", "fakemap", "--model", "fake-lm", "--batch-api"], 2, "API"),
        (["--resume", "missing.h5"], 1, "not found"),
    ],
)
def test_bad_input(fake, runner, args, code, message):
    result = runner.invoke(cli, ["prompt", *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()[-1]) > 0


def test_incomplete_map_refused(fake, runner):
    (fake.parent / "broken.partial").mkdir()
    result = runner.invoke(cli, ["prompt", "--prefix_map", "broken.partial", "--model", "fake-lm"])
    assert result.exit_code == 1 and "not a complete prefix map" in result.stderr


def test_resume_refuses_other_options_and_completed_runs(fake, runner):
    out = fake / "r.h5"
    prompt("fakemap", "fake-lm", max_length=5, out=out, quiet=True)
    with pytest.raises(MiaError, match="already complete"):
        prompt(resume=out, quiet=True)
    assert open_run(out).complete  # a refused resume leaves the file as it was
    from mia_core.formats.runs import RunWriter

    w = RunWriter.reopen(out)  # make it look unfinished
    w.close()
    with pytest.raises(MiaError, match="max_length=5, not 6"):
        prompt(resume=out, max_length=6)
    with pytest.raises(MiaError, match="model='fake-lm', not 'fake-lm-b'"):
        prompt(resume=out, model="fake-lm-b")
    result = runner.invoke(cli, ["prompt", "--resume", str(out), "--temperature", "0.7"])
    assert result.exit_code == 1 and "temperature" in result.stderr
    assert len(prompt(resume=out, quiet=True)) == 7


def test_teacher_forced_agrees_with_greedy(fake, runner):
    gen = prompt("fakemap", "fake-lm", max_length=6, quiet=True)
    result = runner.invoke(cli, ["check", "--prefix_map", "fakemap", "--model", "fake-lm", "--batch_size", "3"])
    assert result.exit_code == 0, result.output
    run = open_run(result.stdout.strip())
    assert run.attrs["method"] == "teacher-forced" and run.attrs["max_length"] == 6
    suffixes = run.suffixes()
    for g, m, s in zip(gen, run.read("matched_length"), suffixes, strict=True):
        expected = 0
        while expected < len(s) and expected < len(g["generated_tokens"]) and \
                g["generated_tokens"][expected] == s[expected]:
            expected += 1
        assert m == expected
    extracted = [m == len(s) for m, s in zip(run.read("matched_length"), suffixes, strict=True)]
    assert extracted[0::2] == [True] * 4 and not any(extracted[1::2])  # even rows: suffix = greedy continuation
    # the closing line uses mia score's k (6) and eligible rows: the two suffixes cut short are left out
    eligible = [len(s) >= 6 for s in suffixes]
    hits = sum(e and x for e, x in zip(eligible, extracted, strict=True))
    assert f"{hits} of {sum(eligible)} eligible suffixes reproduced exactly (first k = 6 tokens); failed 0" \
        in result.stderr
    lp = run.read("logprobs")
    assert lp.shape == (7, 6) and np.isnan(lp[-1, 3:]).all()  # the short suffix is NaN-padded
    same = runner.invoke(cli, ["prompt", "--method", "teacher-forced", "--prefix_map", "fakemap",
                               "--model", "fake-lm", "-q"])
    assert open_run(same.stdout.strip()).read("matched_length").tolist() == run.read("matched_length").tolist()
    # an unfinished teacher-forced run resumes through either command; mixing methods is refused
    from mia_core.formats.runs import RunWriter

    RunWriter.reopen(same.stdout.strip()).close()
    resumed = runner.invoke(cli, ["prompt", "--resume", same.stdout.strip(), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert open_run(same.stdout.strip()).complete
    gen_run = next(p for p in (fake / "runs").glob("*.h5") if open_run(p).method == "generate")
    RunWriter.reopen(gen_run).close()
    refused = runner.invoke(cli, ["check", "--resume", str(gen_run)])
    assert refused.exit_code == 1 and "method='generate', not 'teacher-forced'" in refused.stderr


def test_export_jsonl_and_csv(fake, runner):
    out = fake / "r.h5"
    prompt("fakemap", "fake-lm", max_length=4, out=out, quiet=True)
    result = runner.invoke(cli, ["export", str(out), "--tokens"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 7 and lines[0]["prefix_index"] == 0 and isinstance(lines[0]["generated_tokens"], list)
    assert runner.invoke(cli, ["export", str(out), "--tokens", "--format", "csv", "--out", "r.csv"]).exit_code == 0
    rows = list(csv.DictReader(open("r.csv", encoding="utf-8")))
    assert len(rows) == 7 and rows[1]["generated_tokens"] == " ".join(map(str, lines[1]["generated_tokens"]))
    again = runner.invoke(cli, ["export", str(out), "--format", "csv", "--out", "r.csv"])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = runner.invoke(cli, ["export", "nothing.h5"])
    assert bad.exit_code == 1 and "not found" in bad.stderr
    assert list(csv.reader(io.StringIO(runner.invoke(cli, ["export", str(out), "--format", "csv"]).stdout)))[0][:2] \
        == ["index", "prefix_index"]
