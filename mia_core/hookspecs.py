"""Hook specifications: what a mia plugin can register.

Every hook is a register-callback hook: the plugin calls ``register(name, factory,
description=..., aliases=..., match=..., **info)`` once per thing it provides, and the
core owns naming, duplicates and error messages (see ``mia_core.registry``).
A factory may be a callable or a lazy ``"module:attr"`` string, so that registering
a model never imports torch.
"""

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("mia")
hookimpl = pluggy.HookimplMarker("mia")

Register = Callable[..., None]


@hookspec
def mia_register_datasets(register: Register) -> None:
    """Register dataset loaders: ``factory(name, options) -> Dataset``."""


@hookspec
def mia_register_tokenizers(register: Register) -> None:
    """Register tokenizers: ``factory(name, options) -> Tokenizer``."""


@hookspec
def mia_register_backends(register: Register) -> None:
    """Register generation/scoring backends: ``factory(name, options) -> Backend``."""
