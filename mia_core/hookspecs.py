"""Hook specifications: what a mia plugin can provide.

The three ``mia_register_*`` registries are register-callback hooks: the plugin calls
``register(name, factory, description=..., aliases=..., match=..., **info)`` once per thing
it provides, and the core owns naming, duplicates and error messages (see
``mia_core.registry``). A factory may be a callable or a lazy ``"module:attr"`` string, so
that registering a model never imports torch. ``mia_register_commands`` adds commands.
"""

from collections.abc import Callable
from typing import Any

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
    """Register models: ``factory(name, options) -> Backend`` (see ``mia_core.types``).
    ``capabilities=("generate", "score")`` promises, before loading, what the model does."""


@hookspec
def mia_register_commands(cli: Any) -> None:
    """Add commands to ``mia``: ``cli`` is a ``click.Group``; decorate with ``@cli.command()``.
    A name clashing with an existing command is refused (reported by ``mia plugins``)."""
