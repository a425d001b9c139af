"""`mia prefix` → `mia prompt --model claude-API` against the fake Anthropic server.

The map is built by the real `mia prefix` from a small dataset and a byte-level
tokenizer registered by this module (so re-tokenizing an answer is exact and the test
needs no model files). Kill-and-resume runs `mia` in a real subprocess killed with SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from fake_anthropic import PREAMBLE, FakeAnthropic, continuation_for

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.types import Sample

KEY = "sk-ant-cli-SECRET-9876543210"
TOKENIZER = "claude-test-bytes"
DATASET = "claude-test-docs"
DOCS = [
    "We the People of the United States, in Order to form a more perfect Union, establish Justice",
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation",
]
PREFIX_TOKENS, SUFFIX_TOKENS = 40, 16


class ByteTokenizer:
    """UTF-8 bytes as tokens: exact round trips, no files."""

    name = TOKENIZER
    vocab_size = 256
    eos_id = None
    bos_id = None
    fingerprint = "utf8-bytes-v1"

    def encode_batch(self, texts):
        return [list(t.encode("utf-8")) for t in texts]

    def decode_batch(self, ids):
        return [bytes(int(i) for i in row).decode("utf-8", errors="replace") for row in ids]


class Docs:
    name = DATASET
    length = len(DOCS)

    def __iter__(self) -> Iterator[Sample]:
        for i, text in enumerate(DOCS):
            yield Sample(f"doc{i}", text, "member")


class TestPlugin:
    @hookimpl
    def mia_register_tokenizers(self, register):
        register(TOKENIZER, lambda name, options: ByteTokenizer(), description="bytes (claude tests)")

    @hookimpl
    def mia_register_datasets(self, register):
        register(DATASET, lambda name, options: Docs(), description="four documents (claude tests)")


def run_cli() -> None:
    """Entry point of the subprocess: `mia` with this module's plugin registered."""
    from mia_core.plugins import load_plugins, pm

    load_plugins()
    pm.register(TestPlugin(), name="claude-test-plugin")
    cli()


@pytest.fixture
def plugin(register_plugin):
    register_plugin(TestPlugin(), name="claude-test-plugin")


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def prefix_map(in_tmp, plugin, runner) -> str:
    result = runner.invoke(cli, ["prefix", "--model", TOKENIZER, "--dataset", DATASET, "--prefix_tokens",
                                 str(PREFIX_TOKENS), "--suffix_tokens", str(SUFFIX_TOKENS), "-q"])
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in (in_tmp / "Prefixes").iterdir() if p.is_dir()]
    return folder.name


def prompt_args(prefix_map: str, server: FakeAnthropic, *extra: str, **options: str) -> list[str]:
    opts = {"base_url": server.url, "max_retries": "1", "poll_interval": "0.02", **options}
    args = ["prompt", "--prefix_map", prefix_map, "--model", "claude-API", "--max_length", "16", "-q"]
    for key, value in opts.items():
        args += ["--model-option", f"{key}={value}"]
    return args + list(extra)


def runs_of(folder: Path) -> list[Path]:
    return sorted((folder / "runs").glob("*.h5")) if (folder / "runs").is_dir() else []


def expected_text(prefix_text: str) -> str:
    """What the run must hold for a prefix: the fake's answer, joined and cut at max_length bytes."""
    answer = continuation_for(prefix_text)
    joined = answer if prefix_text[-1:].isspace() else " " + answer
    return joined.encode()[:16].decode("utf-8", errors="replace")


def check_rows(run_path: Path, n_rows: int) -> h5py.File:
    f = h5py.File(run_path, "r")
    assert int(f.attrs["rows"]) == n_rows and f["tokens"].shape[0] == n_rows
    map_file = Path(json.loads(json.dumps(f.attrs["prefix_map"]))) / "prefix_map.h5"
    with h5py.File(map_file, "r") as m:
        prefixes = m["prefixes"][:]
    tok = ByteTokenizer()
    for i in range(n_rows):
        row = int(f["prefix_row"][i])
        assert row == i % len(prefixes)
        prefix_text = tok.decode_batch([prefixes[row]])[0]
        text = f["text"][i].decode()
        assert text == expected_text(prefix_text), (i, text)
        assert f["raw_text"][i].decode() == PREAMBLE + continuation_for(prefix_text)  # as received
        assert f["stop_reason"][i].decode() == "end_turn" and f["error"][i].decode() == ""
        assert f["lengths"][i] == len(text.encode())
    return f


