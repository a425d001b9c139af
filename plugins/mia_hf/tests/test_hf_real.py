"""The real models shipped by PyPI packages (gemma-3-270m, smollm2-135m) through mia_hf."""

import pytest
from mia_hf import loading, sources

from mia_core.types import Sampling

pytestmark = pytest.mark.real_model

PREAMBLE = (
    "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure "
    "domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the "
    "Blessings of Liberty to ourselves and our Posterity, do ordain and establish this Constitution for the "
    "United States of America."
)
TEXTS = [
    "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file except",
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
    "This program is free software: you can redistribute it and/or modify it under the terms of the",
]


def test_gemma_reproduces_the_preamble(gemma_backend):
    """From its first ten tokens gemma-3-270m continues the preamble verbatim, greedily, and the
    teacher-forced argmax along that continuation is the continuation (one forward pass)."""
    tok = gemma_backend.tokenizer
    ids = tok.encode_batch([PREAMBLE])[0]
    prefix = ids[:10]  # "We the People of the United States, in Order"
    out = gemma_backend.generate([prefix], 30, Sampling())[0]
    assert out == ids[10:40]
    assert tok.decode_batch([out])[0].startswith(" to form a more perfect Union, establish Justice, insure")
    scores = gemma_backend.score([prefix + out], start=10)[0]
    assert scores.argmax.tolist() == out
    assert gemma_backend._head_ok  # LM head on the scored positions only, softcap included
    info = gemma_backend.describe()
    assert info["bos_prepended"] and info["source"] == "gguf:gemma-3-270m" and info["parameters"] > 2e8


def test_gemma_batched_greedy_equals_single(gemma_backend):
    prefixes = [ids[:8] for ids in gemma_backend.tokenizer.encode_batch(TEXTS[:3])]
    batched = gemma_backend.generate(prefixes, 8, Sampling())
    assert batched == [gemma_backend.generate([p], 8, Sampling())[0] for p in prefixes]


def test_gemma_model_cache_is_reused(gemma_backend, monkeypatch):
    """The dequantized folder exists after the first load; later loads never touch the GGUF."""
    monkeypatch.setattr(sources, "gguf_file", lambda name: pytest.fail("GGUF dequantized twice"))
    folder = loading.gguf_model_dir("gemma-3-270m")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert folder.parent == sources.gguf_cache_dir("gemma-3-270m")


def test_smollm2_generates(smollm2_backend, gemma_tokenizer):
    tok = smollm2_backend.tokenizer
    prefixes = [ids[:6] for ids in tok.encode_batch(TEXTS[:2])]
    out = smollm2_backend.generate(prefixes, 8, Sampling())
    assert all(0 < len(row) <= 8 for row in out)
    assert all(isinstance(t, str) and t for t in tok.decode_batch(out))
    assert smollm2_backend.describe()["class"] == "LlamaForCausalLM"
    assert tok.fingerprint != gemma_tokenizer.fingerprint
    scores = smollm2_backend.score([p + o for p, o in zip(prefixes, out, strict=True)], 6)
    assert [s.argmax.tolist() for s in scores] == out
