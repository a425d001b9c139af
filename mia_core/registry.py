"""Registries of datasets, tokenizers and backends, filled through the plugin hooks.

A name is looked up case-insensitively, then against each entry's ``match`` predicate
(for open-ended names such as ``hf:ID``, ``claude:MODEL`` or a local path). Unknown names
fail with the available names and a close match.
"""

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mia_core import option_schema, plugins
from mia_core.defaults import provider_for
from mia_core.errors import MiaError, UnknownNameError
from mia_core.option_schema import Option
from mia_core.types import CAPABILITIES, capabilities

# How each kind is named in messages, and the command that prints its options table.
_OWNER_WORD = {"dataset": "dataset", "tokenizer": "tokenizer", "backend": "model"}
_LISTING = {"dataset": "mia datasets --options", "tokenizer": "mia models --options",
            "backend": "mia models --options"}


@dataclass
class Entry:
    """One registered thing: a name, how to build it, and what to tell the user (every field
    but ``kind`` and ``plugin`` is a keyword of ``register``, documented in ``mia_core.hookspecs``)."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    match: Callable[[str], bool] | None = None
    match_priority: int = 0
    capabilities: frozenset[str] | None = None
    options: tuple[Option, ...] | None = None
    finetune: Callable[..., Any] | str | None = None

    def load_factory(self) -> Callable[..., Any]:
        """Resolve a lazy ``"module:attr"`` factory (imports heavy libraries only now)."""
        return _resolve(self.factory)

    @property
    def info(self) -> dict[str, Any]:
        """The optional keywords this entry was registered with (older readers ask this)."""
        extra = {"capabilities": tuple(sorted(self.capabilities)) if self.capabilities is not None else None,
                 "match_priority": self.match_priority or None, "finetune": self.finetune}
        return {k: v for k, v in extra.items() if v is not None}

    def check_options(self, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
        """``options`` checked against the declared schema and typed (unchanged when the plugin
        declares none): a one-line ``MiaError`` before anything is imported or loaded."""
        values = dict(options or {})
        if self.options is None:
            return values
        owner = f"{_OWNER_WORD[self.kind]} {name!r}"
        return option_schema.validate(values, self.options, owner, f"{_LISTING[self.kind]} {self.name}")

    def create(self, name: str, options: dict[str, Any] | None = None) -> Any:
        """Build the thing for ``name`` (which may be an alias or a matched name)."""
        typed = self.check_options(name, options)
        obj = self.load_factory()(name, typed)
        if self.kind == "backend" and self.capabilities is not None and not self.capabilities <= capabilities(obj):
            missing = ", ".join(sorted(self.capabilities - capabilities(obj)))
            raise MiaError(f"plugin {self.plugin!r} registers {self.name!r} with capabilities it lacks once loaded "
                           f"({missing}): a bug in the plugin (see mia_core.types for the methods each needs)")
        return obj


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_REGISTER_KEYWORDS = ("description", "aliases", "match", "match_priority", "capabilities", "options", "finetune")


class RegistrationError(TypeError):
    """A plugin called ``register`` wrongly: the plugin is reported broken (``mia plugins``)."""


def _checked_capabilities(declared: Iterable[str] | None) -> frozenset[str] | None:
    if declared is None:
        return None
    if isinstance(declared, str):
        raise RegistrationError(f"capabilities= must be a tuple of names, got the string {declared!r}")
    unknown = sorted(set(declared) - set(CAPABILITIES))
    if unknown:
        raise RegistrationError(f"capabilities= names {', '.join(unknown)}, which mia does not know "
                                f"(known: {', '.join(CAPABILITIES)})")
    return frozenset(declared)


class Registry:
    """All entries of one kind (``dataset``, ``tokenizer`` or ``backend``)."""

    def __init__(self, kind: str, hook: str) -> None:
        self.kind = kind
        self.hook = hook
        self._entries: dict[str, Entry] = {}
        self._filled = False

    def _fill(self) -> None:
        if self._filled:
            return
        self._filled = True
        for plugin_name, hook in plugins.hook_functions(self.hook):
            try:
                hook(register=self._register_function(plugin_name))
            except MiaError:  # a clash between plugins: the user must resolve it
                raise
            except Exception as exc:  # a broken plugin: skip it, `mia plugins` says why
                plugins.record_failure(plugin_name, self.hook, exc)

    def _register_function(self, plugin: str) -> Callable[..., None]:
        """The ``register`` a plugin's hook is given: explicit keywords, and a typo is an error
        naming the plugin and the keyword (never silently kept)."""

        def register(name: str, factory: Callable[..., Any] | str, *, description: str = "",
                     aliases: Iterable[str] = (), match: Callable[[str], bool] | None = None,
                     match_priority: int = 0, capabilities: Iterable[str] | None = None,
                     options: Iterable[Option] | None = None, finetune: Callable[..., Any] | str | None = None,
                     **unknown: Any) -> None:
            if unknown:
                raise RegistrationError(_unknown_keywords_message(plugin, name, unknown))
            try:
                entry = Entry(self.kind, name, factory, plugin, description, tuple(aliases), match,
                              int(match_priority), _checked_capabilities(capabilities),
                              None if options is None else option_schema.check_schema(options), finetune)
            except TypeError as exc:
                raise RegistrationError(f"plugin {plugin!r} registers {self.kind} {name!r} wrongly: {exc}") from None
            self.add(entry)

        return register

    def add(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            existing = self._entries.get(key.lower())
            if existing is not None and existing is not entry:
                raise MiaError(
                    f"{self.kind} {key!r} is registered twice: by plugin {existing.plugin!r} "
                    f"and by plugin {entry.plugin!r}"
                )
            self._entries[key.lower()] = entry

    def entries(self) -> list[Entry]:
        self._fill()
        unique = {id(e): e for e in self._entries.values()}
        return sorted(unique.values(), key=lambda e: e.name.lower())

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def find(self, name: str) -> Entry | None:
        self._fill()
        entry = self._entries.get(name.lower())
        if entry is not None:
            return entry
        # A more specific predicate (``match_priority``, default 0) is asked first: a Mamba
        # checkpoint folder is also "a folder", which the generic hf entry matches.
        ranked = sorted(self.entries(), key=lambda e: -e.match_priority)
        for candidate in ranked:
            if candidate.match is not None and candidate.match(name):
                return candidate
        return None

    def get(self, name: str) -> Entry:
        """The entry for ``name``, or a usage error listing what exists."""
        entry = self.find(name)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry

    def create(self, name: str, options: dict[str, Any] | None = None) -> Any:
        return self.get(name).create(name, options)

    def check_options(self, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
        """``options`` for ``name`` checked and typed without loading anything: a command calls
        this first, so a typo fails before a dataset is read or a model loaded."""
        return self.get(name).check_options(name, options)

    def unknown_message(self, name: str) -> str:
        available = self.names()
        message = f"unknown {self.kind} {name!r}."
        provider = provider_for(name)
        hint = _why_missing(provider) if provider else ""
        if hint:
            message += f" It is provided by the plugin {provider!r}{hint}"
        keys = sorted({k for e in self.entries() for k in (e.name, *e.aliases)})
        close = difflib.get_close_matches(name.lower(), [k.lower() for k in keys], n=1, cutoff=0.6)
        if close:
            suggestion = next(k for k in keys if k.lower() == close[0])
            message += f" Did you mean {suggestion!r}?"
        message += " Available: " + (", ".join(available) if available else "none (no plugin registers any)")
        broken = sorted(plugins.failures)
        if broken and not hint:
            message += f". Plugins that failed to load: {', '.join(broken)} (see mia plugins)"
        return message


def _unknown_keywords_message(plugin: str, name: str, unknown: dict[str, Any]) -> str:
    guesses = [m for k in unknown for m in difflib.get_close_matches(k, _REGISTER_KEYWORDS, n=1)]
    guess = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    return (f"plugin {plugin!r} calls register({name!r}, ...) with unknown keyword(s) {', '.join(unknown)}{guess}; "
            f"register accepts {', '.join(_REGISTER_KEYWORDS)}")


def _why_missing(dist: str) -> str:
    """Why a shipped distribution registers nothing here, and what to do about it."""
    status = plugins.distribution_status(dist)
    if status is None:
        return f": pip install -e plugins/{dist.replace('-', '_')}."
    if status == "excluded":
        return ", which MIA_LOAD_PLUGINS excludes."
    if status == "loaded":
        return ""
    return f", which is installed but broken ({status}; see mia plugins)."


datasets = Registry("dataset", "mia_register_datasets")
tokenizers = Registry("tokenizer", "mia_register_tokenizers")
backends = Registry("backend", "mia_register_backends")


def refresh() -> None:
    """Forget what was registered, so the next lookup asks the plugins again (after
    ``pm.register``/``pm.unregister``, as tests do with throwaway plugins)."""
    for reg in (datasets, tokenizers, backends):
        reg._entries.clear()
        reg._filled = False
