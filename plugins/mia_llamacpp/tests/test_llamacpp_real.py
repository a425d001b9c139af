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

# Mean |Δ log p| over the scored positions, and the largest single one. Measured on this machine
# (docs/models.md, "Agreement"): mean 0.12, max 1.61 nats over 8 corpus rows x 63 positions; raw
# llama-cpp-python (Llama(logits_all=True)) is as far from HF (mean 0.06-0.18 per row), and llama.cpp's
# flash-attention and plain-attention paths differ from each other by up to 1.5 nats at single positions.
GGUF_MEAN_LOGPROB_ATOL = 0.2
GGUF_MAX_LOGPROB_ATOL = 2.5
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
def test_gguf_vocabulary_equals_mia_hf(model):
    """The GGUF's vocabulary is mia-hf's piece for piece, with the same BOS/EOS; llama.cpp segments some
    corpus documents differently (whitespace runs), each segmentation decoding to the same text. Hence
    llamacpp:MODEL tokenizes with mia-hf's tokenizer, and shares its maps and fingerprint."""
    from mia_llamacpp import files
    from mia_llamacpp.tokenizer import GGUFTokenizer

    gguf = GGUFTokenizer(model, files.gguf_path(f"llamacpp:{model}"))
    hf = registry.tokenizers.create(model)
    assert (gguf.bos_id, gguf.eos_id, gguf.vocab_size, gguf.adds_bos) == (hf.bos_id, hf.eos_id, hf.vocab_size,
                                                                             hf.adds_bos)
    # Gemma's GGUF spells its 30 whitespace-run pieces with spaces where tokenizer.json has "▁" (measured).
    pieces = [t.decode("utf-8", "replace").replace(" ", "▁") for t in gguf.model.token_texts()]
    assert pieces == [p.replace(" ", "▁") for p in hf.hf.convert_ids_to_tokens(list(range(hf.vocab_size)))]
    texts = corpus_texts()
    mine, theirs = gguf.encode_batch(texts), hf.encode_batch(texts)
    differing = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    assert len(differing) < len(texts) // 2  # measured: gemma 2 of 130 documents, smollm2 42
    assert hf.decode_batch([mine[i] for i in differing]) == hf.decode_batch([theirs[i] for i in differing])
    shared = registry.tokenizers.create(f"llamacpp:{model}")
    assert shared.fingerprint == hf.fingerprint and shared.encode_batch(texts[:5]) == theirs[:5]


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


def test_gemma_batched_greedy_independent_of_companions(llama_gemma):
    """A row's greedy tokens do not depend on what the other rows of its batch hold (each sequence has
    its own seq id in the shared KV cache), and a batch decodes the same twice. They may depend on the
    batch's size and the row's place in it: llama.cpp 0.3.36 tiles its quantized matmul over the
    tokens of a decode call, and on this CPU a token in some tiles gets logits up to 1.69 apart from
    the same token decoded alone (each as far from HF fp32 as the other; docs/models.md)."""
    tok = llama_gemma.tokenizer
    prefixes = [ids[:16] for ids in tok.encode_batch(corpus_texts()[:6])]
    batched = llama_gemma.generate(prefixes, 12, Sampling())
    companions = [prefixes[0]] + [prefixes[1]] * 5
    assert llama_gemma.generate(companions, 12, Sampling())[0] == batched[0]
    assert llama_gemma.generate(prefixes, 12, Sampling()) == batched
