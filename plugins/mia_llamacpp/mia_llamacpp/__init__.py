"""mia plugin ``mia-llamacpp``: GGUF models on llama.cpp (llama-cpp-python), generation and scoring.

Registering imports nothing heavy: factories are lazy ``"module:attr"`` strings, and llama_cpp
loads only when a model or tokenizer is created.
"""

from collections.abc import Callable

from mia_core import Option, hookimpl

CAPABILITIES = ("generate", "score")  # LlamaCppLM has both methods
PREFIX = "llamacpp:"
MODELS = {
    "llamacpp:gemma-3-270m": "Gemma 3 270M base on llama.cpp: the embedded Q4_K_M GGUF, computed with its "
                             "quantized weights (not dequantized)",
    "llamacpp:smollm2-135m": "SmolLM2-135M-Instruct on llama.cpp: the embedded Q4_1 GGUF",
}
OPEN_ENDED = ("llamacpp:PATH.gguf", "any GGUF file llama.cpp can run, on the CPU")
OPTIONS = (
    Option("threads", int, None, "CPU threads for llama.cpp (auto: every CPU this process may use)"),
    Option("n_ctx", int, 16384, "KV cache cells shared by a batch's sequences; a longer batch is split, "
                                "a longer sequence refused (the model's context is min(n_ctx, trained))"),
    Option("n_batch", int, 512, "tokens per llama_decode call (llama.cpp's n_batch)"),
    Option("add_bos", bool, None, "prepend BOS; auto: as the GGUF says (tokenizer.ggml.add_bos_token)"),
)


def _open_ended(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def _register_all(register: Callable[..., None], factory: str, **keywords: object) -> None:
    for name, description in MODELS.items():
        register(name, factory, description=description, options=OPTIONS, **keywords)
    register(OPEN_ENDED[0], factory, description=OPEN_ENDED[1], match=_open_ended, options=OPTIONS, **keywords)


@hookimpl
def mia_register_tokenizers(register: Callable[..., None]) -> None:
    _register_all(register, "mia_llamacpp.loading:make_tokenizer")


@hookimpl
def mia_register_backends(register: Callable[..., None]) -> None:
    _register_all(register, "mia_llamacpp.loading:make_backend", capabilities=CAPABILITIES)
