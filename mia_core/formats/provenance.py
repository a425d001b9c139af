"""What made a file: recorded as the ``provenance`` attribute of every map, run, scores and attack file.

``provenance(backend)`` gathers the command line and its effective options (registered by the CLI
through :func:`record_invocation`), the versions of mia, its plugins and of torch / transformers /
vLLM when they are loaded, the device and dtype the backend reports, the host name, and the git
commit of mia when it runs from a checkout. ``mia show`` prints it (docs/report.md).
"""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from mia_core import __version__
from mia_core.redact import redact, redact_text

#: Libraries whose version is recorded when the process has imported them (never imported here).
LIBRARIES = ("torch", "transformers", "vllm", "mamba_ssm", "anthropic", "tokengrams", "h5py", "numpy")

_invocation: dict[str, Any] = {}


def record_invocation(command: str, options: Mapping[str, Any], from_config: str | None = None) -> None:
    """Called by the CLI once the command's options are resolved (command line, config file, defaults)."""
    _invocation.clear()
    _invocation.update(command=command, options=redact({k: _jsonable(v) for k, v in options.items()}),
                       config_file=from_config)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


@cache
def _plugin_versions() -> dict[str, str]:
    from importlib.metadata import distributions

    out = {}
    for dist in distributions():
        if any(ep.group == "mia" for ep in dist.entry_points):
            out[dist.metadata["Name"]] = dist.version
    return dict(sorted(out.items()))


@cache
def _git_commit() -> str | None:
    """The commit of the mia checkout this code runs from (``+dirty`` with local changes), else None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is not None:
            out[name] = str(version)
    return out


def provenance(backend: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of a file being written now; ``backend`` is the backend's ``describe()``."""
    backend = backend or {}
    return {
        "command_line": redact_text(shlex.join(["mia", *sys.argv[1:]]) if _invocation else shlex.join(sys.argv)),
        "command": _invocation.get("command"),
        "options": _invocation.get("options"),
        "config_file": _invocation.get("config_file"),
        "mia_version": __version__,
        "plugins": _plugin_versions(),
        "libraries": _versions(),
        "python": platform.python_version(),
        "device": backend.get("device"),
        "dtype": backend.get("dtype"),
        "host": socket.gethostname(),
        "git_commit": _git_commit(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
