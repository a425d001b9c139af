"""The Claude backend against a fake Anthropic server, through the real ``anthropic`` SDK."""

import logging
import time

import pytest
from fake_anthropic import PREAMBLE, FakeAnthropic, continuation_for
from mia_claude.pricing import PRICES, cost_usd, lookup_price
from mia_claude.prompting import join_continuation, strip_preamble

from mia_core import registry
from mia_core.errors import MiaError
from mia_core.types import Sampling, TextResult, capabilities

KEY = "sk-ant-test-KEY-0123456789abcdef"


@pytest.fixture
def server():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def make(server, **options):
    opts = {"base_url": server.url, "timeout": "5", "max_retries": "2", "poll_interval": "0.02", **options}
    return registry.backends.create("claude-API", {k: str(v) for k, v in opts.items()})


def test_names_resolve_and_model_comes_from_the_name(server):
    assert registry.backends.get("CLAUDE-api").name == "claude-API"
    backend = registry.backends.create("claude:claude-sonnet-5-5", {"base_url": server.url})
    assert backend.config.model == "claude-sonnet-5-5"
    assert capabilities(backend) == frozenset({"generate_text", "cost", "batch"})
    assert make(server).config.model == "claude-haiku-5-5"
    assert make(server, model="claude-haiku-4-5-20251001").config.price == PRICES["claude-haiku-4-5"]


def test_success_strips_preamble_and_records_raw_text_stop_reason_usage(server):
    backend = make(server)
    prefixes = ["We the People of the United States, in Order", "Beautiful is better than"]
    results = backend.generate_text(prefixes, 20, Sampling())
    for prefix, result in zip(prefixes, results, strict=True):
        assert result.error is None
        assert result.raw == PREAMBLE + continuation_for(prefix)
        assert result.text == " " + continuation_for(prefix)
        assert result.stop_reason == "end_turn"
        usage = result.usage
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["cost_usd"] == pytest.approx(cost_usd(backend.config.price, usage["input_tokens"],
                                                           usage["output_tokens"]))
    sent = server.message_requests()
    assert len(sent) == 2
    body = sent[0]["body"]
    assert body["model"] == "claude-haiku-5-5" and body["max_tokens"] == 46  # ceil(1.5 * 20) + 16
    assert body["messages"][0]["role"] == "user" and len(body["messages"]) == 1  # no assistant prefill
    assert "temperature" not in body and body["output_config"] == {"effort": "low"}
    assert server.api_key_of(sent[0]["headers"]) == KEY


def test_sampling_is_sent_only_when_asked(server):
    make(server, send_sampling="yes").generate_text(["a b c"], 5, Sampling(temperature=0.7, top_k=40))
    body = server.message_requests()[0]["body"]
    assert body["temperature"] == 0.7 and body["top_k"] == 40


def test_429_then_success_honours_retry_after(server):
    server.script("RATE", ["429:1"])
    result, = make(server).generate_text(["RATE limited text"], 10, Sampling())
    assert result.error is None and result.text == " " + continuation_for("RATE limited text")
    first, second = server.message_requests()
    assert second["time"] - first["time"] >= 0.95  # retry-after: 1 second


def test_529_overloaded_is_retried(server):
    server.script("BUSY", ["529", "529"])
    result, = make(server).generate_text(["BUSY model"], 10, Sampling())
    assert result.error is None
    assert len(server.message_requests()) == 3


def test_500_that_persists_fails_only_that_item(server):
    server.script("BROKEN", ["500"] * 10)
    results = make(server, max_retries=1).generate_text(["fine one", "BROKEN two", "fine three"], 10, Sampling())
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].error == "HTTP 500 api_error: Internal server error (after 1 retries)"
    assert results[1].text == ""
    assert sum("BROKEN" in str(r["body"]) for r in server.message_requests()) == 2  # 1 try + 1 retry


def test_client_error_and_malformed_body_are_not_retried(server):
    server.script("REJECT", ["400"])
    server.script("GARBLED", ["malformed"])
    server.script("SHAPE", ["badshape"])
    bad, garbled, shape, good = make(server).generate_text(["REJECT a", "GARBLED b", "SHAPE c", "good d"], 10,
                                                           Sampling())
    assert bad.error == "HTTP 400 invalid_request_error: prompt rejected"
    assert garbled.error.startswith("malformed response body: Expecting value")
    assert shape.error == "malformed response body: a message without content or usage"
    assert good.error is None
    assert len(server.message_requests()) == 4


def test_slow_response_hits_the_timeout(server):
    server.script("SLOW", ["slow:1.5", "slow:1.5"])
    start = time.monotonic()
    slow, fast = make(server, timeout=0.3, max_retries=1).generate_text(["SLOW x", "fast y"], 10, Sampling())
    assert slow.error == "timeout (0.3 s per attempt, 1 retries)"
    assert fast.error is None
    assert time.monotonic() - start < 1.5 + 1.0  # gave up after two 0.3 s attempts, not the server's 3 s
    assert sum("SLOW" in str(r["body"]) for r in server.message_requests()) == 2


