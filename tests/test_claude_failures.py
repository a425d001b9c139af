"""API failures stop or show, never pass as results (real SDK against tests/fake_anthropic.py).

A rejected key stops after one request; failed rows (API error, malformed body, refusal,
empty reply) are counted, keep the run incomplete, make the exit code non-zero when all
failed, and `--resume --retry-failed` asks exactly those again, in place.
"""

import json

import h5py
import numpy as np
import pytest
from test_claude_cli import KEY, plugin, prefix_map, prompt_args, runs_of, server  # noqa: F401 (fixtures)

from mia_core.cli import cli
from mia_core.formats.runs import open_run

DOCS = ("We the People", "Beautiful", "Permission", "Four score")


def one_line(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("estimated cost")]
    assert len(lines) == 1, result.stderr  # the error is one line (after the cost estimate)
    return lines[0]


def test_bad_key_fails_fast_after_one_request(prefix_map, server, runner, in_tmp):  # noqa: F811
    server.valid_key = "sk-ant-the-right-one"
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "20", "--batch_size", "10",
                                            "--yes"))
    line = one_line(result, 1)
    assert "the Anthropic API refused the key: HTTP 401 authentication_error: invalid x-api-key" in line
    assert "no run file left" in line and KEY not in line
    assert len(server.message_requests()) == 1  # the other 19 were never sent
    assert runs_of(in_tmp / "Prefixes" / prefix_map) == []  # failed before its first row: nothing left


def test_key_without_access_403_fails_fast(prefix_map, server, runner, in_tmp):  # noqa: F811
    server.script(DOCS[0], ["403"])
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "8", "--yes"))
    line = one_line(result, 1)
    assert "HTTP 403 permission_error" in line and len(server.message_requests()) == 1


def test_every_failure_kind_is_counted_and_retried_in_place(prefix_map, server, runner, in_tmp):  # noqa: F811
    server.script(DOCS[1], ["malformed"])
    server.script(DOCS[2], ["refusal"])
    server.script(DOCS[3], ["empty"])
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "6", "--batch_size", "3",
                                            "--yes"))
    assert result.exit_code == 0, result.output  # some rows answered
    assert "3 of 6 rows failed" in result.stderr and "--retry-failed" in result.stderr
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    run = open_run(run_path)
    errors = list(run.read("error"))
    assert errors[0] == errors[4] == errors[5] == ""
    assert errors[1].startswith("malformed response body")
    assert errors[2].startswith("refused") and errors[3].startswith("empty reply")
    assert not run.complete and run.attrs["rows_failed"] == 3
    assert all(len(t) == 0 for t in run.tokens()[1:4])
    spent = run.attrs["cost_usd"]
    before = {c: run.read(c) for c in ("text", "tokens", "prefix_row")}

    again = runner.invoke(cli, ["prompt", "--resume", str(run_path), "-q"])  # all rows written: says what to do
    assert "3 of them failed" in one_line(again, 1) and "--retry-failed" in again.stderr

    sent = len(server.message_requests())
    retried = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--retry-failed", "--yes"])
    assert retried.exit_code == 0, retried.output
    after = retried.stderr.split("rows written")[1]
    assert "for 3 requests" in retried.stderr and "rows failed" not in after and "; failed 0;" in after
    assert len(server.message_requests()) - sent == 3  # exactly the failed rows, asked once each
    asked = [json.dumps(r["body"]) for r in server.message_requests()[sent:]]
    assert sorted(any(d in a for d in DOCS[1:]) for a in asked) == [True] * 3
    run = open_run(run_path)
    assert run.complete and run.attrs["rows_failed"] == 0 and len(run) == 6
    assert list(run.read("error")) == [""] * 6 and all(len(t) > 0 for t in run.tokens())
    for i in (0, 4, 5):  # answered rows untouched, in place
        assert run.read("text")[i] == before["text"][i]
    assert run.read("prefix_row").tolist() == before["prefix_row"].tolist()
    assert run.attrs["generated_tokens"] == int(run.read("lengths").sum())
    assert run.attrs["cost_usd"] == pytest.approx(spent + float(np.sum(run.read("cost_usd")[1:4])))
    with h5py.File(run_path, "r") as f:  # compacted: the file alone holds the final rows
        assert int(f.attrs["rows"]) == 6 and bool(f.attrs["complete"])


def test_all_failed_exits_non_zero_and_keeps_the_run(prefix_map, server, runner, in_tmp):  # noqa: F811
    for doc in DOCS:
        server.script(doc, ["400"])
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "4", "--yes"))
    line = one_line(result, 1)
    assert line.startswith("Error: all 4 requests failed (first error: HTTP 400 invalid_request_error")
    assert "--retry-failed" in line
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    run = open_run(run_path)
    assert len(run) == 4 and not run.complete and run.attrs["rows_failed"] == 4
    fixed = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--retry-failed", "--yes", "-q"])
    assert fixed.exit_code == 0, fixed.output
    assert open_run(run_path).complete


def test_retry_failed_honours_the_cost_cap_and_needs_resume(prefix_map, server, runner, in_tmp):  # noqa: F811
    for doc in DOCS:
        server.script(doc, ["400"])
    runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "4", "--yes"))
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    sent = len(server.message_requests())
    capped = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--retry-failed", "--yes",
                                 "--max-cost", "0.0000001", "-q"])
    assert capped.exit_code == 3 and "stopped at the cost cap" in capped.stderr
    assert len(server.message_requests()) == sent
    usage = runner.invoke(cli, ["prompt", "--prefix_map", prefix_map, "--retry-failed"])
    assert usage.exit_code == 2 and "--resume" in usage.stderr
