"""Tokenizers for mia: a fast (``tokenizers``) wrapper and a SentencePiece wrapper.

Both satisfy ``mia_core.types.Tokenizer``: they never add special tokens when encoding;
the backend decides whether the model wants a BOS in front. Loading a tokenizer never
loads model weights (``mia prefix`` only needs this module).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.formats.safeio import write_atomically
from mia_core.progress import note
from mia_hf import sources


def _clean(ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Plain int lists without padding sentinels (negative ids, as in -1 padded arrays)."""
    return [[int(i) for i in row if int(i) >= 0] for row in ids]


class HFTokenizer:
    """A transformers tokenizer, driven through its Rust backend for batch speed when it has
    one (nearly all do); otherwise through the Python tokenizer API."""

    def __init__(self, name: str, tokenizer: Any, source: str = "") -> None:
        self.name = name
        self.source = source
        self.hf = tokenizer  # the transformers tokenizer, for code that needs it
        self._rust = getattr(tokenizer, "backend_tokenizer", None)
        self.vocab_size: int = len(tokenizer)
        self.eos_id: int | None = tokenizer.eos_token_id
        self.bos_id: int | None = tokenizer.bos_token_id
        self.pad_id: int | None = tokenizer.pad_token_id
        # Whether the model was trained with BOS in front: its tokenizer adds one by default.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos: bool = self.bos_id is not None and len(probe) > 0 and probe[0] == self.bos_id
        # Document text is text: a literal "<eos>" or "<s>" in it is not a control token.
        if self._rust is not None:
            self._rust.encode_special_tokens = True

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._rust is None:
            return self.hf(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
        encodings = self._rust.encode_batch_fast(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        if self._rust is None:
            return self.hf.batch_decode(_clean(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return self._rust.decode_batch(_clean(ids), skip_special_tokens=False)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int] | None:
        """``messages`` through the tokenizer's chat template, ending with the assistant's turn
        opened (``add_generation_prompt``), as token ids; None when the tokenizer has no template.
        Control tokens written by the template (``<|im_start|>``, ``<bos>``...) are parsed as such
        here, unlike in document text (``encode_batch``)."""
        if not getattr(self.hf, "chat_template", None):
            return None
        try:
            rendered = self.hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template is a program (jinja): any failure is the template's
            raise MiaError(f"the chat template of {self.name} failed on a user message: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if self._rust is None:
            return list(self.hf(rendered, add_special_tokens=False)["input_ids"])
        self._rust.encode_special_tokens = False
        try:
            return list(self._rust.encode(rendered, add_special_tokens=False).ids)
        finally:
            self._rust.encode_special_tokens = True

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the model type, vocabulary, merges and added tokens."""
        if self._rust is None:  # Python tokenizer: its vocabulary (ids are part of it)
            blob = json.dumps(sorted(self.hf.get_vocab().items(), key=lambda kv: kv[1]), ensure_ascii=False)
            return hashlib.sha256(blob.encode("utf-8")).hexdigest()
        state = json.loads(self._rust.to_str())
        model = state.get("model", {})
        payload = {
            "type": model.get("type"),
            "vocab": model.get("vocab"),
            "merges": model.get("merges"),
            "added": sorted((t["id"], t["content"]) for t in state.get("added_tokens") or []),
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size})"


class SentencePieceTokenizer:
    """A SentencePiece model used directly (what the slow LlamaTokenizer does)."""

    def __init__(self, name: str, model_file: str | Path, source: str = "") -> None:
        import sentencepiece as spm

        self.name = name
        self.source = source
        self.model_file = str(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self.vocab_size: int = self.sp.get_piece_size()
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else None
        self.adds_bos = self.bos_id is not None  # LlamaTokenizer adds BOS by default
        self.fingerprint = hashlib.sha256(self.sp.serialized_model_proto()).hexdigest()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.sp.decode(_clean(ids))

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.name!r}, vocab_size={self.vocab_size})"


# --- loading ----------------------------------------------------------------------------------

def _auto_tokenizer(location: str | Path, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(location), **kwargs)


def gguf_tokenizer_dir(name: str) -> Path:
    """The cached tokenizer folder of a GGUF model, converting the GGUF once if needed."""

    def build(tmp: Path) -> None:
        gguf = sources.gguf_file(name)
        note(f"mia: converting {name}'s GGUF tokenizer once (under a minute); cached in {tmp.parent}")
        _auto_tokenizer(gguf.parent, gguf_file=gguf.name).save_pretrained(str(tmp))

    return sources.build_atomically(sources.gguf_cache_dir(name) / "tokenizer", build)


def _hub_sentencepiece_file(ident: str) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(ident, "tokenizer.model", local_files_only=sources.local_files_only())
    except Exception as exc:  # huggingface_hub raises several types for "not in cache"
        raise MiaError(sources.offline_message(ident)) from exc


FINGERPRINT_FILE = "mia_fingerprint_v1.txt"  # bump the version whenever HFTokenizer.fingerprint changes


def _reuse_fingerprint(tok: HFTokenizer, path: Path) -> HFTokenizer:
    """Hashing a 262k-token vocabulary takes seconds: do it once per (immutable, versioned)
    cache folder and keep the result beside the tokenizer files."""
    try:
        tok.__dict__["fingerprint"] = path.read_text().strip()  # where cached_property stores it
        return tok
    except OSError:
        pass
    try:
        write_atomically(path, tok.fingerprint.encode())
    except OSError:  # a read-only cache: the fingerprint is simply computed each time
        pass
    return tok


def load_tokenizer(source: sources.Source) -> HFTokenizer | SentencePieceTokenizer:
    """Load the tokenizer of ``source`` (never the weights)."""
    if source.kind == "gguf":
        folder = gguf_tokenizer_dir(source.name)
        tok = HFTokenizer(source.name, _auto_tokenizer(folder), source.describe())
        return _reuse_fingerprint(tok, folder / FINGERPRINT_FILE)
    if source.sentencepiece:
        if source.kind == "hub":
            model_file = _hub_sentencepiece_file(source.location)
        else:
            model_file = str(Path(source.location) / "tokenizer.model")
        return SentencePieceTokenizer(source.name, model_file, source.describe())
    if source.kind == "hub":
        try:
            tok = _auto_tokenizer(source.location, local_files_only=sources.local_files_only())
        except OSError as exc:
            raise MiaError(sources.offline_message(source.location)) from exc
    else:
        try:
            tok = _auto_tokenizer(source.location)
        except (OSError, ValueError) as exc:
            raise MiaError(f"no usable tokenizer in folder {source.location}: {str(exc).splitlines()[0]}") from exc
    return HFTokenizer(source.name, tok, source.describe())
