"""``mia dataset-inference`` and ``mia contamination``: set-level tests with p-values (docs/dataset_inference.md)."""

import json
from pathlib import Path

import click

from mia_core.cli.options import (
    SEED,
    Count,
    Number,
    dataset_option,
    model_option,
    parse_key_values,
    prefix_map_option,
    quiet_option,
)
from mia_core.defaults import DEFAULT_MODEL

DEFAULT_SIGNALS = "loss,zlib,mink,minkpp,recall,ne"
DEFAULT_FRACTIONS = "0.05,0.1,0.2,0.3,0.4,0.5,0.6"
DEFAULT_ALPHA = 0.05
DEFAULT_MAX_SHARDS = 50  # Oren et al.'s default

alpha_option = click.option("--alpha", type=Number(0, 1, min_open=True, max_open=True),
                            default=DEFAULT_ALPHA, show_default=True,
                            help="Level of the verdict line (the p-value is printed whatever it is).")
out_dir_option = click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False),
                              help="Folder the JSON results are created in (default: MAP/setlevel or "
                                   "Prefixes/setlevel).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the results record as JSON.")


@click.command("dataset-inference")
@click.option("--suspect", help="The suspect set: a dataset (name or path) whose training you test.")
@click.option("--validation", help="The validation set: a dataset from the same distribution, known not trained on.")
@prefix_map_option
@dataset_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model (registry name or path).")
@model_option
@click.option("--signals", default=DEFAULT_SIGNALS, show_default=True,
              help="The features: comma-separated mia attack signals (loss, zlib, mink, minkpp, recall, ne; ref is "
                   "added by --reference).")
@click.option("--reference", help="Reference model: adds the ref feature.")
@click.option("--reference-option", "--reference_option", "reference_options", multiple=True, metavar="KEY=VALUE",
              help="Option for the reference backend (repeatable).")
@click.option("--min-k-fraction", "--min_k_fraction", "k", default=DEFAULT_FRACTIONS, show_default=True,
              help="Fractions of the Min-K% and Min-K%++ sweeps (one feature each).")
@click.option("--neighbours", "--neighbors", type=Count(min=1), default=5, show_default=True,
              help="Neighbours per string for the ne feature (one forward pass each).")
@click.option("--splits", type=Count(min=1), default=10, show_default=True,
              help="Seeded fitting/testing splits, their p-values merged into one.")
@alpha_option
@click.option("--batch-size", "--batch_size", type=Count(min=1), default=8, show_default=True)
@click.option("--max-tokens", "--max_tokens", type=Count(min=1), default=512, show_default=True,
              help="Longest string scored (tokens); longer ones are truncated.")
