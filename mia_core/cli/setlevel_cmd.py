"""``mia dataset-inference`` and ``mia contamination``: set-level tests with p-values (docs/dataset_inference.md)."""

import json
from pathlib import Path
from typing import Any

import click

from mia_core.cli import options as opt
from mia_core.defaults import DEFAULT_MODEL
from mia_core.setlevel import DEFAULT_ALPHA

DEFAULT_SIGNALS = "loss,zlib,mink,minkpp,recall,ne"
DEFAULT_FRACTIONS = "0.05,0.1,0.2,0.3,0.4,0.5,0.6"

alpha_option = click.option("--alpha", type=opt.Number(0, 1, min_open=True, max_open=True),
                            default=DEFAULT_ALPHA, show_default=True,
                            help="Level of the verdict line (the p-value is printed whatever it is).")
out_dir_option = click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False),
                              help="Folder the JSON results are created in (default: MAP/setlevel or "
                                   "Prefixes/setlevel).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the results record as JSON.")


def output_options(command: Any) -> Any:
    """Where the results go and how they are printed: --out-dir, --json, -q (both set-level tests)."""
    return out_dir_option(json_option(opt.quiet_option(command)))


@click.command("dataset-inference")
@click.option("--suspect", help="The suspect set: a dataset (name or path) whose training you test.")
@click.option("--validation", help="The validation set: a dataset from the same distribution, known not trained on.")
@opt.prefix_map_option
@opt.dataset_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model (registry name or path).")
@opt.model_option
@click.option("--signals", default=DEFAULT_SIGNALS, show_default=True,
              help="The features: comma-separated mia attack signals (loss, zlib, mink, minkpp, recall, ne; ref is "
                   "added by --reference).")
@click.option("--reference", help="Reference model: adds the ref feature.")
@click.option("--reference-option", "--reference_option", "reference_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the reference backend (repeatable).")
@click.option("--min-k-fraction", "--min_k_fraction", "k", default=DEFAULT_FRACTIONS, show_default=True,
              help="Fractions of the Min-K% and Min-K%++ sweeps (one feature each).")
@click.option("--neighbours", "--neighbors", type=opt.Count(min=1), default=5, show_default=True,
              help="Neighbours per string for the ne feature (one forward pass each).")
@click.option("--splits", type=opt.Count(min=1), default=10, show_default=True,
              help="Seeded fitting/testing splits, their p-values merged into one.")
@alpha_option
@click.option("--batch-size", "--batch_size", type=opt.Count(min=1), default=8, show_default=True)
@click.option("--max-tokens", "--max_tokens", type=opt.Count(min=1), default=512, show_default=True,
              help="Longest string scored (tokens); longer ones are truncated.")
@click.option("--limit", type=opt.Count(min=1), help="Only the first N strings of each set.")
@click.option("--seed", type=opt.SEED, default=0, show_default=True, help="Seed of the splits and of ReCaLL's prefix.")
@output_options
def dataset_inference(**options: Any) -> None:
    """Dataset inference (Maini et al. 2024): was the SUSPECT set trained on?

    Every per-string membership signal of a suspect set and of a validation set from the same
    distribution, a linear model fitted on half of each, a one-sided Welch t-test on the other half;
    prints the p-value, the sets' sizes, the features' weights and the blind baseline's verdict.

    \b
    Examples:
      mia dataset-inference --suspect my_book.jsonl --validation unpublished.jsonl --model smollm2-135m
      mia dataset-inference --prefix_map MAP --model smollm2-135m    (members = suspect)
    """
    from mia_core.setlevel import workflow

    record, path = workflow.run_dataset_inference(_dataset_inference_request(options))
    _print(record, path, options["as_json"])


