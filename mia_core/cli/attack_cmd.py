"""``mia attack``: membership-inference signals for prefix-map windows or dataset samples."""

import json
from pathlib import Path
from typing import Any

import click

from mia_core.cli.options import (
    SEED,
    Count,
    dataset_option,
    model_option,
    one_prefix_map,
    parse_key_values,
    prefix_map_option,
    quiet_option,
    renamed_option,
)
from mia_core.defaults import DEFAULT_MODEL


@click.command()
@click.argument("map_argument", required=False, metavar="[MAP]")
@prefix_map_option
@click.option("--dataset", help="Attack a dataset's samples instead of a prefix map's windows.")
@dataset_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model (registry name or path).")
@model_option
@click.option("--signals", default="loss,zlib,mink,minkpp", show_default=True,
              help="Comma-separated: loss, zlib, mink, minkpp, ref (added by --reference), recall (ReCaLL: one more "
                   "pass per string), ne (neighbourhood: --neighbours more passes per string).")
@click.option("--reference", help="Reference model for the ref signal.")
@click.option("--reference-option", "--reference_option", "reference_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the reference backend (repeatable).")
@click.option("--min-k-fraction", "--min_k_fraction", "k", default="0.2", show_default=True,
              help="Fraction of lowest-scoring tokens for Min-K% and Min-K%++; a comma-separated list sweeps "
                   "them (signals mink_0.1, minkpp_0.1, ...), all from the one forward pass.")
@renamed_option("--k", "--min-k-fraction", "(--k counts suffix tokens in mia score)")
@click.option("--recall-prefix", "--recall_prefix", help="ReCaLL's non-member prefix text (default: drawn from the "
              "data's non-members, which are then left out of the evaluation).")
@click.option("--recall-shots", "--recall_shots", type=Count(min=1), default=1, show_default=True,
              help="Non-member strings drawn (with --seed) to make the ReCaLL prefix.")
@click.option("--neighbours", "--neighbors", type=Count(min=1), default=10, show_default=True,
              help="Neighbours per string for the neighbourhood attack (ne); each costs one forward pass.")
@click.option("--sampling", "sampling_options", multiple=True, metavar="KEY=VALUE",
              help="Map windows: also the probability that this sampling scheme reproduces each suffix "
                   "(temperature=T, top_k=K, top_p=P; probabilistic extraction, Hayes et al. 2024). Repeatable.")
@click.option("--batch-size", "--batch_size", type=Count(min=1), default=8, show_default=True)
@click.option("--max-tokens", "--max_tokens", type=Count(min=1), default=512, show_default=True,
              help="Longest string scored (tokens); longer ones are truncated (and the model's context caps it).")
@click.option("--limit", type=Count(min=1), help="Only the first N windows or samples.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="CSV/TSV/JSONL with id and label columns (member/nonmember) for a dataset without labels.")
@click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False),
              help="Folder the results are created in (default: MAP/attacks, or Prefixes/attacks for --dataset).")
@renamed_option("--out", "--out-dir", "(--out names the exact file or folder a command writes)", dest="old_out")
@click.option("--export", "exports", type=click.Choice(["csv", "jsonl"]), multiple=True,
              help="Also write the per-string results as CSV or JSONL (repeatable).")
