"""``--config FILE.toml`` on every command: option defaults from a file; the command line wins.

The file's top-level keys apply to every command that has such an option; a ``[command]`` table
(``[prompt]``, ``[attack]``...) applies to that command only and wins over the top level. Keys are
option names with ``_`` or ``-`` (``num_strings``, ``num-strings``). The values become click's
``default_map``, so an option given on the command line always wins (docs/report.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_OPTION = "config_file"


def _key(name: str) -> str:
    return name.strip().lstrip("-").replace("-", "_")


def _param_names(command: click.Command) -> dict[str, str]:
    """Every spelling of each parameter (its name and its long options, with _) -> its name."""
    names: dict[str, str] = {}
    for p in command.params:
        if p.name is None or p.name == CONFIG_OPTION:
            continue
        names[p.name] = p.name
        for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", []):
            if opt.startswith("--"):
                names[_key(opt)] = p.name
    return names


def load_config(path: Path, command: click.Command, command_name: str, known_anywhere: set[str],
                sections: set[str] = frozenset()) -> dict[str, Any]:
    """The default_map ``path`` gives ``command``; a one-line error for a bad file or an unknown key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path} is not valid TOML: {exc}", param_hint="--config") from None
    names = _param_names(command)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if _key(key) in known_anywhere and key not in sections:  # an option given a table: `max_length = {a=1}`
                raise click.BadParameter(f"{path}: {key!r} must be a value, not a table", param_hint="--config")
            continue
        if _key(key) in names:
            out[names[_key(key)]] = value
        elif _key(key) not in known_anywhere:
            raise click.BadParameter(f"{path}: {key!r} is not an option of any mia command", param_hint="--config")
    section = data.get(command_name, {})
    if not isinstance(section, dict):
        raise click.BadParameter(f"{path}: [{command_name}] must be a table", param_hint="--config")
    for key, value in section.items():
        if _key(key) not in names:
            choices = ", ".join(sorted(set(names.values())))
            raise click.BadParameter(f"{path}: [{command_name}] {key!r} is not an option of mia {command_name} "
                                     f"(options: {choices})", param_hint="--config")
        if isinstance(value, dict):
            raise click.BadParameter(f"{path}: [{command_name}] {key!r} must be a value, not a table",
                                     param_hint="--config")
        out[names[_key(key)]] = value
    return out


def add_config_option(command: click.Command, known_anywhere: set[str]) -> None:
    """Add ``--config FILE`` (eager: read before the other options, so its values are their defaults)."""
    if any(p.name == CONFIG_OPTION for p in command.params):
        return

    def callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is not None:
            root = ctx.find_root()
            sections = set(root.command.list_commands(root)) if isinstance(root.command, click.Group) else set()
            loaded = load_config(value, ctx.command, ctx.info_name or command.name or "", known_anywhere, sections)
            ctx.default_map = {**(ctx.default_map or {}), **loaded}
            ctx.meta["mia_config_file"] = str(value)
        return value

    command.params.append(click.Option(
        ["--config", CONFIG_OPTION], type=click.Path(dir_okay=False, path_type=Path), is_eager=True,
        expose_value=False, callback=callback,
        help="TOML file of option defaults (top level: every command; [COMMAND] table: this one); "
             "the command line wins."))


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # strings, numbers, booleans: JSON spells them as TOML does


def to_toml(command: str, options: dict[str, Any]) -> str:
    """A config file that reproduces ``mia COMMAND`` with these effective options (None values left out:
    TOML has no null, and None is every option's "not given")."""
    lines = [f"[{command}]"]
    for key, value in options.items():
        if value is None or value in ([], ()) or key == CONFIG_OPTION:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
