"""``mia calibrate``: fine-tune on a seeded random half of a dataset, then measure what the attacks
and the extraction pipeline find, against the base model as control (docs/calibrate.md)."""

from pathlib import Path
from typing import Any

import click

from mia_core.cli.options import (
    SEED,
    Count,
    Number,
    dataset_option,
    model_option,
    parse_key_values,
    positive_ints,
    quiet_option,
)


@click.command()
@click.option("--model", required=True, help="Model to fine-tune (a local Hugging Face model: name or folder).")
@model_option
@click.option("--dataset", default="corpus", show_default=True,
              help="Dataset whose samples are split at random (its own labels are ignored).")
@dataset_option
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split, canaries and training.")
@click.option("--epochs", type=Count(min=1), default=3, show_default=True)
@click.option("--lr", "--learning-rate", "learning_rate", type=Number(min=0, min_open=True),
              help="Learning rate (default 2e-4 for full fine-tuning, 1e-3 for LoRA).")
@click.option("--train-batch-size", "--train_batch_size", "train_batch_size", type=Count(min=1), default=8,
              show_default=True, help="Texts per optimizer step.")
@click.option("--method", type=click.Choice(["auto", "full", "lora"]), default="auto", show_default=True,
              help="Full fine-tuning, LoRA (peft), or auto: full up to --full-max-params parameters, LoRA above.")
@click.option("--lora-rank", "--lora_rank", "lora_rank", type=Count(min=1), default=16, show_default=True)
@click.option("--full-max-params", "--full_max_params", "full_max_params", type=Count(min=1),
              default=1_000_000_000, show_default=True, help="Largest model auto fine-tunes fully.")
@click.option("--max-tokens", "--max_tokens", "max_tokens", type=Count(min=2), default=64,
              show_default=True, help="Tokens of each sample trained on and scored (its start).")
@click.option("--prefix-tokens", "--prefix_tokens", "prefix_tokens", type=Count(min=1), default=32,
              show_default=True, help="Extraction check: prefix length at each sample's start.")
@click.option("--suffix-tokens", "--suffix_tokens", "suffix_tokens", type=Count(min=1), default=32,
              show_default=True, help="Extraction check: tokens that must follow the prefix.")
@click.option("--canaries", type=Count(min=0), default=0, show_default=True,
              help="Random canaries per repetition count (plus as many never inserted, as control).")
@click.option("--canary-repeats", "--canary_repeats", "canary_repeats", default="1,2,4,8,16", show_default=True,
              callback=positive_ints,
              help="How many times each group of canaries is inserted.")
@click.option("--canary-digits", "--canary_digits", "canary_digits", type=Count(1, 12), default=6,
              show_default=True, help="Random digits per canary secret (|R| = 10^digits).")
@click.option("--canary-candidates", "--canary_candidates", "canary_candidates", type=Count(min=1),
              default=1000, show_default=True, help="Candidate secrets each canary is ranked against.")
@click.option("--batch-size", "--batch_size", "batch_size", type=Count(min=1), default=8, show_default=True,
              help="Batch size of scoring.")
@click.option("--bootstrap", type=Count(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the AUC intervals.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("Calibrations"),
              show_default=True, help="Folder for the calibration folder (split, model, maps, attacks, report).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@quiet_option
def calibrate(**options) -> None:
    """Ground truth for membership inference: a randomized controlled trial on MODEL.

    Draws a seeded random half of DATASET's samples as members, fine-tunes a copy of MODEL on
    them (plus canaries), then runs every attack signal and the extraction check on the
    fine-tuned model and on the base model (the control) with the true labels. Writes the
    split, the fine-tuned model (a folder every command takes as --model) and the report.

    \b
    Examples:
      mia calibrate --model smollm2-135m --dataset corpus
      mia calibrate --model smollm2-135m --canaries 4 --epochs 5
      mia calibrate --model hf:google/gemma-2b --method lora --model-option device=cuda
    """
    import json
    import sys

    from mia_core.calibrate.report import format_report
    from mia_core.calibrate.run import calibrate as run_calibration

    config = calibrate_config(options)
    try:
        report = run_calibration(config)
    except KeyboardInterrupt:
        click.echo("mia calibrate: interrupted; the unfinished fine-tuned model was removed (the calibration "
                   "folder keeps the split)", err=True)
        sys.exit(130)
    click.echo(json.dumps(report, indent=2, default=str) if options["as_json"] else format_report(report))



def calibrate_config(o: dict[str, Any]) -> Any:
    """The typed ``CalibrateConfig`` of `mia calibrate`'s options."""
    from mia_core.calibrate.run import CalibrateConfig
    from mia_core.calibrate.training import FinetuneConfig

    finetune = FinetuneConfig(epochs=o["epochs"], learning_rate=o["learning_rate"] or 0.0,
                              batch_size=o["train_batch_size"], max_tokens=o["max_tokens"], method=o["method"],
                              seed=o["seed"], lora_rank=o["lora_rank"], full_max_params=o["full_max_params"],
                              quiet=o["quiet"])
    return CalibrateConfig(model=o["model"], dataset=o["dataset"],
                           dataset_options=parse_key_values(o["dataset_options"], "--dataset-option"),
                           model_options=parse_key_values(o["model_options"], "--model-option"), seed=o["seed"],
                           finetune=finetune, canaries=o["canaries"],
                           canary_repeats=tuple(sorted(set(o["canary_repeats"]))),
                           canary_digits=o["canary_digits"], canary_candidates=o["canary_candidates"],
                           prefix_tokens=o["prefix_tokens"], suffix_tokens=o["suffix_tokens"],
                           batch_size=o["batch_size"], n_boot=o["bootstrap"], out=o["out"], quiet=o["quiet"])


commands = [calibrate]
