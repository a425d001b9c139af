"""Tiny tokenizers and randomly initialised causal LMs built offline, for tests.

Everything is deterministic for a given seed and takes well under two seconds.
The folders are ordinary Hugging Face folders, so mia loads them by path
(``registry.backends.create(str(path))`` / ``mia prompt --model PATH``).

Functions
---------
``training_text() -> str``
    The fixed text the BPE tokenizer is trained on (stdlib Zen of Python + a few
    sentences with digits, punctuation and non-ASCII characters).
``make_tiny_tokenizer(path=None, vocab_size=400) -> PreTrainedTokenizerFast``
    A byte-level BPE tokenizer (any text encodes; decode(encode(x)) == x) with
    ``<s>`` (BOS, id 1), ``</s>`` (EOS, id 2) and ``<pad>`` (id 0). Like Llama/Gemma it
    adds BOS when asked for special tokens. Saved to ``path`` when given.
``make_tiny_llama(path, seed=0, vocab_size=400, hidden_size=32, layers=2) -> Path``
    A LlamaForCausalLM (2 layers, hidden 32, 4 heads, 2 KV heads, context 256) with the
    tiny tokenizer, saved (safetensors) to ``path``; returns ``path``.
``make_tiny_gemma(path, seed=0, vocab_size=400, hidden_size=32, layers=2) -> Path``
    The same with a GemmaForCausalLM (head_dim 8).
``load_tiny(path) -> (model, tokenizer)``
    Loads one of the folders above with transformers directly (fp32, eval mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

_EXTRA_TEXT = """\
We the People of the United States, in Order to form a more perfect Union, establish Justice,
insure domestic Tranquility, provide for the common defence, promote the general Welfare.
Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file
except in compliance with the License. 0123456789 -- 3.14159, 2.71828; [x] {y} (z) <tag/> #1 @2 $3 %4
Ünïcödé façade naïve coöperate — “quotes” ‘single’ … 東京 Zürich ßpaß 🙂
"""


def training_text() -> str:
    """The fixed training text of the tiny tokenizer."""
    import codecs
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this as zen

    return codecs.decode(zen.s, "rot13") + "\n" + _EXTRA_TEXT


def make_tiny_tokenizer(path: str | Path | None = None, vocab_size: int = 400) -> Any:
    """Train a small byte-level BPE tokenizer; save it to ``path`` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = training_text()
    tok.train_from_iterator([line for line in text.splitlines() if line] * 3, trainer=trainer)
    # Add BOS in front when special tokens are requested, as Llama and Gemma do.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def _save_model(model_cls: Any, config: Any, path: str | Path, seed: int, tokenizer: Any) -> Path:
    import torch
    from transformers.utils import logging as hf_logging

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in test output
    try:
        model.save_pretrained(str(path))
    finally:
        hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(path))
    return path


def _common(tokenizer: Any, hidden_size: int, layers: int) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.3,  # large enough that greedy outputs vary with the prefix
    )


def make_tiny_llama(path: str | Path, seed: int = 0, vocab_size: int = 400, hidden_size: int = 32,
                    layers: int = 2) -> Path:
    """A randomly initialised tiny LlamaForCausalLM + tokenizer saved to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer(vocab_size=vocab_size)
    config = LlamaConfig(**_common(tokenizer, hidden_size, layers))
    return _save_model(LlamaForCausalLM, config, path, seed, tokenizer)


def make_tiny_gemma(path: str | Path, seed: int = 0, vocab_size: int = 400, hidden_size: int = 32,
                    layers: int = 2) -> Path:
    """A randomly initialised tiny GemmaForCausalLM + tokenizer saved to ``path``."""
    from transformers import GemmaConfig, GemmaForCausalLM

    tokenizer = make_tiny_tokenizer(vocab_size=vocab_size)
    config = GemmaConfig(head_dim=hidden_size // 4, **_common(tokenizer, hidden_size, layers))
    return _save_model(GemmaForCausalLM, config, path, seed, tokenizer)


def load_tiny(path: str | Path) -> tuple[Any, Any]:
    """Load a tiny model folder with transformers directly: ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def windows_map(folder: str | Path, backend: Any, ids: list[int], starts: list[int], prefix: int, suffix: int,
                labels: list[str] | None = None, suffixes: list[list[int]] | None = None) -> Path:
    """A prefix map of windows of ``ids`` (prefix at each start, the next ``suffix`` tokens as its true
    suffix, or the ``suffixes`` given) in ``backend``'s tokenizer; returns its folder."""
    from map_fixtures import write_map

    truths = suffixes if suffixes is not None else [ids[a + prefix:a + prefix + suffix] for a in starts]
    return write_map(folder, [ids[a:a + prefix] for a in starts], truths, suffix_tokens=suffix,
                     tokenizer=backend.tokenizer.name, fingerprint=backend.tokenizer.fingerprint, labels=labels,
                     ids=[f"z{i}" for i in range(len(starts))], starts=starts)
