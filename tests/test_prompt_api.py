"""API (text) backends in the prompt loop: re-tokenization, errors, dry run, costs, batch API."""

import json

import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, make_fake_map, next_token

from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.extraction.prompt import RunStopped, prompt
from mia_core.formats.integrity import edit_hdf5
from mia_core.formats.runs import open_run


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-prompt-api")
    fakes.CALLS.clear()
    fakes.SUBMISSIONS.clear()
    folder = make_fake_map(in_tmp / "Prefixes" / "fakemap", n=6)
    return folder


def test_text_backend_retokenized_with_map_tokenizer(fake):
    rows = prompt("fakemap", "fake-api", max_length=4, quiet=True, yes=True)
    run = open_run(next((fake / "runs").glob("fake-api_*.h5")))
    assert run.complete and len(run) == 6 and run.attrs["tokenizer"] == "fake-tok-a"
    for r in rows:
        p = r["prefix_tokens"]
        assert r["generated_tokens"][0] == next_token(p[-2], p[-1]) and len(r["generated_tokens"]) == 4
        assert len(r["raw_text"].split()) == 10  # the full answer is kept; tokens are cut to max_length
        assert r["stop_reason"] == "max_tokens" and r["error"] == "" and r["cost_usd"] == 0.01
        assert json.loads(r["usage"])["input_tokens"] == 4
    assert run.attrs["cost_usd"] == pytest.approx(0.06) and run.attrs["usage"]["output_tokens"] == 60


def test_error_items_recorded_without_losing_others(fake):
    from mia_core.formats.prefixmap import PrefixMap

    first = PrefixMap(fake).read("prefixes")[0]
    fakes_map = make_fake_map(fake.parent / "errmap", n=4)

    with edit_hdf5(fakes_map / "prefix_map.h5") as f:  # prefix of row 2 starts with t13: the API fails it
        f["prefixes"][2] = [13, *first[1:]]
    rows = prompt("errmap", "fake-api", max_length=3, quiet=True, yes=True)
    assert rows[2]["error"].startswith("fake API error") and rows[2]["generated_tokens"] == []
    assert all(r["error"] == "" and len(r["generated_tokens"]) == 3 for i, r in enumerate(rows) if i != 2)


def test_dry_run_prints_requests_and_cost_and_writes_nothing(fake, runner):
    result = runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--dry-run",
                                 "--max_length", "7"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 6 and lines[0]["request"]["max_tokens"] == 7
    assert lines[0]["request"]["messages"][0]["content"].startswith("t")
    assert "estimated cost $0.0600" in result.stderr and "nothing sent" in result.stderr
    assert not (fake / "runs").exists() and fakes.CALLS == []


def test_confirmation_above_threshold(fake, runner):
    args = ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--model-option", "price=0.5", "-q"]
    result = runner.invoke(cli, args)  # $3 > $1 and no tty: refused
    assert result.exit_code == 1 and "--yes" in result.stderr and fakes.CALLS == []
    assert not (fake / "runs").exists()
    ok = runner.invoke(cli, [*args, "--confirm-above", "5"])
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(cli, [*args, "--yes"]).exit_code == 0


def test_max_cost_stops_before_exceeding_and_resumes(fake, runner):
    args = ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--batch_size", "2", "-q", "--yes"]
    result = runner.invoke(cli, [*args, "--max-cost", "0.05", "--out", "capped.h5"])
    assert result.exit_code == 3, result.output
    assert "cost cap" in result.stderr and "--resume" in result.stderr
    run = open_run("capped.h5")
    assert len(run) == 4 and not run.complete and run.attrs["cost_usd"] == pytest.approx(0.04)
    with pytest.raises(RunStopped):
        prompt(resume="capped.h5", max_cost=0.05, quiet=True)
    rows = prompt(resume="capped.h5", max_cost=1.0, quiet=True)
    assert len(rows) == 6 and open_run("capped.h5").attrs["cost_usd"] == pytest.approx(0.06)


def test_batch_api_state_persisted_and_resumed_without_paying_twice(fake, runner):
    args = ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--batch-api", "--yes", "-q",
            "--max_length", "3", "--out", "b.h5"]
    crashed = runner.invoke(cli, [*args, "--model-option", "fail_after=3"])
    assert crashed.exit_code != 0 and fakes.SUBMISSIONS == ["batch_0"]
    run = open_run("b.h5")
    # results came in reverse order: rows 5, 4, 3 arrived, none contiguous with row 0 yet
    assert run.attrs["batch_state"]["batch_id"] == "batch_0" and len(run) == 0
    fakes.CALLS.clear()
    rows = prompt(resume="b.h5", quiet=True, model_options={"fail_after": "0"})  # resumes in batch mode
    assert fakes.SUBMISSIONS == ["batch_0"] and fakes.CALLS == []  # the same batch fetched again, nothing resent
    assert len(rows) == 6 and [r["prefix_index"] for r in rows] == list(range(6))
    direct = prompt("fakemap", "fake-api", max_length=3, quiet=True, yes=True)
    assert [r["generated_tokens"] for r in rows] == [r["generated_tokens"] for r in direct]


def test_batch_api_needs_backend_support(fake):
    class NoBatch(fakes.FakeAPI):
        run_batch = None

    with pytest.raises(MiaError, match="no batch API"):
        prompt("fakemap", "fake-api", backend=NoBatch("x", {}), batch_api=True, quiet=True)
    with pytest.raises(MiaError, match="cannot be stopped part-way"):
        prompt("fakemap", "fake-api", batch_api=True, max_cost=0.01, quiet=True, yes=True)
