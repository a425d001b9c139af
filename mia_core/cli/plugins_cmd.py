"""`mia plugins`, `mia models`, `mia datasets`: what is installed and what it registers."""

import json

import click

from mia_core import registry
from mia_core.plugins import plugin_info


def _registered_by(plugin: str) -> dict[str, list[str]]:
    return {
        kind: [e.name for e in reg.entries() if e.plugin == plugin]
        for kind, reg in (("datasets", registry.datasets), ("tokenizers", registry.tokenizers),
                          ("backends", registry.backends))
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    info = [{**p, **_registered_by(p["name"])} for p in plugin_info()]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if not info:
        click.echo("No plugins installed (or MIA_LOAD_PLUGINS excludes them all).")
    for p in info:
        click.echo(f"{p['name']} ({p['distribution']} {p['version']})")
        for kind in ("datasets", "tokenizers", "backends"):
            if p[kind]:
                click.echo(f"  {kind}: {', '.join(p[kind])}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json: bool) -> None:
    """List model names: tokenizers (for mia prefix) and backends (for mia prompt)."""
    rows: dict[str, dict] = {}
    for kind, reg in (("tokenizer", registry.tokenizers), ("backend", registry.backends)):
        for e in reg.entries():
            row = rows.setdefault(e.name, {"name": e.name, "plugin": e.plugin, "description": e.description,
                                           "aliases": list(e.aliases), "tokenizer": False, "backend": False})
            row[kind] = True
            if kind == "backend":
                row["capabilities"] = sorted(e.info.get("capabilities", []))
    _print_table(list(rows.values()), as_json, ["name", "plugin", "tokenizer", "backend", "description"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets(as_json: bool) -> None:
    """List dataset names."""
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
    cells = [[("yes" if v is True else "-" if v is False else str(v)) for v in (r[c] for c in columns)] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


commands = [plugins, models, datasets]