def assert_no_key(*texts: str, files: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert KEY not in text
    for path in files:
        assert KEY.encode() not in path.read_bytes()


def test_prefix_then_prompt_records_text_usage_and_cost(prefix_map, server, runner, in_tmp):
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "6", "--batch_size", "4"))
    assert result.exit_code == 0, result.output
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    assert Path(result.stdout.strip()).resolve() == run_path.resolve()
    with check_rows(run_path, 6) as f:
        assert f.attrs["complete"]
        per_row = f["cost_usd"][:]
        assert np.all(per_row > 0) and float(f.attrs["cost_usd"]) == pytest.approx(per_row.sum())
        backend = json.loads(f.attrs["backend"])
        assert backend["model"] == "claude-haiku-5-5" and backend["price_in_per_mtok"] == 0.10
        assert json.loads(f.attrs["usage"])["input_tokens"] == int(f["input_tokens"][:].sum())
    assert len(server.message_requests()) == 6
    assert "estimated cost: $" in result.stderr
    assert_no_key(result.output, result.stderr, files=(run_path,))


def test_dry_run_sends_nothing_and_writes_nothing(prefix_map, server, runner, in_tmp):
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "3", "--dry-run"))
    assert result.exit_code == 0, result.output
    assert server.requests == []
    assert runs_of(in_tmp / "Prefixes" / prefix_map) == []
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2]
    body = lines[0]["request"]
    assert body["model"] == "claude-haiku-5-5" and body["messages"][0]["role"] == "user"
    assert "estimated cost $" in result.stderr
    assert_no_key(result.output, result.stderr)


def test_missing_key_fails_before_any_work(prefix_map, server, runner, in_tmp, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = runner.invoke(cli, prompt_args(prefix_map, server))
    assert result.exit_code == 1
    assert "needs an API key: set ANTHROPIC_API_KEY" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert server.requests == [] and runs_of(in_tmp / "Prefixes" / prefix_map) == []


def test_confirmation_is_required_above_the_threshold(prefix_map, server, runner, in_tmp):
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--confirm-above", "0.000001"))
    assert result.exit_code == 1 and "pass --yes" in result.stderr
    assert server.requests == []
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--confirm-above", "0.000001", "--yes"))
    assert result.exit_code == 0, result.output


def test_cost_cap_stops_before_it_is_exceeded_and_resume_finishes(prefix_map, server, runner, in_tmp):
    # Each request is estimated at ~$1.6e-5 (max_tokens 40 x $0.50/MTok + input); two batches of 2 fit in 8e-5.
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "8", "--batch_size", "2",
                                            "--max-cost", "0.00008"))
    assert result.exit_code == 3, result.output
    assert "stopped at the cost cap" in result.stderr
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    with h5py.File(run_path, "r") as f:
        kept, spent = int(f.attrs["rows"]), float(f.attrs["cost_usd"])
    assert 0 < kept < 8 and spent <= 0.00008
    assert len(server.message_requests()) == kept  # nothing sent beyond the cap
    result = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--max-cost", "1", "-q"])
    assert result.exit_code == 0, result.output
    with check_rows(run_path, 8) as f:
        assert f.attrs["complete"]
    assert len(server.message_requests()) == 8


def test_failed_items_are_recorded_without_losing_the_others(prefix_map, server, runner, in_tmp):
    server.script("Beautiful", ["400"])  # the second document's prefix
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "4"))
    assert result.exit_code == 0, result.output
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    with h5py.File(run_path, "r") as f:
        errors = [e.decode() for e in f["error"][:]]
        assert errors[1] == "HTTP 400 invalid_request_error: prompt rejected"
        assert errors[0] == errors[2] == errors[3] == ""
        assert f["lengths"][1] == 0 and all(f["lengths"][i] > 0 for i in (0, 2, 3))


