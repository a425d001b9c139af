"""`mia plugins`, `mia models`, `mia datasets`: what is installed and what it registers."""

import json

import click

from mia_core import option_schema, registry
from mia_core.errors import UnknownNameError
from mia_core.plugins import plugin_info
from mia_core.text_table import text_table


def _registered_by(plugin: str, commands: dict[str, str]) -> dict[str, list[str]]:
    registered = {
        kind: [e.name for e in reg.entries() if e.plugin == plugin]
        for kind, reg in (("datasets", registry.datasets), ("tokenizers", registry.tokenizers),
                          ("backends", registry.backends))
    }
    registered["commands"] = sorted(name for name, owner in commands.items() if owner == plugin)
    return registered


def _plugin_command_owners(ctx: click.Context) -> dict[str, str]:
    """Command name -> plugin, for the commands plugins add (asked before listing, so a
    failing ``mia_register_commands`` shows up as the plugin's error)."""
    group = ctx.find_root().command
    found = group.plugin_commands() if hasattr(group, "plugin_commands") else {}
    return {name: plugin for name, (plugin, _) in found.items()}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins and what each registers; a plugin that failed is listed with why."""
    for reg in (registry.datasets, registry.tokenizers, registry.backends):
        reg.entries()  # fill first: a plugin whose hook fails is then reported below
    commands = _plugin_command_owners(ctx)
    info = [{**p, **_registered_by(p["name"], commands)} for p in plugin_info()]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if not info:
        click.echo("No plugins installed (or MIA_LOAD_PLUGINS excludes them all).")
    for p in info:
        click.echo(f"{p['name']} ({p['distribution']} {p['version']})")
        if p["error"]:
            click.echo(f"  skipped: {p['error']}")
        for kind in ("datasets", "tokenizers", "backends", "commands"):
            if p[kind]:
                click.echo(f"  {kind}: {', '.join(p[kind])}")


_OPTIONS_COLUMNS = ["option", "type", "default", "accepts", "help"]


def _options_table(entries: list[tuple[str, registry.Entry]], flag: str, as_json: bool) -> None:
    """The options each entry declares (``(heading, entry)``), as ``mia models --options NAME`` prints them."""
    described = [(heading, e) for heading, e in entries if e.options is not None]
    if as_json:
        click.echo(json.dumps({heading: option_schema.table_rows(e.options) for heading, e in described}, indent=2))
        return
    for heading, entry in entries:
        click.echo(f"{heading} {entry.name} ({flag} KEY=VALUE; plugin {entry.plugin}):")
        if entry.options is None:
            click.echo("  the plugin declares no option schema: its loader checks the options itself")
        elif not entry.options:
            click.echo("  takes no option")
        else:
            rows = option_schema.table_rows(entry.options)
            click.echo(text_table(_OPTIONS_COLUMNS, [[str(r[c]) for c in _OPTIONS_COLUMNS] for r in rows]))


def _model_entries(name: str) -> list[tuple[str, registry.Entry]]:
    """The backend and the tokenizer of ``name`` (the tokenizer only when its options differ)."""
    backend, tokenizer = registry.backends.find(name), registry.tokenizers.find(name)
    if backend is None and tokenizer is None:
        raise UnknownNameError(registry.backends.unknown_message(name))
    found = [("model", backend)] if backend is not None else []
    if tokenizer is not None and (backend is None or tokenizer.options != backend.options):
        found.append(("tokenizer", tokenizer))
    return found


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--options", "options_of", metavar="NAME",
              help="Print the --model-option values NAME accepts (type, default, help) instead of the list.")
def models(as_json: bool, options_of: str | None) -> None:
    """List model names: tokenizers (for mia prefix) and backends (for mia prompt).

    A name that is both shows the backend's own description (the model), and the
    capabilities its plugin promises (generate, generate_text, score, cost, batch).
    """
    if options_of is not None:
        _options_table(_model_entries(options_of), "--model-option", as_json)
        return
    rows: dict[str, dict] = {}
    for kind, reg in (("tokenizer", registry.tokenizers), ("backend", registry.backends)):
        for e in reg.entries():
            row = rows.setdefault(e.name, {"name": e.name, "plugin": e.plugin, "aliases": list(e.aliases),
                                           "tokenizer": False, "backend": False, "capabilities": None})
            row[kind] = True
            row[f"{kind}_description"] = e.description
            if kind == "backend" and e.capabilities is not None:
                row["capabilities"] = sorted(e.capabilities)
    for row in rows.values():
        row["description"] = row.get("backend_description") or row.get("tokenizer_description", "")
    _print_table(list(rows.values()), as_json, ["name", "plugin", "tokenizer", "backend", "capabilities",
                                                "description"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--options", "options_of", metavar="NAME",
              help="Print the --dataset-option values NAME accepts (type, default, help) instead of the list.")
def datasets(as_json: bool, options_of: str | None) -> None:
    """List dataset names."""
    if options_of is not None:
        _options_table([("dataset", registry.datasets.get(options_of))], "--dataset-option", as_json)
        return
    rows = [{"name": e.name, "plugin": e.plugin, "description": e.description, "aliases": list(e.aliases)}
            for e in registry.datasets.entries()]
    _print_table(rows, as_json, ["name", "plugin", "description"])


def _print_table(rows: list[dict], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("Nothing registered: install a plugin (see `mia plugins`).")
        return
    click.echo(text_table(columns, [[_cell(r[c]) for c in columns] for r in rows]))


def _cell(value: object) -> str:
    if value is True:
        return "yes"
    if value is False or value is None:
        return "-"
    return ",".join(value) if isinstance(value, list) else str(value)


commands = [plugins, models, datasets]
