"""mia plugin ``mia-vllm``: generation and teacher-forced scoring on vLLM.

Registers ``vllm:gemma-3-270m``, ``vllm:smollm2-135m`` (the embedded models' cached
safetensors folders, made by mia-hf) and ``vllm:ID`` (a hub id in the local Hugging Face
cache, or a local folder) as backends and as tokenizers (the same tokenizers as mia-hf's,
so maps made with ``gemma-3-270m`` serve ``vllm:gemma-3-270m`` unchanged). Importing this
module imports neither vLLM nor torch: the factories are lazy ``"module:attr"`` strings.
"""

from collections.abc import Callable

from mia_core import hookimpl

PREFIX = "vllm:"
CAPABILITIES = ("generate", "score")
MODELS = {
    "vllm:gemma-3-270m": "Gemma 3 270M base on vLLM (the safetensors folder mia-hf converts from the GGUF)",
    "vllm:smollm2-135m": "SmolLM2-135M-Instruct on vLLM (the safetensors folder mia-hf converts from the GGUF)",
}
OPEN_ENDED = ("vllm:ID", "any causal LM vLLM supports: vllm:HUB_ID (local HF cache, offline) or vllm:FOLDER")


def _open_ended(name: str) -> bool:
    return name.lower().startswith(PREFIX) and len(name) > len(PREFIX)


def _register_all(register: Callable[..., None], factory: str, **info: object) -> None:
    for name, description in MODELS.items():
        register(name, factory, description=description, **info)
    register(OPEN_ENDED[0], factory, description=OPEN_ENDED[1], match=_open_ended, **info)


@hookimpl
def mia_register_tokenizers(register: Callable[..., None]) -> None:
    _register_all(register, "mia_vllm.loading:make_tokenizer")


@hookimpl
def mia_register_backends(register: Callable[..., None]) -> None:
    _register_all(register, "mia_vllm.loading:make_backend", capabilities=CAPABILITIES)
