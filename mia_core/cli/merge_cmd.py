"""`mia merge`: the shards of a run (`mia prompt --shard I/N`) merged into one run file."""

from __future__ import annotations

from pathlib import Path

import click

from mia_core.cli.options import quiet_option


@click.command("merge")
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Run file to write (default Prefixes/<map>/runs/{model}_{timestamp}.h5).")
@click.option("--resume", is_flag=True,
              help="Finish a merge of these shards that was interrupted (its <run>.h5.partial file is kept).")
@quiet_option
def merge_command(runs: tuple[Path, ...], out: Path | None, resume: bool, quiet: bool) -> None:
    """Merge the run files of shards 0/N .. N-1/N into one run, in run order.

    Refuses shards of different maps, models or decoding options, a shard given twice,
    a missing or unfinished shard. The merged run's path is printed on stdout. A merge that
    was interrupted is finished by the same command with --resume.

    \b
    Example (a Slurm job array of 8 shards, see docs/scale.md):
      mia merge Prefixes/<map>/runs/shard-*.h5
    """
    from mia_core.extraction.merge import merge_runs
    from mia_core.formats.runs import open_run

    path = merge_runs(runs, out, resume=resume)
    if not quiet:
        run = open_run(path)
        click.echo(f"{len(run)} rows of {len(runs)} shards merged into {path}", err=True)
    click.echo(str(path))


commands = [merge_command]