def _dataset_inference_request(o: dict[str, Any]) -> Any:
    """The typed request from the command's options; the combinations of sets checked before anything loads."""
    from mia_core.attack.signals import parse_fractions, parse_signals
    from mia_core.setlevel import run as sr
    from mia_core.setlevel.workflow import DatasetInferenceRequest

    if o["prefix_map"] is not None and (o["suspect"] or o["validation"]):
        raise click.UsageError("give either --prefix_map MAP or --suspect and --validation, not both")
    if o["prefix_map"] is None and not (o["suspect"] and o["validation"]):
        raise click.UsageError("give --suspect DATA and --validation DATA (or a labelled --prefix_map MAP)")
    try:
        names = [n for n in parse_signals(o["signals"]) if n != "ref"]
        fractions = parse_fractions(o["k"])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    features = sr.FeatureConfig(signals=names, fractions=fractions, neighbours=o["neighbours"],
                                batch_size=o["batch_size"], seed=o["seed"], quiet=o["quiet"])
    return DatasetInferenceRequest(
        model=o["model"], model_options=opt.parse_key_values(o["model_options"], "--model-option"),
        suspect=o["suspect"], validation=o["validation"], prefix_map=o["prefix_map"],
        dataset_options=opt.parse_key_values(o["dataset_options"], "--dataset-option"), reference=o["reference"],
        reference_options=opt.parse_key_values(o["reference_options"], "--reference-option"), features=features,
        splits=o["splits"], alpha=o["alpha"], max_tokens=o["max_tokens"], limit=o["limit"],
        out_dir=Path(o["out"]) if o["out"] else None)


@click.command("contamination")
@click.option("--dataset", required=True, help="The benchmark: a dataset whose samples, in order, are its examples.")
@opt.dataset_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model (registry name or path).")
@opt.model_option
@click.option("--permutations", type=opt.Count(min=1), default=99, show_default=True,
              help="Seeded permutations of each shard; the p-value's resolution is 1/(N+1).")
@click.option("--shards", type=opt.Count(min=1),
              help="Shards of consecutive examples (default: min(50, examples // 2)).")
@click.option("--context", type=opt.Count(min=2),
              help="Tokens per scoring window (default: the model's context); longer shards slide with half of it.")
@alpha_option
@click.option("--batch-size", "--batch_size", type=opt.Count(min=1), default=8, show_default=True)
@click.option("--limit", type=opt.Count(min=1), help="Only the first N examples.")
@click.option("--seed", type=opt.SEED, default=0, show_default=True, help="Seed of the permutations.")
@output_options
def contamination(**options: Any) -> None:
    """Test-set contamination (Oren et al. 2024): did the model see DATASET in its canonical order?

    The examples' log-likelihood in their published order against seeded permutations, in shards of
    consecutive examples: an exact permutation p-value and Oren et al.'s sharded t-test.

    \b
    Examples:
      mia contamination --dataset benchmark.jsonl --model smollm2-135m
      mia contamination --dataset benchmark.jsonl --model hf:EleutherAI/pythia-160m --permutations 249 --shards 50
    """
    from mia_core.setlevel import workflow

    o = options
    request = workflow.ContaminationRequest(
        dataset=o["dataset"], model=o["model"],
        model_options=opt.parse_key_values(o["model_options"], "--model-option"),
        dataset_options=opt.parse_key_values(o["dataset_options"], "--dataset-option"), permutations=o["permutations"],
        shards=o["shards"], context=o["context"], alpha=o["alpha"], batch_size=o["batch_size"], limit=o["limit"],
        seed=o["seed"], quiet=o["quiet"], out_dir=Path(o["out"]) if o["out"] else None)
    record, path = workflow.run_contamination(request)
    _print(record, path, o["as_json"])


def _print(record: dict[str, Any], path: Path, as_json: bool) -> None:
    """The summary (or the whole record as JSON) and where it was written."""
    from mia_core.setlevel import report

    if as_json:
        click.echo(json.dumps(record, indent=2, default=lambda v: v.tolist()))
        return
    text = (report.format_dataset_inference if record["kind"] == "dataset-inference" else
            report.format_contamination)(record)
    click.echo(text)
    click.echo(f"results: {path}")


commands = [dataset_inference, contamination]
