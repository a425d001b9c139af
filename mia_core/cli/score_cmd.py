"""``mia score`` and ``mia estimate`` (docs/scoring.md; ``mia index``: index_cmd.py, ``mia report``: report_cmd.py).

Everything heavy (tokengrams, matplotlib, sacrebleu, tokenizers) is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mia_core.cli.options import Count, Number, positive_ints
from mia_core.formats.filekinds import expand_runs


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--k", "k", type=Count(), default=None,
              help="Compare the first K suffix tokens (default: the map's suffix length, or the run's "
                   "--max_length when smaller).")
@click.option("--edit-threshold", "--edit_threshold", type=Number(), default=0.1, show_default=True,
              help="Approximate memorization: normalized token edit distance at most this.")
@click.option("--bleu", is_flag=True,
              help="Approximate memorization as Ippolito et al. 2022: sacrebleu BLEU of the detokenized texts "
                   "(instead of mia's token edit distance).")
@click.option("--bleu-threshold", "--bleu_threshold", type=Number(), default=0.75, show_default=True,
              help="With --bleu: approximate memorization means sentence BLEU/100 at least this.")
@click.option("--index", "index", type=click.Path(path_type=Path), default=None,
              help="Corpus index folder (mia index) for verbatim-membership scoring.")
@click.option("--window", type=Count(), default=50, show_default=True,
              help="Corpus membership: a verbatim match of at least this many tokens.")
@click.option("--decode", is_flag=True,
              help="With --index: load the run's tokenizer and show the memorized windows as text.")
@click.option("--queries", callback=positive_ints, default="1,10,100,1000,10000", show_default=True,
              help="Probabilistic extraction (teacher-forced runs): the numbers of queries n at which the "
                   "(n, target)-discoverable rows are counted.")
@click.option("--target", type=Number(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="Probabilistic extraction: the probability 1 - (1 - p)^n must reach this.")
@click.option("--no-save", "--no_save", "no_save", is_flag=True, help="Do not write RUN.scores.h5.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def score(runs: tuple[Path, ...], k: int | None, edit_threshold: float, bleu: bool, bleu_threshold: float,
          index: Path | None, window: int, decode: bool, queries: tuple[int, ...], target: float, no_save: bool,
          as_json: bool) -> None:
    """Score runs against their true suffixes (and a corpus index); store the scores beside each run.

    RUNS are run files or map folders (all their runs); scores files among them are skipped.

    \b
    Example:
      mia score Prefixes/MAP/runs/gemma-3-270m_20261127_143015.h5
      mia score RUN --index Prefixes/corpus_index --window 50 --json
    """
    from mia_core.scoring.summary import format_summary, score_run

    if not 0 <= edit_threshold <= 1 or not 0 <= bleu_threshold <= 1:
        raise click.BadParameter("thresholds lie between 0 and 1")
    runs = tuple(expand_runs(runs, "mia score"))
    summaries = [score_run(run, k=k, edit_threshold=edit_threshold, bleu=bleu, bleu_threshold=bleu_threshold,
                           index=index, window=window, save=not no_save, decode=decode, queries=queries,
                           target=target) for run in runs]
    if as_json:
        _echo_json(summaries[0] if len(summaries) == 1 else summaries)
    else:
        click.echo("\n\n".join(format_summary(s) for s in summaries))


@click.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--table", "table_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file of 'r n_r' pairs (one per line) or of one count per item.")
@click.option("--of", type=click.Choice(["auto", "windows", "samples"]), default="auto", show_default=True,
              help="From scored runs: memorized corpus windows, or extracted samples.")
@click.option("--confidence", "-C", type=Number(), default=1.96, show_default=True,
              help="Simple Good-Turing switch criterion (1.96 as Sampson's code; the paper used 1.65).")
@click.option("--t", "ts", type=Number(), multiple=True,
              help="Extrapolate to t× more sampling units: prompts for greedy runs, generations for sampled "
                   "runs (repeatable; default 1 2 5 10).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the extrapolation curve as a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimates as JSON.")
def estimate(sources: tuple[Path, ...], table_file: Path | None, of: str, confidence: float,
             ts: tuple[float, ...], plot: Path | None, as_json: bool) -> None:
    """Estimate what has not been extracted yet: Simple Good-Turing, Chao et al. 2014 extrapolation
    (Good–Toulmin beside it for t ≤ 1), Chao1.

    SOURCES are scored runs (their RUN.scores.h5; run `mia score` first). Counts are pooled. The
    sampling unit is the generation of a sampled run and the prompt of a greedy run (greedy runs
    whose prompts cover every document's only prefix are refused: there is nothing to extrapolate to).

    \b
    Example:
      mia estimate Prefixes/MAP/runs/*.h5 --t 2 --t 10 --plot gt.png
    """
    from mia_core.scoring.goodturing import estimate as run_estimate
    from mia_core.scoring.tables import EstimateSource, estimate_runs, table_from_file

    if bool(sources) == bool(table_file):
        raise click.UsageError("give scored runs or --table FILE (one of them)")
    if confidence <= 0:
        raise click.BadParameter("must be positive", param_hint="--confidence")
    if any(t < 0 for t in ts):
        raise click.BadParameter("must be non-negative", param_hint="--t")
    if table_file:
        table, what = table_from_file(table_file)
        source = EstimateSource(table, what, "observation", None,
                                ["the table's counts are independent draws (mia does not know their sampling unit)"])
        result = run_estimate(source.table, ts or (1, 2, 5, 10), confidence, source.units, source.unit)
        result.update(items=source.items, assumptions=source.assumptions)
    else:
        source, result = estimate_runs(expand_runs(sources, "mia estimate"), ts or (1, 2, 5, 10), confidence, of)
    for w in result["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if plot is not None:
        from mia_core.scoring.plots import extrapolation_plot

        plot.parent.mkdir(parents=True, exist_ok=True)
        extrapolation_plot(source.table, plot, max_t=max(ts or (10,)), title=f"Unique {source.items.split(' (')[0]}",
                           units=source.units, unit=source.unit)
    if as_json:
        _echo_json(result)
    else:
        from mia_core.scoring.tables import format_estimate

        click.echo(format_estimate(result))


commands = [score, estimate]