def test_batch_api_run(prefix_map, server, runner, in_tmp):
    result = runner.invoke(cli, prompt_args(prefix_map, server, "--num_strings", "5", "--batch-api"))
    assert result.exit_code == 0, result.output
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    with check_rows(run_path, 5) as f:
        assert json.loads(f.attrs["batch_state"])["batch_id"] == "msgbatch_0001"
        price = json.loads(f.attrs["backend"])
        half = 0.5 * (f["input_tokens"][0] * price["price_in_per_mtok"]
                      + f["output_tokens"][0] * price["price_out_per_mtok"]) / 1e6
        assert f["cost_usd"][0] == pytest.approx(half)
    assert server.count("POST", "/v1/messages/batches") == 1 and server.message_requests() == []


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    """`mia ARGS` in a subprocess, with the SDK's debug log on (checked for the key) going to a file."""
    tests = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(tests)!r}); sys.argv[0] = 'mia'; " \
           "import test_claude_cli; test_claude_cli.run_cli()"
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "MIA_LOAD_PLUGINS": "mia-claude", "ANTHROPIC_LOG": "debug"}
    log = open(cwd / "subprocess.log", "wb")  # a file, not a pipe: a full pipe would block the child
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return proc


def _wait_for(condition, proc: subprocess.Popen, cwd: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            log = (cwd / "subprocess.log").read_text(errors="replace")
            raise AssertionError(f"subprocess ended early ({proc.returncode}): {log[-2000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the subprocess"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen, cwd: Path) -> str:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    log = (cwd / "subprocess.log").read_text(errors="replace")
    assert "Request options" in log  # the SDK's debug log was on
    return log


def test_resume_after_sigkill_messages(prefix_map, server, runner, in_tmp):
    server.delay = 0.1
    args = prompt_args(prefix_map, server, "--num_strings", "12", "--batch_size", "2", "--yes", concurrency="1")
    proc = _spawn(args, in_tmp)
    _wait_for(lambda: len(server.message_requests()) >= 5, proc, in_tmp)
    err = _kill(proc, in_tmp)
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    sent_before = len(server.message_requests())
    server.delay = 0.0
    result = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--yes", "-q"])
    assert result.exit_code == 0, result.output
    with check_rows(run_path, 12) as f:
        assert f.attrs["complete"]
        kept_before = 12 - (len(server.message_requests()) - sent_before)
    # Only rows of the batch in flight at the kill were asked again (at most one batch of 2).
    assert len(server.message_requests()) - 12 <= 2 and kept_before >= 2
    assert_no_key(err, result.output, result.stderr, files=(run_path,))


def test_resume_after_sigkill_batch_api_never_resubmits(prefix_map, server, runner, in_tmp):
    server.hold_batches.set()  # the batch stays in_progress until the process is killed
    proc = _spawn(prompt_args(prefix_map, server, "--num_strings", "6", "--batch-api", "--yes"), in_tmp)
    _wait_for(lambda: server.count("GET", "/v1/messages/batches/msgbatch_0001") >= 2, proc, in_tmp)
    err = _kill(proc, in_tmp)
    (run_path,) = runs_of(in_tmp / "Prefixes" / prefix_map)
    server.hold_batches.clear()
    # --batch-api is not repeated: the run remembers its batch and must not fall back to paid Messages calls.
    result = runner.invoke(cli, ["prompt", "--resume", str(run_path), "--yes", "-q"])
    assert result.exit_code == 0, result.output
    assert server.count("POST", "/v1/messages/batches") == 1  # polled and fetched, never paid twice
    assert server.message_requests() == []
    with check_rows(run_path, 6) as f:
        assert f.attrs["complete"]
    assert_no_key(err, result.output, result.stderr, files=(run_path,))


def test_claude_tokenizer_is_a_named_stand_in(plugin):
    from mia_core import registry
    from mia_core.errors import MiaError

    assert registry.tokenizers.get("claude:claude-opus-5-5").name == "claude-API"
    assert registry.tokenizers.create("claude-API", {"tokenizer": TOKENIZER}).name == TOKENIZER
    with pytest.raises(MiaError, match="Claude's tokenizer is not public"):
        registry.tokenizers.create("claude-API", {"tokenizer": "no-such-tokenizer"})
