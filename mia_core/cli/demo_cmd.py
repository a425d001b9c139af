"""`mia demo`: the embedded default end to end — prefix map → prompt → score → report."""

from pathlib import Path

import click

from mia_core.cli.options import quiet_option, renamed_option
from mia_core.defaults import DEFAULT_DATASET, DEFAULT_MODEL


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model (tokenizer and backend).")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="Dataset name.")
@click.option("--prefix-tokens", "--prefix_tokens", "prefix_tokens", type=click.IntRange(min=1), default=32,
              show_default=True, help="Prefix length in tokens.")
@click.option("--suffix-tokens", "--suffix_tokens", "suffix_tokens", type=click.IntRange(min=1), default=50,
              show_default=True, help="True continuation kept, and tokens generated.")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Number of samples (default all).")
@click.option("--batch-size", "--batch_size", "batch_size", type=click.IntRange(min=1), default=16,
              show_default=True)
@click.option("--method", type=click.Choice(["generate", "teacher-forced"]), default="generate",
              show_default=True, help="Greedy generation, or the one-pass teacher-forced check (same verdicts).")
@click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("Prefixes"), show_default=True,
              help="Folder the prefix map is created in (the run and report go inside the map).")
@renamed_option("--out", "--out-dir", "(--out names the exact file or folder a command writes)", dest="old_out")
@quiet_option
def demo(model: str, dataset: str, prefix_tokens: int, suffix_tokens: int, size: int | None, batch_size: int,
         method: str, out: Path, old_out: str | None, quiet: bool) -> None:
    """Run the whole pipeline on the embedded default and print a memorization report.

    Builds a prefix map of the embedded corpus with the default model's tokenizer, prompts
    that model greedily with every prefix, scores the continuations against the true
    suffixes (member vs non-member) and writes report.html with the plots.
    """
    from mia_core.prefix import build_prefix_map
    from mia_core.prompt import prompt
    from mia_core.scoring.report import write_report
    from mia_core.scoring.summary import format_summary, score_run

    out = Path(old_out) if old_out else out

    click.echo(f"[1/3] prefix map: {dataset}, {prefix_tokens}-token prefixes, {model} tokenizer", err=True)
    folder = build_prefix_map(model, dataset, prefix_tokens, "start", size=size, suffix_tokens=suffix_tokens,
                              out=out, quiet=quiet)
    click.echo(f"[2/3] {method} with {model}: {suffix_tokens} tokens after each prefix", err=True)
    run_paths: list[Path] = []
    prompt(folder, model, batch_size=batch_size, max_length=suffix_tokens, quiet=quiet, method=method,
           on_path=run_paths.append)
    click.echo("[3/3] scoring", err=True)
    summary = score_run(run_paths[0])
    report = write_report(run_paths, folder / "report.html")
    click.echo(format_summary(summary))
    click.echo(_longest_matches(run_paths[0], summary["scores_file"]))
    click.echo(f"\nprefix map: {folder}\nrun:        {run_paths[0]}\nreport:     {report}")


def _longest_matches(run_path: Path, scores_file: str, top: int = 5) -> str:
    """The rows whose continuation followed the true text longest: what a reader wants to see."""
    import numpy as np

    from mia_core.runs import open_run
    from mia_core.scoring.store import read_scores

    run = open_run(run_path)
    matched = read_scores(scores_file)["match"]["matched_length"]
    ids, labels, texts = run.map_column("sample_id"), run.map_column("sample_label"), run.read("text")
    lines = [f"longest matches with the true suffix (of {len(matched)} rows):"]
    for i in np.argsort(-matched, kind="stable")[:top]:
        snippet = " ".join(str(texts[i]).split())[:70]
        lines.append(f"  {int(matched[i]):3d} tokens  {ids[i]} ({labels[i] or 'unlabelled'}): {snippet!r}")
    return "\n".join(lines)


commands = [demo]
