"""``mia show PATH``: a map's, run's, scores' or attack's attributes, provenance, counts and first rows."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mia_core.cli.options import Count
from mia_core.errors import MiaError


@click.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--rows", "n_rows", type=Count(min=0), default=5, show_default=True, help="First rows shown.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--reproduce", is_flag=True,
              help="Print the config file (TOML, for --config) of the command that wrote PATH, with its effective "
                   "options.")
def show_command(path: Path, n_rows: int, as_json: bool, reproduce: bool) -> None:
    """Show what is inside a prefix map (folder or prefix_map.h5), run, scores or attack results file.

    \b
    Example:
      mia show Prefixes/MAP
      mia show Prefixes/MAP/runs/RUN.h5 --rows 10
      mia show RUN.h5 --reproduce > run.toml && mia prompt --config run.toml
    """
    from mia_core.inspection.show import describe_file, format_description

    info = describe_file(path, rows=n_rows)
    if reproduce:
        from mia_core.cli.config import to_toml

        prov = info.get("provenance") or {}
        if not prov.get("command") or prov.get("options") is None:
            raise MiaError(f"{path} records no command options (written by an older mia or from Python, not the "
                           "mia command)")
        click.echo(f"# reproduces: {prov.get('command_line')}\n# run it with: mia {prov['command']} --config FILE",
                   nl=True)
        click.echo(to_toml(prov["command"], prov["options"]), nl=False)
        return
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str, ensure_ascii=False))
    else:
        click.echo(format_description(info))


commands = [show_command]