@click.option("--limit", type=Count(min=1), help="Only the first N strings of each set.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the splits and of ReCaLL's prefix.")
@out_dir_option
@json_option
@quiet_option
def dataset_inference(suspect, validation, prefix_map, dataset_options, model, model_options, signals, reference,
                      reference_options, k, neighbours, splits, alpha, batch_size, max_tokens, limit, seed, out,
                      as_json, quiet) -> None:
    """Dataset inference (Maini et al. 2024): was the SUSPECT set trained on?

    Every per-string membership signal of a suspect set and of a validation set from the same
    distribution, a linear model fitted on half of each, a one-sided Welch t-test on the other half;
    prints the p-value, the sets' sizes, the features' weights and the blind baseline's verdict.

    \b
    Examples:
      mia dataset-inference --suspect my_book.jsonl --validation unpublished.jsonl --model smollm2-135m
      mia dataset-inference --prefix_map MAP --model smollm2-135m    (members = suspect)
    """
    from mia_core.attack import run as ar
    from mia_core.attack.signals import parse_fractions, parse_signals
    from mia_core.formats.names import safe_name, timestamp
    from mia_core.setlevel import run as sr

    if prefix_map is not None and (suspect or validation):
        raise click.UsageError("give either --prefix_map MAP or --suspect and --validation, not both")
    if prefix_map is None and not (suspect and validation):
        raise click.UsageError("give --suspect DATA and --validation DATA (or a labelled --prefix_map MAP)")
    try:
        names = [n for n in parse_signals(signals) if n != "ref"]
        fractions = parse_fractions(k)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    pmap = _labelled_map(prefix_map) if prefix_map is not None else None
    backend, ref_backend, limit_tokens, ref_limit = ar.load_scoring_models(
        model, parse_key_values(model_options, "--model-option"), reference,
        parse_key_values(reference_options, "--reference-option"), max_tokens)
    if pmap is not None:
        items, _ = ar.load_map_items(pmap, backend, limit_tokens, None, quiet)
        suspect_items = [it for it in items if it.label == "member"][:limit]
        validation_items = [it for it in items if it.label == "nonmember"][:limit]
        folder, source = pmap.folder / "setlevel", {"prefix_map": str(pmap.folder)}
        stem = f"{safe_name(model)}_dataset-inference_{timestamp()}"
    else:
        options = parse_key_values(dataset_options, "--dataset-option")
        suspect_items = _dataset_items(suspect, options, backend, limit_tokens, limit, quiet)
        validation_items = _dataset_items(validation, options, backend, limit_tokens, limit, quiet)
        folder, source = Path("Prefixes") / "setlevel", {"suspect": suspect, "validation": validation,
                                                          "dataset_options": options}
        stem = f"{safe_name(model)}_{safe_name(suspect)}_dataset-inference_{timestamp()}"
    config = sr.FeatureConfig(signals=names, fractions=fractions, neighbours=neighbours, batch_size=batch_size,
                              seed=seed, quiet=quiet)
    features = sr.set_features(backend, suspect_items, validation_items, config, ref_backend, ref_limit)
    result = sr.dataset_inference(features, splits, seed)
    record = {"kind": "dataset-inference", "model": model, "reference": reference, **source, "alpha": alpha,
              "max_tokens": limit_tokens, "signals": names, "min_k_fractions": fractions,
              "result": result.to_dict(), "missing": features.missing, "blind": features.blind,
              "warnings": features.warnings, "forward_passes_per_string": features.passes}
    _finish(record, backend, Path(out) if out else folder, stem, as_json)


@click.command("contamination")
@click.option("--dataset", required=True, help="The benchmark: a dataset whose samples, in order, are its examples.")
@dataset_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model (registry name or path).")
@model_option
@click.option("--permutations", type=Count(min=1), default=99, show_default=True,
              help="Seeded permutations of each shard; the p-value's resolution is 1/(N+1).")
@click.option("--shards", type=Count(min=1),
              help="Shards of consecutive examples (default: min(50, examples // 2)).")
@click.option("--context", type=Count(min=2),
              help="Tokens per scoring window (default: the model's context); longer shards slide with half of it.")
