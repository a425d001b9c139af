"""Registries of datasets, tokenizers and backends, filled through the plugin hooks.

A name is looked up case-insensitively, then against each entry's ``match`` predicate
(for open-ended names such as ``hf:ID``, ``claude:MODEL`` or a local path). Unknown names
fail with the available names and a close match.
"""

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mia_core import plugins
from mia_core.defaults import provider_for
from mia_core.errors import MiaError, UnknownNameError
from mia_core.types import capabilities


@dataclass
class Entry:
    """One registered thing: a name, how to build it, and what to tell the user."""

    kind: str
    name: str
    factory: Callable[..., Any] | str
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    match: Callable[[str], bool] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def load_factory(self) -> Callable[..., Any]:
        """Resolve a lazy ``"module:attr"`` factory (imports heavy libraries only now)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def capabilities(self) -> frozenset[str] | None:
        """What a backend promised at registration (``capabilities=``), or None: known before
        loading it, so commands refuse an unsuitable model without loading it."""
        declared = self.info.get("capabilities")
        return None if declared is None else frozenset(declared)

    def create(self, name: str, options: dict[str, Any] | None = None) -> Any:
        """Build the thing for ``name`` (which may be an alias or a matched name)."""
        obj = self.load_factory()(name, dict(options or {}))
        promised = self.capabilities if self.kind == "backend" else None
        if promised is not None and not promised <= capabilities(obj):
            missing = ", ".join(sorted(promised - capabilities(obj)))
            raise MiaError(f"plugin {self.plugin!r} registers {self.name!r} with capabilities it lacks once loaded "
                           f"({missing}): a bug in the plugin (see mia_core.types for the methods each needs)")
        return obj


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

            def register(name: str, factory: Callable[..., Any] | str, *, _plugin: str = plugin_name,
                         description: str = "", aliases: tuple[str, ...] = (),
                         match: Callable[[str], bool] | None = None, **info: Any) -> None:
                self.add(Entry(self.kind, name, factory, _plugin, description, tuple(aliases), match, info))

            try:
                hook(register=register)
            except MiaError:  # a clash between plugins: the user must resolve it
                raise
            except Exception as exc:  # a broken plugin: skip it, `mia plugins` says why
                plugins.record_failure(plugin_name, self.hook, exc)

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
        # A more specific predicate (``match_priority`` info, default 0) is asked first: a
        # Mamba checkpoint folder is also "a folder", which the generic hf entry matches.
        ranked = sorted(self.entries(), key=lambda e: -int(e.info.get("match_priority", 0)))
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