def test_batch_lifecycle_matches_results_by_custom_id(server):
    backend = make(server)
    items = [(3, "alpha beta gamma"), (7, "BATCHERR delta"), (11, "epsilon zeta eta theta iota")]
    states, delivered = [], []

    def on_results(chunk: list[tuple[int, TextResult]]) -> None:
        assert states, "the batch id must be saved before any result arrives"
        delivered.extend(chunk)

    backend.run_batch(items, 10, Sampling(), {}, states.append, on_results, quiet=True)
    assert states == [{"batch_id": "msgbatch_0001", "rows": 3}]
    assert server.count("POST", "/v1/messages/batches") == 1
    assert server.count("GET", "/v1/messages/batches/msgbatch_0001") >= 3 + 1  # polls in_progress→ended, results
    assert server.message_requests() == []
    got = dict(delivered)
    assert sorted(got) == [3, 7, 11]
    assert got[3].text == " " + continuation_for("alpha beta gamma")
    assert got[7].error == "batch request errored: invalid_request_error: prompt is too long"
    u = got[11].usage
    assert u["cost_usd"] == pytest.approx(cost_usd(backend.config.price, u["input_tokens"], u["output_tokens"]) / 2)
    sent = server.requests[0]["body"]["requests"]
    assert [r["custom_id"] for r in sent] == ["3", "7", "11"]


def test_batch_resume_polls_the_saved_batch_and_never_resubmits_it(server):
    backend = make(server)
    backend.run_batch([(0, "one two"), (1, "three four")], 10, Sampling(), {}, lambda s: None,
                      lambda c: None, quiet=True)
    assert server.count("POST", "/v1/messages/batches") == 1
    # Resume: row 0 was stored, row 1 was not, row 2 was never submitted (killed between batches).
    states, delivered = [], []
    backend.run_batch([(1, "three four"), (2, "five six")], 10, Sampling(), {"batch_id": "msgbatch_0001"},
                      states.append, delivered.extend, quiet=True)
    got = dict(delivered)
    assert sorted(got) == [1, 2] and all(r.error is None for r in got.values())
    assert server.count("POST", "/v1/messages/batches") == 2
    new_batch = [r for r in server.requests if r["method"] == "POST"][-1]["body"]["requests"]
    assert [r["custom_id"] for r in new_batch] == ["2"]
    assert states == [{"batch_id": "msgbatch_0002", "rows": 1}]


def test_batch_splits_above_the_request_limit(server):
    states = []
    make(server, batch_max_requests=2).run_batch([(i, f"text {i}") for i in range(5)], 5, Sampling(), {},
                                                 states.append, lambda c: None, quiet=True)
    assert [s["rows"] for s in states] == [2, 2, 1]


def test_missing_key_is_a_clear_error_before_any_request(server, monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(MiaError, match="ANTHROPIC_API_KEY or pass --model-option key_file"):
        make(server)
    with pytest.raises(MiaError, match="cannot read the API key file"):
        make(server, key_file=tmp_path / "nope")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    make(server, key_file=key_file).generate_text(["x y"], 5, Sampling())
    assert server.api_key_of(server.message_requests()[0]["headers"]) == KEY
    with pytest.raises(MiaError, match="refused"):
        make(server, api_key=KEY)
    assert len(server.requests) == 1


@pytest.mark.parametrize("options, message", [
    ({"concurrency": "0"}, "concurrency=0: must be at least 1"),
    ({"timeout": "soon"}, "expected a number"),
    ({"colour": "red"}, "unknown option"),
    ({"model": "claude-new-9"}, "no price is known"),
    ({"prompt": "no placeholder"}, "must contain {prefix}"),
])
def test_bad_options_are_one_line_errors(server, options, message):
    with pytest.raises(MiaError, match=message):
        make(server, **options)


def test_price_override_and_estimate(server):
    backend = make(server, model="claude-new-9", price_in=2, price_out=10, chars_per_token=4)
    assert lookup_price("claude-new-9") is None
    prompt_chars = len(backend.render_request("x" * 40, 10)["messages"][0]["content"])
    expected = (-(-prompt_chars // 4) + 8) * 2 / 1e6 + 31 * 10 / 1e6  # max_tokens ceil(15)+16 = 31
    assert backend.estimate_cost(["x" * 40], 10) == pytest.approx(expected)
    assert backend.estimate_cost(["x" * 40], 10, batch=True) == pytest.approx(expected / 2)
    assert server.requests == []  # estimating and rendering send nothing


def test_the_key_never_leaks_into_errors_or_logs(server, caplog):
    server.script("ECHO", ["echo_key"])  # a server that repeats the key in its error message
    caplog.set_level(logging.DEBUG)
    backend = make(server)
    with pytest.raises(MiaError) as refused:  # a 401 stops the run (see test_claude_cli for the CLI)
        backend.generate_text(["ECHO", "other", "third"], 5, Sampling())
    assert "HTTP 401 authentication_error: invalid key [redacted]" in refused.value.message
    assert KEY not in refused.value.message and KEY not in caplog.text
    assert KEY not in str(backend.describe())
    assert len(server.message_requests()) == 1  # the other two were never sent


@pytest.mark.parametrize("answer, prefix, expected", [
    ("Here is the continuation:\n\nof the people", "government", "of the people"),
    ("Sure! Here's the continuation of the text:\nby the people", "x", "by the people"),
    ("Continuation: for the people", "x", "for the people"),
    ("<continuation>\nshall not perish\n</continuation>", "x", "shall not perish"),
    ("We the People of the United States", "We the People", " of the United States"),
    ("plain answer", "x", "plain answer"),
    ("Here we go again: not a preamble\nsecond line", "x", "Here we go again: not a preamble\nsecond line"),
])
def test_strip_preamble(answer, prefix, expected):
    assert strip_preamble(answer, prefix) == expected


@pytest.mark.parametrize("prefix, continuation, expected", [
    ("in Order", "to form", " to form"),
    ("in Order ", "to form", "to form"),
    ("the People", ", in Order", ", in Order"),
    ("(see", " below", " below"),
    ("quote \"", "text", "text"),
    ("x", "", ""),
])
def test_join_continuation(prefix, continuation, expected):
    assert join_continuation(prefix, continuation) == expected