@click.option("--bootstrap", type=Count(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the AUC interval (0: none).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--no-plot", is_flag=True, help="Do not write the ROC plot.")
@click.option("--no-blind", is_flag=True,
              help="Skip the blind baseline (a model-free bag-of-n-grams classifier on the same strings).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the table.")
@quiet_option
def attack(**options) -> None:
    """Membership inference: score strings with MODEL and rank them by LOSS, zlib, Min-K%,
    Min-K%++ and reference-model signals (higher = more likely member).

    MAP (or --prefix_map MAP) is a prefix map (folder or name under ./Prefixes): its prefix+suffix windows are scored,
    and the same forward pass gives the teacher-forced memorization verdict of each suffix.
    With --dataset the samples' texts are scored. Member/nonmember labels are required: the ROC-AUC
    (bootstrap interval), TPR at 0.1%, 1% and 5% FPR (bootstrap intervals) and a ROC plot are
    produced, with a `blind` row: a model-free classifier on the same strings, which warns when
    the split is separable without the model.

    \b
    Examples:
      mia attack --dataset corpus --model gemma-3-270m
      mia attack --prefix_map gemma-3-270m_Corpus_32_start_20261127_143015 --signals loss,mink --export csv
      mia attack --dataset corpus --model smollm2-135m --reference gemma-3-270m --json
    """
    from mia_core.attack.workflow import run_attack

    outcome = run_attack(attack_request(options))
    if options["as_json"]:
        from mia_core.attack import report

        click.echo(json.dumps(report.summary_json(outcome), indent=2))
        return
    print_outcome(outcome, is_map=options["dataset"] is None)


def attack_request(options: dict[str, Any]) -> Any:
    """The typed ``AttackRequest`` of ``mia attack``'s options; usage errors name the flag."""
    from mia_core.attack import run as ar
    from mia_core.attack.labels import read_label_file
    from mia_core.attack.workflow import AttackRequest

    prefix_map = one_prefix_map(options["map_argument"], options["prefix_map"])
    dataset = options["dataset"]
    _check_sources(prefix_map, dataset, options)
    names, k = _signals_and_fractions(options["signals"], options["k"], options["reference"])
    sampling = _parse_sampling(options["sampling_options"]) if options["sampling_options"] else None
    if sampling is not None and prefix_map is None:
        raise click.UsageError("--sampling is for prefix maps (it scores each window's suffix)")
    recall_prefix = options["recall_prefix"]
    if recall_prefix is not None and not recall_prefix.strip():
        raise click.BadParameter("the prefix is empty", param_hint="--recall-prefix")
    labels_file = options["labels_file"]
    out = options["out"] or options["old_out"]
    config = ar.AttackConfig(signals=names, k=k, batch_size=options["batch_size"], n_boot=options["bootstrap"],
                             seed=options["seed"], quiet=options["quiet"], blind=not options["no_blind"],
                             recall_prefix=recall_prefix, recall_shots=options["recall_shots"],
                             neighbours=options["neighbours"], sampling=sampling)
    return AttackRequest(
        model=options["model"], prefix_map=Path(prefix_map) if prefix_map is not None else None, dataset=dataset,
        dataset_options=parse_key_values(options["dataset_options"], "--dataset-option"),
        labels=read_label_file(labels_file) if labels_file else None, labels_file=labels_file,
        model_options=parse_key_values(options["model_options"], "--model-option"), reference=options["reference"],
        reference_options=parse_key_values(options["reference_options"], "--reference-option"),
        max_tokens=options["max_tokens"], limit=options["limit"], options=config,
        out_dir=Path(out) if out else None, plot=not options["no_plot"], exports=tuple(options["exports"]))


def _check_sources(prefix_map: Any, dataset: str | None, options: dict[str, Any]) -> None:
    if (prefix_map is None) == (dataset is None):
        raise click.UsageError("give either a prefix MAP or --dataset NAME (not both); MAP may also be given "
                               "as --prefix_map MAP")
    if options["dataset_options"] and dataset is None:
        raise click.UsageError("--dataset-option needs --dataset")
    if options["labels_file"] and dataset is None:
        raise click.UsageError("--labels is for --dataset; a prefix map carries its labels")


def _signals_and_fractions(signals: str, k: str, reference: str | None) -> tuple[list[str], Any]:
    """--signals and --min-k-fraction parsed; ``ref`` added by --reference (and refused without it)."""
    from mia_core.attack.signals import parse_fractions, parse_signals

    try:
        names = parse_signals(signals)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from None
    try:
        fractions = parse_fractions(k)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-k-fraction") from None
    if reference and "ref" not in names:
        names.append("ref")
    if "ref" in names and not reference:
        raise click.UsageError("the ref signal needs a reference model: add --reference MODEL")
    return names, fractions[0] if len(fractions) == 1 else fractions


def print_outcome(outcome: Any, is_map: bool) -> None:
    """The AUC table, counts, cost, warnings and the paths written, as `mia attack` prints them."""
    from mia_core.attack import report

    if outcome.metrics:
        click.echo(report.format_table(outcome.metrics))
        click.echo(report.format_rows(outcome.counts))
    cost = report.format_passes(outcome.attrs.get("forward_passes_per_string"))
    if cost:
        click.echo(cost)
    for warning in outcome.warnings:
        click.echo(f"warning: {warning}")
    if is_map:
        click.echo(report.format_extracted(outcome.counts))
    if outcome.attrs.get("probabilistic"):
        from mia_core.matching.probabilistic import format_summary

        click.echo(format_summary(outcome.attrs["probabilistic"]))
    click.echo(f"results: {outcome.path}")
    for extra in ([outcome.plot] if outcome.plot else []) + outcome.exports:
        click.echo(f"         {extra}")


def _parse_sampling(options: tuple[str, ...]):
    """``temperature=0.8 top_k=40 top_p=0.95`` → a non-greedy ``Sampling`` (temperature 1 unless given)."""
    from mia_core.cli.options import parse_key_values
    from mia_core.errors import UsageError
    from mia_core.types import Sampling

    values = parse_key_values(options, "--sampling")
    unknown = set(values) - {"temperature", "top_k", "top_p"}
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(sorted(unknown))}; use temperature, top_k, top_p",
                                 param_hint="--sampling")
    try:
        temperature = float(values.get("temperature", 1.0))
        top_k = int(values["top_k"]) if "top_k" in values else None
        top_p = float(values["top_p"]) if "top_p" in values else None
    except ValueError as exc:
        raise click.BadParameter(f"not a number: {exc}", param_hint="--sampling") from None
    if not temperature > 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise click.BadParameter("needs temperature > 0, top_k ≥ 1 and top_p in (0, 1]", param_hint="--sampling")
    try:  # Sampling refuses infinity and integers beyond int64
        return Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    except UsageError as exc:
        raise click.BadParameter(f"{exc.option} {exc.message}", param_hint="--sampling") from None


commands = [attack]
