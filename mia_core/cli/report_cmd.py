"""``mia report`` (docs/report.md): runs, attacks and set-level results in one HTML or Markdown file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mia_core.cli.options import Count
from mia_core.errors import MiaError
from mia_core.formats.filekinds import expand_runs, file_kind, map_attacks, map_runs


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="report.html (self-contained, images embedded) or report.md (PNGs written beside it).")
@click.option("--k", "k", type=Count(), default=None, help="As in mia score.")
@click.option("--index", type=click.Path(path_type=Path), default=None, help="As in mia score.")
@click.option("--window", type=Count(), default=50, show_default=True)
@click.option("--examples", type=Count(min=0), default=5, show_default=True,
              help="Longest extractions shown as text per run.")
@click.option("--force", is_flag=True, help="Overwrite an existing report file.")
def report(sources: tuple[Path, ...], out: Path, k: int | None, index: Path | None, window: int, examples: int,
           force: bool) -> None:
    """Write an HTML or Markdown report (tables and plots) of runs, attacks and set-level tests.

    SOURCES are map folders (all their runs, attacks and set-level results), run files, attack results
    files and set-level results (.json from mia dataset-inference or mia contamination); scores files among
    them are skipped (each run's scores are read beside it).

    \b
    Example:
      mia report Prefixes/MAP --out report.html
      mia report Prefixes/MAP/runs/*.h5 --out report.md
    """
    from mia_core.report import write_report

    if out.suffix.lower() not in (".html", ".htm", ".md"):
        raise click.BadParameter("the report must end in .html or .md", param_hint="--out")
    if out.exists() and not force:
        raise MiaError(f"{out} already exists; use --force to overwrite it")
    folders = [p.parent if p.name == "runs" else p for p in sources if p.is_dir()]
    attacks = [a for f in folders for a in map_attacks(f)]
    attacks += [p for p in sources if p.is_file() and file_kind(p) == "attack"]
    setlevel = [s for f in folders for s in _map_setlevel(f)]
    setlevel += [p for p in sources if p.is_file() and p.suffix.lower() == ".json"]
    # a map folder with attacks or set-level results but no runs yet is reported for those alone
    others = attacks or setlevel
    run_sources = [p for p in sources if p not in attacks and p not in setlevel
                   and not (p.is_dir() and not map_runs(p.parent if p.name == "runs" else p) and others)]
    runs = expand_runs(run_sources, "mia report") if run_sources else []
    if not runs and not others:
        raise MiaError("mia report: nothing to report (no runs, attack results or set-level results among the "
                       "paths given)")
    path = write_report(runs, out, k=k, index=index, window=window, attacks=attacks, examples=examples,
                        setlevel=setlevel)
    click.echo(f"report written to {path}", file=sys.stdout)


def _map_setlevel(folder: Path) -> list[Path]:
    """The set-level results of a map folder (``<map>/setlevel/*.json``)."""
    found = folder / "setlevel"
    return sorted(found.glob("*.json")) if found.is_dir() else []


commands = [report]
