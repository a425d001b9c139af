"""Hook specifications: what a mia plugin can provide.

The three ``mia_register_*`` registries are register-callback hooks: the plugin calls
``register(name, factory, **keywords)`` once per thing it provides, and the core owns naming,
duplicates, option checking and error messages (see ``mia_core.registry``). ``factory`` is a
callable or a lazy ``"module:attr"`` string (so registering a model never imports torch),
called as ``factory(name, options)``: the name the user typed and the options as a dict of
typed values. The keywords, all optional, and nothing else (a typo is an error naming the
plugin and the keyword, and the plugin is reported broken by ``mia plugins``):

``description``
    one line for ``mia models`` / ``mia datasets``.
``aliases``
    other names for the same thing (case-insensitive, unique across plugins).
``match``
    ``match(name) -> bool`` for open-ended names (``hf:ID``, a path); register it under a
    placeholder name such as ``"hf:ID"``.
``match_priority``
    an int, default 0: predicates with a higher priority are asked first (a Mamba checkpoint
    folder is also "a folder", which mia-hf's predicate matches).
``options``
    the options the factory accepts, a sequence of ``mia_core.Option(name, type, default, help,
    choices=)``: the core rejects any other option and any value of the wrong type before the
    factory is imported, converts the values, and documents them (``mia models --options NAME``).
    Without ``options=`` the factory receives the strings as given and checks them itself.
``capabilities``
    backends only: the names of ``mia_core.types.CAPABILITIES`` the loaded object will have
    (``("generate", "score")``), promised before loading; the core checks the promise.
``finetune``
    backends only: ``finetune(name, options, texts, folder, config) -> dict`` (or a lazy
    ``"module:attr"``), what ``mia calibrate`` trains a copy of the model with.

``mia_register_commands`` adds commands.
"""

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("mia")
hookimpl = pluggy.HookimplMarker("mia")

Register = Callable[..., None]


@hookspec
def mia_register_datasets(register: Register) -> None:
    """Register dataset loaders: ``factory(name, options) -> Dataset``. Keywords:
    ``description``, ``aliases``, ``match``, ``match_priority``, ``options``."""


@hookspec
def mia_register_tokenizers(register: Register) -> None:
    """Register tokenizers: ``factory(name, options) -> Tokenizer``. Keywords: ``description``,
    ``aliases``, ``match``, ``match_priority``, ``options`` (a model's tokenizer usually declares
    the model's options, since commands pass ``--model-option`` values to both)."""


@hookspec
def mia_register_backends(register: Register) -> None:
    """Register models: ``factory(name, options) -> Backend`` (see ``mia_core.types``).
    Keywords: ``description``, ``aliases``, ``match``, ``match_priority``, ``options``,
    ``capabilities`` (``("generate", "score")`` promises, before loading, what the model does),
    ``finetune``."""


@hookspec
def mia_register_commands(cli: Any) -> None:
    """Add commands to ``mia``: ``cli`` is a ``click.Group``; decorate with ``@cli.command()``.
    A name clashing with an existing command is refused (reported by ``mia plugins``)."""
