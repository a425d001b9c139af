"""The llama.cpp backend on tiny GGUF models written by the test (gguf package, float32 weights),
against mia-hf's ``HFCausalLM`` on the SAME file (transformers loads it with ``gguf_file=``).

Tolerance: float32 weights on both sides, yet llama.cpp's CPU kernels are not float32-exact (its KV
cache is float16, and its logits differ from transformers' by up to 1.2e-2 already at the first
position of these models, logits of magnitude ~13: measured). Log-probs, means and standard
deviations are held to ``GGUF_ATOL`` = 0.05 (2.5x the largest difference measured, 0.02), their mean
difference to 0.005; greedy tokens equal except at a near-tie (``greedy_mismatches`` with gap 0.05).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by bash install.sh --llamacpp")
pytest.importorskip("mia_llamacpp")

from gguf_tiny import BOS, EOS, write_tiny_llama  # noqa: E402
from mia_llamacpp.loading import make_backend, make_tokenizer  # noqa: E402

GGUF_ATOL, GGUF_MEAN_ATOL = 0.05, 0.005
from run_equality import greedy_mismatches  # noqa: E402

from mia_core.errors import MiaError  # noqa: E402
from mia_core.types import Sampling, capabilities  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {"plain": write_tiny_llama(folder / "tiny.gguf", seed=0),
            "eos": write_tiny_llama(folder / "tiny-eos.gguf", seed=1, eos_boost=6.0),
            "nobos": write_tiny_llama(folder / "tiny-nobos.gguf", seed=2, add_bos=False)}


def llama(path, **options):
    return make_backend(f"llamacpp:{path}", {"threads": 1, **options})


def hf_twin(path, add_bos=None):
    """mia-hf's backend on the same GGUF file, with the GGUF's tokenizer (the ids are the same)."""
    import torch
    from mia_hf.backend import HFCausalLM
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return HFCausalLM("hf-twin", model, make_tokenizer(f"llamacpp:{path}"), add_bos=add_bos)


def random_rows(n, length, seed=0, low=3, high=339):
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, size=length).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def pair(tiny):
    return llama(tiny["plain"]), hf_twin(tiny["plain"])


def test_backend_contract(pair):
    lc, _ = pair
    assert capabilities(lc) == {"generate", "score"}
    described = lc.describe()
    assert described["bos_prepended"] is True and described["max_context"] == 256
    assert lc.tokenizer.bos_id == BOS and lc.tokenizer.eos_id == EOS and lc.tokenizer.vocab_size == 339


def test_tokenizer_round_trip(tiny):
    tok = make_tokenizer(f"llamacpp:{tiny['plain']}")
    ids = tok.encode_batch(["the People of the United States", "zq</s>"])
    assert ids[0][:2] == [338, 331]  # "▁", "t": pieces (no "▁t"/"▁th" to merge through), no BOS in front
    assert EOS not in ids[1]  # a control token's text in a document is text
    assert tok.decode_batch(ids)[0].strip() == "the People of the United States"


def test_logprobs_match_hf(pair):
    lc, hf = pair
    rows = random_rows(5, 40) + [random_rows(1, 7, seed=3)[0]]
    starts = [0, 5, 39, 12, 1, 6]
    ours, theirs = lc.score(rows, starts), hf.score(rows, starts)
    for a, b in zip(ours, theirs, strict=True):
        for field in ("logprob", "mean", "std"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=GGUF_ATOL)
        assert not np.isnan(a.logprob).any() and not np.isnan(a.mean).any()
    diff = np.concatenate([np.abs(a.logprob - b.logprob) for a, b in zip(ours, theirs, strict=True)])
    assert diff.mean() < GGUF_MEAN_ATOL
    agree = np.mean(np.concatenate([a.argmax == b.argmax for a, b in zip(ours, theirs, strict=True)]))
    assert agree == 1.0


def test_distribution_false_and_no_bos(tiny):
    lc, hf = llama(tiny["nobos"]), hf_twin(tiny["nobos"], add_bos=False)
    assert lc.bos_prepended is False
    rows = random_rows(3, 12, seed=4)
    ours, theirs = lc.score(rows, 0, distribution=False), hf.score(rows, 0, distribution=False)
    for a, b in zip(ours, theirs, strict=True):
        assert np.isnan(a.logprob[0]) and a.argmax[0] == -1  # position 0 has no context
        assert np.isnan(a.mean).all() and np.isnan(a.std).all()
        np.testing.assert_allclose(a.logprob[1:], b.logprob[1:], rtol=0, atol=GGUF_ATOL)


def test_greedy_matches_hf_batched_and_single(pair):
    lc, hf = pair
    prefixes = random_rows(6, 10, seed=5) + [random_rows(1, 3, seed=6)[0]]
    ours = lc.generate(prefixes, 20, Sampling())
    assert ours == lc.generate(prefixes, 20, Sampling())  # deterministic
    assert [lc.generate([p], 20, Sampling())[0] for p in prefixes] == ours  # batch shape changes nothing
    assert greedy_mismatches(lc, prefixes, ours, hf.generate(prefixes, 20, Sampling()), gap=GGUF_ATOL) == []


def test_eos_rule(tiny):
    lc, hf = llama(tiny["eos"]), hf_twin(tiny["eos"])
    prefixes = random_rows(12, 6, seed=7)
    rows = lc.generate(prefixes, 16, Sampling())
    short = [(p, r) for p, r in zip(prefixes, rows, strict=True) if len(r) < 16]
    assert short, "the EOS-boosted model should end some rows early"
    assert all(EOS not in r for r in rows)
    for prefix, row in short:  # a short row ended because EOS was the greedy choice right after it
        scores = lc.score([prefix + row + [EOS]], len(prefix) + len(row))[0]
        assert scores.argmax[-1] == EOS
    assert greedy_mismatches(lc, prefixes, rows, hf.generate(prefixes, 16, Sampling()), gap=GGUF_ATOL) == []


def test_sampling_reproducible_by_seed(pair):
    lc, _ = pair
    prefixes = random_rows(8, 8, seed=8)
    warm = Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=11)
    first = lc.generate(prefixes, 16, warm)
    assert lc.generate(prefixes, 16, warm) == first
    assert lc.generate(prefixes, 16, Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=12)) != first
    greedy = lc.generate(prefixes, 16, Sampling())
    assert lc.generate(prefixes, 16, Sampling(temperature=1.0, top_k=1, seed=3)) == greedy


def test_sampled_logprob_matches_hf(pair):
    lc, hf = pair
    rows = random_rows(3, 20, seed=9)
    scheme = Sampling(temperature=0.7, top_k=40, top_p=0.9)
    for a, b in zip(lc.score(rows, 5, sampling=scheme), hf.score(rows, 5, sampling=scheme), strict=True):
        finite = np.isfinite(b.sampled_logprob)
        assert np.array_equal(finite, np.isfinite(a.sampled_logprob))
        # at temperature 0.7 a difference of logits grows by 1/0.7
        np.testing.assert_allclose(a.sampled_logprob[finite], b.sampled_logprob[finite], rtol=0, atol=2 * GGUF_ATOL)


def test_small_cache_splits_batches(tiny, pair):
    """A batch whose tokens overflow the KV cache is decoded in groups, with the same results."""
    small = llama(tiny["plain"], n_ctx=64, n_batch=16)
    lc, _ = pair
    prefixes = random_rows(9, 10, seed=10)
    assert small.generate(prefixes, 12, Sampling()) == lc.generate(prefixes, 12, Sampling())
    rows = random_rows(7, 30, seed=12)
    for a, b in zip(small.score(rows, 2), lc.score(rows, 2), strict=True):
        np.testing.assert_allclose(a.logprob, b.logprob, rtol=0, atol=1e-4)  # same engine, other grouping


def test_scored_positions_after_a_call_without_outputs(tiny, pair):
    """A start past the first llama_decode call: that call returns no logits rows, and the rows after it
    are scored as in one call."""
    small = llama(tiny["plain"], n_batch=16)
    lc, _ = pair
    rows = random_rows(2, 40, seed=13)
    for a, b in zip(small.score(rows, 30), lc.score(rows, 30), strict=True):
        assert len(a.logprob) == 10 and not np.isnan(a.logprob).any()
        for field in ("logprob", "mean", "std"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=1e-4)


def test_bad_inputs_are_one_line(tiny, tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("hello")
    cases = [(f"llamacpp:{tmp_path / 'missing.gguf'}", {}, "no such GGUF file"),
             (f"llamacpp:{not_gguf}", {}, "is not a GGUF file"),
             (f"llamacpp:{tmp_path}", {}, "is not a file"),
             (f"llamacpp:{tiny['plain']}", {"threads": 0}, "threads must be")]
    for name, options, message in cases:
        with pytest.raises(MiaError, match=message):
            make_backend(name, options)
    small = llama(tiny["plain"], n_ctx=32)
    with pytest.raises(MiaError, match="exceeds .* context of 32 tokens"):
        small.generate(random_rows(1, 20), 20, Sampling())
    with pytest.raises(MiaError, match="token ids must lie"):
        small.score([[5, 99999]], 0)


def test_cli_error_is_one_line(tmp_path, runner):
    from mia_core.cli import cli

    result = runner.invoke(cli, ["prefix", "--model", f"llamacpp:{tmp_path / 'nope.gguf'}", "--dataset", "corpus",
                                 "--size", "2", "--out", str(tmp_path / "m")])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "no such GGUF file" in lines[-1]
    assert "Traceback" not in result.output
