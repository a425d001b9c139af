"""mia plugin: Mamba models, on CPU through transformers and on CUDA through mamba-ssm.

Registers ``mamba-3b``, ``mamba-2.8b-hf`` and ``mamba:ID`` / Mamba checkpoint folders as
tokenizers and as backends (capabilities ``generate`` and ``score``). Importing this module
imports neither torch nor transformers: the factories are lazy ``"module:attr"`` strings.
"""

from mia_core import Option, hookimpl
from mia_mamba.names import DEFAULT_TOKENIZER, KNOWN, is_mamba_folder

OPEN_NAME = "mamba:ID"
_DESCRIPTIONS = {
    "mamba-3b": f"Mamba 2.8B trained on SlimPajama ({KNOWN['mamba-3b']}, mamba_ssm layout)",
    "mamba-2.8b-hf": f"Mamba 2.8B trained on the Pile ({KNOWN['mamba-2.8b-hf']}, transformers layout)",
    OPEN_NAME: "any Mamba checkpoint: mamba:HUB_ID, mamba:FOLDER, or a folder whose config is a Mamba one",
}

TOKENIZER_OPTION = Option("tokenizer", str, None, f"the tokenizer (hub id or folder) when the checkpoint ships none "
                                                  f"(auto: {DEFAULT_TOKENIZER}, what Mamba models were trained with)")
# Declared once: the core checks and types them; `mia models --options mamba-3b` prints them.
BACKEND_OPTIONS = (
    Option("kernel", default="auto", choices=("auto", "cuda", "torch"),
           help="execution path: cuda (mamba-ssm), torch (transformers); auto: cuda when it can run"),
    Option("device", str, None, "auto (CUDA when present), cpu, cuda, cuda:N"),
    Option("dtype", default=None, choices=("float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "half"),
           help="auto: bfloat16 on CUDA, float32 on CPU"),
    TOKENIZER_OPTION,
    Option("bos", bool, False, "prepend the tokenizer's BOS (Mamba models were trained without one)"),
)


def _register(register, factory: str, **keywords) -> None:  # noqa: ANN001
    for name, description in _DESCRIPTIONS.items():
        if name == OPEN_NAME:  # asked before mia-hf's "any folder" predicate
            register(name, factory, description=description, match=is_mamba_folder, match_priority=10, **keywords)
        else:
            register(name, factory, description=description, **keywords)


@hookimpl
def mia_register_tokenizers(register) -> None:  # noqa: ANN001
    _register(register, "mia_mamba.factory:make_tokenizer", options=(TOKENIZER_OPTION,))


@hookimpl
def mia_register_backends(register) -> None:  # noqa: ANN001
    _register(register, "mia_mamba.factory:make_backend", capabilities=("generate", "score"),
              options=BACKEND_OPTIONS)
