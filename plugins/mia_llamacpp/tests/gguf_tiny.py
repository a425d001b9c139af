"""Tiny Llama-architecture GGUF models written with the ``gguf`` package (seeded, offline, < 1 MB).

Weights are float32 so that llama.cpp and transformers (which loads the same file with
``gguf_file=``) compute the same function up to float rounding. The vocabulary is a SentencePiece
one (``tokenizer.ggml.model = llama``): <unk>, <s>, </s>, the 256 byte tokens, then words.
``eos_boost`` scales the EOS row of the output matrix so that greedy generation ends early
(the EOS rule's tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ("the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by",
         "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had",
         "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if",
         "more", "when", "will", "would", "who", "so", "no", "People", "United", "States", "Order")
N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, N_CTX = 64, 4, 2, 128, 2, 256
BOS, EOS = 1, 2


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types (1 normal, 2 unknown, 3 control, 6 byte) in id order."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    pieces = ["\u2581" + w for w in WORDS] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u2581"]
    for rank, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(1)
        scores.append(-float(rank))
    return tokens, scores, types


def _tensors(vocab: int, rng: np.random.Generator, eos_boost: float) -> dict[str, np.ndarray]:
    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    head_dim = N_EMBD // N_HEAD
    out = {"token_embd.weight": w(vocab, N_EMBD, scale=1.0), "output_norm.weight": 1 + w(N_EMBD, scale=0.1),
           "output.weight": w(vocab, N_EMBD, scale=0.5)}
    out["output.weight"][EOS] *= eos_boost
    for i in range(N_LAYER):
        out |= {f"blk.{i}.attn_norm.weight": 1 + w(N_EMBD, scale=0.1),
                f"blk.{i}.attn_q.weight": w(N_EMBD, N_EMBD), f"blk.{i}.attn_k.weight": w(N_HEAD_KV * head_dim, N_EMBD),
                f"blk.{i}.attn_v.weight": w(N_HEAD_KV * head_dim, N_EMBD),
                f"blk.{i}.attn_output.weight": w(N_EMBD, N_EMBD), f"blk.{i}.ffn_norm.weight": 1 + w(N_EMBD, scale=0.1),
                f"blk.{i}.ffn_gate.weight": w(N_FF, N_EMBD), f"blk.{i}.ffn_up.weight": w(N_FF, N_EMBD),
                f"blk.{i}.ffn_down.weight": w(N_EMBD, N_FF)}
    return out


def write_tiny_llama(path: str | Path, seed: int = 0, eos_boost: float = 1.0, add_bos: bool = True) -> Path:
    """A tiny random Llama GGUF at ``path`` (float32 weights, SentencePiece vocabulary)."""
    import gguf

    path = Path(path)
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"tiny-llama-{seed}")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(False)
    for name, array in _tensors(len(tokens), np.random.default_rng(seed), eos_boost).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
