"""mia plugin: Mamba models, on CPU through transformers and on CUDA through mamba-ssm.

Registers ``mamba-3b``, ``mamba-2.8b-hf`` and ``mamba:ID`` / Mamba checkpoint folders as
tokenizers and as backends (capabilities ``generate`` and ``score``). Importing this module
imports neither torch nor transformers: the factories are lazy ``"module:attr"`` strings.
"""

from mia_core import hookimpl
from mia_mamba.names import KNOWN, is_mamba_folder

OPEN_NAME = "mamba:ID"
_DESCRIPTIONS = {
    "mamba-3b": f"Mamba 2.8B trained on SlimPajama ({KNOWN['mamba-3b']}, mamba_ssm layout)",
    "mamba-2.8b-hf": f"Mamba 2.8B trained on the Pile ({KNOWN['mamba-2.8b-hf']}, transformers layout)",
    OPEN_NAME: "any Mamba checkpoint: mamba:HUB_ID, mamba:FOLDER, or a folder whose config is a Mamba one",
}


def _register(register, factory: str, **info) -> None:  # noqa: ANN001
    for name, description in _DESCRIPTIONS.items():
        if name == OPEN_NAME:  # asked before mia-hf's "any folder" predicate
            register(name, factory, description=description, match=is_mamba_folder, match_priority=10, **info)
        else:
            register(name, factory, description=description, **info)


@hookimpl
def mia_register_tokenizers(register) -> None:  # noqa: ANN001
    _register(register, "mia_mamba.factory:make_tokenizer")


@hookimpl
def mia_register_backends(register) -> None:  # noqa: ANN001
    _register(register, "mia_mamba.factory:make_backend", capabilities=("generate", "score"))
