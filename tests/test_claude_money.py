"""Money and secrets with the Claude API (issue #24, items 4, 5 and 7).

The real `mia` CLI in subprocesses (tests/test_claude_journal.py's helper) against the fake
Anthropic server, which counts requests: a refused key stops all sending at its first 401/403,
no secret reaches any file or output, and `--retry-failed` on a batch-API run goes through the
batch API (half price) unless `--no-batch-api`, with `-q` silencing the batch poller's bar.
"""

import json
import shutil
from pathlib import Path

import h5py
import pytest
from fake_anthropic import FakeAnthropic
from test_claude_cli import DATASET, DOCS, KEY, PREFIX_TOKENS, SUFFIX_TOKENS, TOKENIZER
from test_claude_journal import mia, one_error_line


@pytest.fixture(scope="module")
def made_map(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("map")
    made = mia(["prefix", "--model", TOKENIZER, "--dataset", DATASET, "--prefix_tokens", str(PREFIX_TOKENS),
                "--suffix_tokens", str(SUFFIX_TOKENS), "-q"], folder)
    assert made.returncode == 0, made.stderr
    return folder


@pytest.fixture
def work(made_map, tmp_path) -> Path:
    shutil.copytree(made_map, tmp_path / "w")
    return tmp_path / "w"


@pytest.fixture
def server():
    with FakeAnthropic() as fake:
        yield fake


def prompt(work: Path, server: FakeAnthropic, *extra: str, base_url: str | None = None, **options: str):
    (map_folder,) = [p for p in (work / "Prefixes").iterdir() if p.is_dir()]
    opts = {"base_url": base_url or server.url, "max_retries": "0", "poll_interval": "0.02", **options}
    args = ["prompt", "--prefix_map", str(map_folder), "--model", "claude-API", "--max_length", "16",
            "--out", "RUN.h5"]
    for key, value in opts.items():
        args += ["--model-option", f"{key}={value}"]
    return mia(args + list(extra), work)


# ---- item 4: a bad key stops after one 401/403, whatever happened before ------------------------------

def test_500_then_401_stops_at_the_first_401(work, server):
    server.script("", ["500"] + ["401"] * 40)  # every prompt: a server error, then a refused key
    result = prompt(work, server, "--num_strings", "20", "--batch_size", "10", "--yes", "-q")
    line = one_error_line(result)
    assert "the Anthropic API refused the key: HTTP 401 authentication_error" in line
    # Until the key is proven by a success, requests go one at a time: the 500, then the 401, then nothing.
    assert len(server.message_requests()) == 2


def test_a_key_refused_mid_run_stops_all_sending_after_the_requests_in_flight(work, server):
    """Once the key is accepted, requests go `concurrency` at a time; when the key is then refused, the
    bound is: the requests already in flight (at most concurrency - 1 besides the refused one) are
    answered, none is sent after, and the answers already paid for are kept."""
    concurrency = 4
    server.script("", ["ok"] + ["401"] * 40)
    server.delay = 0.5  # the first `concurrency` requests of the pool are all in flight before any answer
    result = prompt(work, server, "--num_strings", "20", "--batch_size", "10", "--yes", "-q",
                    concurrency=str(concurrency))
    line = one_error_line(result)
    assert "refused the key: HTTP 401" in line and "10 rows kept" in line and "--resume" in line
    assert len(server.message_requests()) == 1 + concurrency  # the success, then one pool's worth, then none
    with h5py.File(work / "RUN.h5", "r") as f:
        errors = [e.decode() for e in f["error"][:]]
    assert errors[0] == "" and len(errors) == 10  # the paid answer is kept
    assert sum("HTTP 401 authentication_error" in e for e in errors) == concurrency
    assert sum("not sent: an earlier request got HTTP 401" in e for e in errors) == 10 - 1 - concurrency


# ---- item 5: no secret in any file ------------------------------------------------------------------------

def test_no_secret_in_any_file_or_output(work, server):
    password, key_like = "SECRETpw42", "sk-ant-api03-LOOKSLIKEAKEY0123456789"
    url = server.url.replace("http://", f"http://user:{password}@")
    server.script(DOCS[2][:10], ["400"])  # one failed row, for a resume
    result = prompt(work, server, "--num_strings", "4", "--yes", base_url=url, system=f"note {key_like}")
    assert result.returncode == 0, result.stderr
    run = work / "RUN.h5"
    with h5py.File(run, "r") as f:
        recorded = json.loads(f.attrs["model_options"])
        assert recorded["base_url"] == server.url.replace("http://", "http://***@")
        assert "***" in json.loads(f.attrs["provenance"])["command_line"]
    outputs = [result.stdout, result.stderr]
    refused = mia(["prompt", "--resume", str(run), "--retry-failed", "--yes", "-q"], work)
    assert "recorded --model-option base_url without its secret" in one_error_line(refused)
    retried = mia(["prompt", "--resume", str(run), "--retry-failed", "--yes", "--model-option", f"base_url={url}",
                   "--model-option", f"system=note {key_like}"], work)  # each redacted option is given again
    assert retried.returncode == 0, retried.stderr
    outputs += [refused.stderr, retried.stdout, retried.stderr]
    for command in (["show", str(run)], ["export", str(run), "--out", "run.jsonl"],
                    ["export", str(run), "--format", "csv", "--tokens", "--out", "run.csv"]):
        shown = mia(command, work)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    files = [p for p in work.rglob("*") if p.is_file()]
    assert run in files and work / "run.jsonl" in files
    for secret in (password, key_like, KEY):
        assert not any(secret in text for text in outputs), secret
        assert [p for p in files if secret.encode() in p.read_bytes()] == [], secret


# ---- item 7: --retry-failed on a batch-API run, and -q ----------------------------------------------------

def batch_run_with_two_failures(work: Path, server: FakeAnthropic, quiet: bool) -> None:
    server.script(DOCS[1][:10], ["batch_error", "batch_error"])  # rows 1 and 5 (map row 1) fail in the first batch
    result = prompt(work, server, "--num_strings", "6", "--batch-api", "--yes", *(["-q"] if quiet else []))
    assert result.returncode == 0, result.stderr
    assert "2 of 6 rows failed" in result.stderr
    bar = "batch msgbatch_0001"  # the batch poller's bar (the plugin's), drawn unless -q
    if quiet:
        assert bar not in result.stderr and "%|" not in result.stderr
    else:
        assert bar in result.stderr


def half_price(f: h5py.File, row: int) -> float:
    price = json.loads(f.attrs["backend"])
    return 0.5 * (f["input_tokens"][row] * price["price_in_per_mtok"]
                  + f["output_tokens"][row] * price["price_out_per_mtok"]) / 1e6


def test_retry_failed_of_a_batch_run_goes_through_the_batch_api(work, server):
    batch_run_with_two_failures(work, server, quiet=True)
    result = mia(["prompt", "--resume", "RUN.h5", "--retry-failed", "--yes", "-q"], work)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # -q: no bar, no note; the cost estimate alone stays
    assert len(lines) == 1 and lines[0].startswith("estimated cost: ") and "for 2 requests" in lines[0]
    assert server.message_requests() == []  # never the full-price Messages API
    created = [r for r in server.requests if r["method"] == "POST" and r["path"] == "/v1/messages/batches"]
    assert len(created) == 2 and sorted(q["custom_id"] for q in created[1]["body"]["requests"]) == ["1", "5"]
    with h5py.File(work / "RUN.h5", "r") as f:
        assert f.attrs["complete"] and [e.decode() for e in f["error"][:]] == [""] * 6
        for row in (1, 5):
            assert f["cost_usd"][row] == pytest.approx(half_price(f, row))
        assert json.loads(f.attrs["batch_state"])["collected"]


def test_no_batch_api_retries_through_the_messages_api(work, server):
    batch_run_with_two_failures(work, server, quiet=False)
    result = mia(["prompt", "--resume", "RUN.h5", "--retry-failed", "--no-batch-api", "--yes", "-q"], work)
    assert result.returncode == 0, result.stderr
    assert len(server.message_requests()) == 2 and server.count("POST", "/v1/messages/batches") == 1
    with h5py.File(work / "RUN.h5", "r") as f:
        assert f.attrs["complete"] and [e.decode() for e in f["error"][:]] == [""] * 6