@alpha_option
@click.option("--batch-size", "--batch_size", type=Count(min=1), default=8, show_default=True)
@click.option("--limit", type=Count(min=1), help="Only the first N examples.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the permutations.")
@out_dir_option
@json_option
@quiet_option
def contamination(dataset, dataset_options, model, model_options, permutations, shards, context, alpha,
                  batch_size, limit, seed, out, as_json, quiet) -> None:
    """Test-set contamination (Oren et al. 2024): did the model see DATASET in its canonical order?

    The examples' log-likelihood in their published order against seeded permutations, in shards of
    consecutive examples: an exact permutation p-value and Oren et al.'s sharded t-test.

    \b
    Examples:
      mia contamination --dataset benchmark.jsonl --model smollm2-135m
      mia contamination --dataset benchmark.jsonl --model hf:EleutherAI/pythia-160m --permutations 249 --shards 50
    """
    from mia_core import registry
    from mia_core.attack import run as ar
    from mia_core.errors import MiaError
    from mia_core.formats.names import safe_name, timestamp
    from mia_core.setlevel import contamination as ct
    from mia_core.setlevel import run as sr

    options = parse_key_values(dataset_options, "--dataset-option")
    texts = _benchmark_texts(dataset, options, limit, quiet)
    n_shards = shards or max(1, min(DEFAULT_MAX_SHARDS, len(texts) // ct.MIN_EXAMPLES_PER_SHARD))
    needed = n_shards * ct.MIN_EXAMPLES_PER_SHARD
    if len(texts) < needed:
        raise MiaError(f"dataset {dataset!r} has {len(texts)} usable example(s): {n_shards} shard(s) need at least "
                       f"{needed} ({ct.MIN_EXAMPLES_PER_SHARD} per shard: a shard of one example has one order); "
                       "use fewer --shards or more examples")
    ar.check_registered_scoring(model)
    backend = registry.backends.create(model, parse_key_values(model_options, "--model-option"))
    ar.require_scoring(backend, model)
    result = sr.contamination(backend, texts, n_shards, permutations, seed, batch_size, context, quiet)
    warnings = []
    if result.resolution > alpha:
        warnings.append(f"with {permutations} permutations the permutation p-value cannot go below "
                        f"{result.resolution:.3g} > {alpha:g}: use at least {int(-(-1 // alpha)) - 1} "
                        "permutations to be able to reject at this level")
    record = {"kind": "contamination", "model": model, "dataset": dataset, "dataset_options": options,
              "alpha": alpha, "result": result.to_dict(), "warnings": warnings}
    _finish(record, backend, Path(out) if out else Path("Prefixes") / "setlevel",
            f"{safe_name(model)}_{safe_name(dataset)}_contamination_{timestamp()}", as_json)


def _labelled_map(prefix_map: str):
    """The prefix map, refused in one line (before any model loads) unless it has both labels."""
    from mia_core.attack.labels import normalize_label
    from mia_core.errors import MiaError
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(prefix_map)
    labels = [normalize_label(v) for v in pmap.read("sample_label", slice(0, len(pmap)))]
    if "member" not in labels or "nonmember" not in labels:
        raise MiaError(f"prefix map {pmap.folder.name} lacks member and nonmember labels ({labels.count('member')} "
                       f"members, {labels.count('nonmember')} non-members of {len(labels)} windows): dataset "
                       "inference takes members as the suspect set and non-members as the validation set; use "
                       "--suspect DATA --validation DATA instead")
    return pmap


def _dataset_items(name, options, backend, limit_tokens, limit, quiet):
    from mia_core import registry
    from mia_core.attack import run as ar

    ds = registry.datasets.create(name, options)
    items, _ = ar.load_dataset_items(ds, backend, limit_tokens, None, limit, getattr(ds, "length", None), quiet)
    return items


def _benchmark_texts(name, options, limit, quiet) -> list[str]:
    """The benchmark's examples in dataset order (empty ones skipped: the others keep their order)."""
    from mia_core import registry
    from mia_core.progress import note

    texts, empty = [], 0
    for sample in registry.datasets.create(name, options):
        if limit is not None and len(texts) >= limit:
            break
        if sample.text and sample.text.strip():
            texts.append(sample.text)
        else:
            empty += 1
    if empty:
        note(f"skipped {empty} empty example(s)", quiet)
    return texts


def _finish(record, backend, folder: Path, stem: str, as_json: bool) -> None:
    """Write the JSON results (with provenance) and print the summary or the record."""
    from mia_core.formats.provenance import provenance
    from mia_core.formats.setlevel_results import write_setlevel_results
    from mia_core.setlevel import report

    try:
        described = backend.describe()
    except Exception:  # describe() is informative only, as in mia attack
        described = {}
    record["provenance"] = provenance(described if isinstance(described, dict) else {})
    path = write_setlevel_results(folder, stem, record)
    record["results"] = str(path)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=lambda v: v.tolist()))
        return
    text = (report.format_dataset_inference if record["kind"] == "dataset-inference" else
            report.format_contamination)(record)
    click.echo(text)
    click.echo(f"results: {path}")


commands = [dataset_inference, contamination]
