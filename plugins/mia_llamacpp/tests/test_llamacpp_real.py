"""The embedded GGUF models on llama.cpp against mia-hf on the same files (real_model).

mia-hf dequantizes the GGUF into float32 transformers weights; llama.cpp computes with the quantized
weights themselves (Q4_K_M / Q4_1, activations quantized to 8 bits inside its dot products). The two
are therefore close, not equal: ``GGUF_LOGPROB_ATOL`` is the bound this test holds them to (see
docs/models.md for the measured differences).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by bash install.sh --llamacpp")
pytest.importorskip("mia_llamacpp")

from mia_core import registry  # noqa: E402
from mia_core.types import Sampling  # noqa: E402

pytestmark = pytest.mark.real_model

# Mean |Δ log p| over the scored positions, and the largest single one (measured on this machine:
# docs/models.md, "Agreement"), with a ~3x margin.
GGUF_MEAN_LOGPROB_ATOL = 0.05
GGUF_MAX_LOGPROB_ATOL = 1.0
PREAMBLE = (
    "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure "
    "domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the "
    "Blessings of Liberty to ourselves and our Posterity, do ordain and establish this Constitution for the "
    "United States of America."
)


def corpus_texts() -> list[str]:
    return [sample.text for sample in registry.datasets.create("corpus")]


@pytest.fixture(scope="module")
def llama_gemma():
    return registry.backends.create("llamacpp:gemma-3-270m", {})


@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_tokenizer_equals_mia_hf_on_the_corpus(model):
    """Same ids for every document of the embedded corpus, hence the same fingerprint (maps are shared)."""
    ours = registry.tokenizers.create(f"llamacpp:{model}")
    theirs = registry.tokenizers.create(model)
    texts = corpus_texts()
    assert len(texts) > 10
    mine, hf = ours.encode_batch(texts), theirs.encode_batch(texts)
    differing = [i for i, (a, b) in enumerate(zip(mine, hf, strict=True)) if a != b]
    assert differing == [], f"{len(differing)} of {len(texts)} documents tokenize differently: {differing[:5]}"
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (theirs.bos_id, theirs.eos_id, theirs.vocab_size)
    assert ours.adds_bos == theirs.adds_bos
    assert ours.fingerprint == theirs.fingerprint
    assert ours.decode_batch(mine[:20]) == theirs.decode_batch(hf[:20])


def test_gemma_reproduces_the_preamble(llama_gemma):
    tok = llama_gemma.tokenizer
    ids = tok.encode_batch([PREAMBLE])[0]
    out = llama_gemma.generate([ids[:10]], 30, Sampling())[0]
    assert out == ids[10:40]
    assert llama_gemma.score([ids[:10] + out], 10)[0].argmax.tolist() == out
    assert llama_gemma.describe()["bos_prepended"] is True


def test_gemma_logprobs_close_to_hf_fp32(llama_gemma, gemma_backend):
    tok = llama_gemma.tokenizer
    rows = [ids[:64] for ids in tok.encode_batch(corpus_texts()[:8])]
    ours, theirs = llama_gemma.score(rows, 1), gemma_backend.score(rows, 1)
    diff = np.concatenate([np.abs(a.logprob - b.logprob) for a, b in zip(ours, theirs, strict=True)])
    moments = np.concatenate([np.abs(a.mean - b.mean) for a, b in zip(ours, theirs, strict=True)])
    assert diff.mean() < GGUF_MEAN_LOGPROB_ATOL and diff.max() < GGUF_MAX_LOGPROB_ATOL, (diff.mean(), diff.max())
    assert moments.mean() < GGUF_MEAN_LOGPROB_ATOL


def test_gemma_batched_greedy_equals_single(llama_gemma):
    tok = llama_gemma.tokenizer
    prefixes = [ids[:16] for ids in tok.encode_batch(corpus_texts()[:6])]
    batched = llama_gemma.generate(prefixes, 12, Sampling())
    assert [llama_gemma.generate([p], 12, Sampling())[0] for p in prefixes] == batched
