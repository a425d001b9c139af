"""`mia prefix`: build a prefix map from a dataset with a model's tokenizer."""

from typing import Any

import click

from mia_core.cli.options import SEED, Count, dataset_option, parse_key_values, quiet_option, renamed_option
from mia_core.defaults import DEFAULT_DATASET, DEFAULT_MODEL


class PrefixLocType(click.ParamType):
    """``start`` (or the seed's ``tart``), ``random`` or a non-negative token offset."""

    name = "start|random|INT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | int:
        from mia_core.extraction.prefix import parse_prefix_loc

        try:
            return parse_prefix_loc(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class SizeType(click.ParamType):
    """``all`` or a positive number of samples."""

    name = "all|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
            return None
        try:
            size = int(value)
        except (TypeError, ValueError):
            self.fail(f"expected 'all' or a positive integer, got {value!r}", param, ctx)
        if size <= 0:
            self.fail(f"expected 'all' or a positive integer, got {value!r}", param, ctx)
        return size


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Model whose tokenizer is used (see `mia models`).")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="Dataset to load (see `mia datasets`).")
@click.option("--prefix_tokens", "--prefix-tokens", "prefix_tokens", type=Count(min=1), default=10,
              show_default=True, help="Length of each prefix in tokens.")
@click.option("--prefix_loc", "--prefix-loc", "prefix_loc", type=PrefixLocType(), default="start",
              show_default=True,
              help="Where the prefix starts: start, random, or a token offset (clamped to "
                   "sample length - prefix_tokens).")
@click.option("--suffix_tokens", "--suffix-tokens", "suffix_tokens", type=Count(min=0), default=50,
              show_default=True, help="Tokens of true continuation kept after each prefix (for scoring).")
@click.option("--min-suffix-tokens", "--min_suffix_tokens", "min_suffix_tokens", type=Count(min=0),
              default=0, show_default=True,
              help="Skip samples whose true suffix would be shorter than N tokens (N <= --suffix_tokens); "
                   "with N = --suffix_tokens every row counts in mia score.")
@click.option("--size", type=SizeType(), default="all", show_default=True,
              help="Number of usable samples in the map: all, or N.")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Also store the tokenized dataset (tokens, ids, texts) in the map.")
@click.option("--crop/--no-crop", default=False, show_default=True,
              help="With --save, store only the samples read until the map holds --size rows "
                   "(else the whole dataset).")
@click.option("--balance", is_flag=True,
              help="With --size N: draw the N samples at random (--seed), balanced over member/nonmember labels, "
                   "among the samples with a full suffix (so every row counts in mia score).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of --prefix_loc random and --balance.")
@click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False), default="Prefixes",
              show_default=True, help="Folder the map folder is created in.")
@renamed_option("--out", "--out-dir", "(--out names the exact file or folder a command writes)", dest="old_out")
@dataset_option
@quiet_option
def prefix(**options: Any) -> None:
    """Build a prefix map: tokenized prefixes (and their true suffixes) cut from a dataset.

    Writes OUT_DIR/{model}_{dataset}_{prefix_tokens}_{prefix_loc}_{timestamp}/prefix_map.h5 and
    prints the folder's path. On stderr: per label, the rows and those with a full suffix (the rows
    mia score counts), and a warning when leaving out the others shifts a label's share by more
    than 5 percentage points.

    \b
    Example:
      mia prefix --model gemma-3-270m --dataset Corpus --prefix_tokens 32 --prefix_loc random --seed 1
    """
    from mia_core.extraction.prefix import build_prefix_map

    o = options
    if o["balance"] and o["size"] is None:
        raise click.UsageError("--balance draws --size N samples: give --size N")
    if o["min_suffix_tokens"] > o["suffix_tokens"]:
        raise click.UsageError(f"--min-suffix-tokens {o['min_suffix_tokens']} is more than --suffix_tokens "
                               f"{o['suffix_tokens']}: a suffix is never longer than what is kept")
    recipe = {key: o[key] for key in ("prefix_loc", "size", "save", "crop", "suffix_tokens", "seed", "quiet",
                                      "balance", "min_suffix_tokens")}
    folder = build_prefix_map(o["model"], o["dataset"], o["prefix_tokens"], out=o["old_out"] or o["out"],
                              dataset_options=parse_key_values(o["dataset_options"], "--dataset-option"), **recipe)
    _say_if_unlabelled(folder)
    _say_eligibility(folder, o["quiet"])
    click.echo(str(folder))


def _say_if_unlabelled(folder: Any) -> None:
    """One line on stderr when no row of the map has a member/nonmember label (mia attack needs them)."""
    from mia_core.attack.labels import normalize_label
    from mia_core.formats.prefixmap import PrefixMap

    labels = PrefixMap(folder).read("sample_label")
    if not any(normalize_label(v) for v in labels):
        click.echo("mia prefix: the map has no member/nonmember labels (mia attack needs them): give them with "
                   "--dataset-option label_field=FIELD, label=member|nonmember, or member/ and nonmember/ folders",
                   err=True)


def _say_eligibility(folder: Any, quiet: bool) -> None:
    """Per label, rows and rows with a full suffix (on stderr), and the balance warning (even with -q)."""
    from mia_core.extraction.prefix import eligibility_table, label_shift_warning
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(folder)
    by_label = pmap.attrs.get("rows_by_label") or {}
    if not by_label:
        return
    if not quiet:
        dropped = int(pmap.attrs.get("samples_short_suffix") or 0)
        click.echo("rows per label (mia score counts the rows with a full suffix"
                   + (f"; {dropped} samples skipped by --min-suffix-tokens" if dropped else "") + "):", err=True)
        click.echo(eligibility_table(by_label, pmap.suffix_tokens), err=True)
    warning = label_shift_warning(by_label)
    if warning:
        click.echo(f"warning: {warning}", err=True)


commands = [prefix]
