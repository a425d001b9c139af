"""The plugin manager: loads every distribution registered under the ``mia`` entry point.

``MIA_LOAD_PLUGINS`` (comma-separated distribution names, empty for none) restricts
which installed plugins are loaded, for tests and debugging.
"""

import importlib.metadata
import os

import pluggy

from mia_core import hookspecs

pm = pluggy.PluginManager("mia")
pm.add_hookspecs(hookspecs)

_loaded = False


def _normalize(dist_name: str) -> str:
    return dist_name.strip().lower().replace("_", "-")


def load_plugins() -> pluggy.PluginManager:
    """Load the installed plugins once (honouring ``MIA_LOAD_PLUGINS``)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    allowed = os.environ.get("MIA_LOAD_PLUGINS")
    if allowed is not None:
        names = {_normalize(n) for n in allowed.split(",") if n.strip()}
        for ep in importlib.metadata.entry_points(group="mia"):
            if ep.dist is None or _normalize(ep.dist.name) not in names:
                pm.set_blocked(ep.name)
    pm.load_setuptools_entrypoints("mia")
    pm.check_pending()
    return pm


def plugin_info() -> list[dict]:
    """What is installed: each plugin, its distribution and version, and its hooks."""
    load_plugins()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    info = []
    for plugin in pm.get_plugins():
        dist = dists.get(id(plugin))
        info.append(
            {
                "name": pm.get_name(plugin),
                "distribution": dist.project_name if dist else None,
                "version": dist.version if dist else None,
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            }
        )
    return sorted(info, key=lambda p: p["name"])
