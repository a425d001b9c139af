"""``mia study``: the whole study from one TOML file (or a few options), in one resumable folder."""

from pathlib import Path

import click

from mia_core.cli.options import Count, quiet_option, ray_address_option


@click.command()
@click.argument("config_path", required=False, metavar="[CONFIG.toml]", type=click.Path(path_type=Path))
@click.option("--model", help="The model (overrides [study] model; default gemma-3-270m).")
@click.option("--dataset", help="The dataset (overrides [study] dataset; default corpus).")
@click.option("--name", help="The study's folder under --root (default MODEL_DATASET).")
@click.option("--limit", type=Count(min=1), help="Only N samples, drawn balanced over labels (a quick look).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("studies"),
              show_default=True, help="Folder holding the studies.")
@click.option("--resume", is_flag=True, help="Continue the existing study of this name (finished steps are kept).")
@click.option("--force-step", "--force_step", "force_steps", multiple=True, metavar="STEP",
              help="Redo STEP and the steps after it even though its configuration changed "
                   "(prefix, generate, check, score, attack, dataset_inference, estimate, report; repeatable).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before an API model spends above the usual threshold.")
@ray_address_option
@quiet_option
def study(**options) -> None:
    """Run a whole study: prefix map → generation and the teacher-forced check → scoring →
    membership attack and dataset inference (labelled data) → estimates (where the data supports
    them) → report.

    Everything goes into one folder, studies/NAME/: the map and its runs, the attack, report.html,
    results.json (every figure, the configuration, versions, device, timings) and samples.jsonl
    (one record per sample). Re-run with --resume to continue after an interruption: finished steps
    are recognised by their recorded configuration. CONFIG.toml has one table per step with the
    commands' option names (docs/study.md).

    \b
    Examples:
      mia study --model smollm2-135m --dataset corpus --limit 20
      mia study study.toml --resume
    """
    from mia_core.study.config import read_config, resolve
    from mia_core.study.folder import StudyRequest
    from mia_core.study.run import run_study

    file_values = read_config(options["config_path"]) if options["config_path"] else {}
    overrides = {key: options[key] for key in ("model", "dataset", "name", "limit")}
    request = StudyRequest(config=resolve(file_values, overrides), root=options["root"], resume=options["resume"],
                           force_steps=tuple(options["force_steps"]), yes=options["yes"],
                           confirm=lambda question: click.confirm(question, default=False, err=True),
                           quiet=options["quiet"])
    folder = run_study(request)
    _print_summary(folder)


def _print_summary(folder: Path) -> None:
    """The study's headline figures, each named with its rows and convention, and where its files are."""
    import json

    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    for name, step in results["steps"].items():
        if step and step.get("status") == "skipped":
            click.echo(f"{name}: skipped ({step.get('reason')})")
    for line in _figure_lines(results):
        click.echo(line)
    click.echo(f"study:   {folder}\nresults: {folder / 'results.json'}\nsamples: {folder / 'samples.jsonl'}")
    if (folder / "report.html").is_file():
        click.echo(f"report:  {folder / 'report.html'}")


def _figure_lines(results: dict) -> list[str]:
    """Extraction rates per run, each signal's AUC with its bootstrap interval, the dataset-inference
    p-value: the figures results.json holds, as the report words them."""
    from mia_core.formatting import format_rate

    lines = []
    for run, s in results["extraction"].items():
        lines.append(f"{run}: exact extraction of the first {s['k']} tokens {format_rate(s['extraction'])}; "
                     f"approximate ({s['approximate']['criterion']}) {format_rate(s['approximate'])}")
    for m in results["attack"].get("metrics") or []:
        interval = ("" if m.get("auc_low") is None
                    else f" [95% bootstrap interval {m['auc_low']:.3f}–{m['auc_high']:.3f}]")
        lines.append(f"attack {m['signal']}: AUC {m['auc']:.3f}{interval} over {m['n_members']} members and "
                     f"{m['n_nonmembers']} nonmembers")
    found = results["dataset_inference"].get("result")
    if found:
        merged = f"min(1, 2 × median) of {found['splits']} splits' p-values" if found["splits"] > 1 else "one split"
        lines.append(f"dataset inference: p-value {found['p_value']:.3g} ({merged}; suspect {found['n_suspect']}, "
                     f"validation {found['n_validation']} strings)")
    return lines


commands = [study]
