"""The plugin manager: loads every distribution registered under the ``mia`` entry point.

A plugin that fails (its module does not import, or a hook raises) is skipped and
remembered in ``failures``: ``mia plugins`` reports it in one line, every other command
keeps working. ``MIA_LOAD_PLUGINS`` (comma-separated distribution names, empty for none)
restricts which installed plugins are loaded, for tests and debugging.
"""

import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

import pluggy

from mia_core import hookspecs

pm = pluggy.PluginManager("mia")
pm.add_hookspecs(hookspecs)

failures: dict[str, str] = {}  # plugin name -> what went wrong, in one line
_dists: dict[str, importlib.metadata.Distribution] = {}  # plugin name -> its installed distribution
_loaded = False


def _normalize(dist_name: str) -> str:
    return dist_name.strip().lower().replace("_", "-")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_plugins() -> pluggy.PluginManager:
    """Load the installed plugins once (honouring ``MIA_LOAD_PLUGINS``); skip broken ones."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    allowed = os.environ.get("MIA_LOAD_PLUGINS")
    names = None if allowed is None else {_normalize(n) for n in allowed.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group="mia"):
        if ep.dist is not None:
            _dists[ep.name] = ep.dist
        if names is not None and (ep.dist is None or _normalize(ep.dist.name) not in names):
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take every command down with it
            record_failure(ep.name, "failed to load", exc)
    pm.check_pending()
    return pm


def hook_functions(hook: str) -> list[tuple[str, Callable[..., Any]]]:
    """``(plugin name, function)`` of every loaded plugin implementing ``hook``. Callers run
    each under ``except Exception`` and pass a failure to ``record_failure``."""
    load_plugins()
    return [(impl.plugin_name, impl.function) for impl in getattr(pm.hook, hook).get_hookimpls()]


def record_failure(plugin: str, what: str, exc: BaseException | None = None) -> None:
    """Remember, in one line, why (part of) ``plugin`` is skipped."""
    line = f"{what}: {one_line(exc)}" if exc is not None else what
    known = failures.get(plugin)
    if known is None or line not in known.split("; "):
        failures[plugin] = f"{known}; {line}" if known else line


def distribution_status(dist_name: str) -> str | None:
    """``None`` when no installed plugin comes from ``dist_name``; else ``"loaded"``,
    ``"excluded"`` (by ``MIA_LOAD_PLUGINS``) or the one line of its failure."""
    load_plugins()
    for plugin, dist in _dists.items():
        if _normalize(dist.metadata["Name"]) == _normalize(dist_name):
            if plugin in failures:
                return failures[plugin]
            return "loaded" if pm.get_plugin(plugin) is not None else "excluded"
    return None


def plugin_info() -> list[dict]:
    """What is installed: each plugin, its distribution and version, and its hooks; a plugin
    that failed has ``error`` set."""
    load_plugins()
    info = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        info.append(_describe(name, sorted(h.name for h in pm.get_hookcallers(plugin) or [])))
    info += [_describe(name, []) for name in failures if pm.get_plugin(name) is None]
    return sorted(info, key=lambda p: p["name"])


def _describe(name: str, hooks: list[str]) -> dict:
    dist = _dists.get(name)
    return {"name": name, "distribution": dist.metadata["Name"] if dist else None,
            "version": dist.version if dist else None, "hooks": hooks, "error": failures.get(name)}
