"""``mia index``: build a sharded corpus index, resume one, or link an existing infini-gram index.

tokengrams, numpy-heavy builders and tokenizers are imported inside the command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from mia_core.cli.options import Count, dataset_option, parse_key_values, quiet_option

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'2G', '512M', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size such as 2G or 512M", param_hint="--max-memory")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()])


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--prefix-map", "--prefix_map", "prefix_map", default=None,
              help="Index the dataset saved in this prefix map (its tokens, same tokenizer).")
@click.option("--model", "--tokenizer", "model", default=None,
              help="Tokenizer (model name) to tokenize --dataset with (or that --infini-gram was built with).")
@click.option("--dataset", default=None, help="Dataset to tokenize and index (read record by record).")
@dataset_option
@click.option("--infini-gram", "--infini_gram", "infini_gram", type=click.Path(path_type=Path), default=None,
              help="Link an existing infini-gram index folder (tokenized.N, table.N, offset.N) instead of building.")
@click.option("--token-width", "--token_width", type=click.Choice(["1", "2", "4"]), default="2", show_default=True,
              help="With --infini-gram: bytes per token of that index (u8/u16/u32).")
@click.option("--batch-size", "--batch_size", type=Count(), default=256, show_default=True,
              help="Documents tokenized per batch.")
@click.option("--window", "windows", type=Count(), multiple=True,
              help="Window length given a fingerprint table for fast membership (repeatable; default 50).")
@click.option("--max-memory", "--max_memory", default="2G", show_default=True,
              help="Memory for building one shard (sets the shard size; see docs/index.md).")
@click.option("--shard-tokens", "--shard_tokens", type=Count(), default=None,
              help="Tokens per shard (overrides --max-memory).")
@click.option("--resume", is_flag=True, help="Continue a build interrupted between shards (OUT.partial).")
@click.option("--json", "as_json", is_flag=True, help="Print the index metadata as JSON.")
@quiet_option
def index(**options: Any) -> None:
    """Build a sharded corpus index (suffix tables + window fingerprints) in folder OUT.

    \b
    Examples:
      mia index Prefixes/corpus_gemma --model gemma-3-270m --dataset corpus
      mia index Prefixes/pile --model gemma-3-270m --dataset hf:json \\
          --dataset-option data_files=pile.jsonl --dataset-option streaming=true --max-memory 4G
      mia index Prefixes/pile --model gemma-3-270m --dataset hf:json ... --resume   # after an interruption
      mia index Prefixes/MAP_index --prefix_map Prefixes/gemma-3-270m_Corpus_10_start_20261127_143015
      mia index Prefixes/pileval_llama --infini-gram ~/v4_pileval_llama --model llama-2-7b
    """
    meta = _build(options)
    if options["as_json"]:
        click.echo(json.dumps(meta, indent=2, default=str))
    else:
        click.echo(_summary(meta, options["out"]))


def _build(o: dict[str, Any]) -> dict[str, Any]:
    """Build (or link) the index the options describe; returns its metadata."""
    from mia_core.formats.corpus_index.shard_writer import shard_tokens_for

    if sum(o[k] is not None for k in ("prefix_map", "dataset", "infini_gram")) != 1:
        raise click.UsageError("give one of --prefix_map MAP, --dataset NAME (with --model) or --infini-gram DIR "
                               "(with --model)")
    for key, flag in (("batch_size", "--batch-size"), ("shard_tokens", "--shard-tokens")):
        if o[key] is not None and o[key] < 1:
            raise click.BadParameter("must be at least 1", param_hint=flag)
    if any(w < 1 for w in o["windows"]):
        raise click.BadParameter("must be at least 1", param_hint="--window")
    memory = parse_size(o["max_memory"])
    if memory < 1 << 20:
        raise click.BadParameter("at least 1M", param_hint="--max-memory")
    build = {"shard_tokens": o["shard_tokens"] or shard_tokens_for(memory), "windows": o["windows"] or (50,),
             "resume": o["resume"]}
    out, model = o["out"], o["model"]
    if o["infini_gram"] is not None:
        return _link(out, o["infini_gram"], model, int(o["token_width"]), o["dataset_options"])
    if o["prefix_map"] is not None:
        from mia_core.scoring.build import index_prefix_map

        if model is not None or o["dataset_options"]:
            raise click.UsageError("--model/--dataset-option do not apply with --prefix_map (the map's "
                                   "tokens and tokenizer are used)")
        return index_prefix_map(out, o["prefix_map"], quiet=o["quiet"], **build)
    from mia_core.scoring.build import index_dataset

    if model is None:
        raise click.UsageError("--dataset needs --model (the tokenizer of the runs you will score)")
    options = parse_key_values(o["dataset_options"], "--dataset-option")
    return index_dataset(out, model, o["dataset"], options, batch_size=o["batch_size"], quiet=o["quiet"], **build)


def _summary(meta: dict[str, Any], out: Path) -> str:
    """One line: what was indexed (or linked), how fast, and where."""
    if meta.get("kind") == "infini-gram":
        return (f"linked infini-gram index {meta['path']} ({meta['tokens']} tokens in {len(meta['shards'])} "
                f"shards, tokenizer {meta['tokenizer']}) → {out}")
    rate = meta["tokens"] / meta["build_s"] if meta["build_s"] else float("inf")
    resumed = f", resumed after {meta['resumed_documents']} documents" if meta.get("resumed_documents") else ""
    return (f"indexed {meta['tokens']} tokens of {meta['documents']} documents in {len(meta['shards'])} "
            f"shard(s) ({meta['dtype']}, tokenizer {meta['tokenizer']}, windows "
            f"{','.join(map(str, meta['windows']))}) in {meta['build_s']:.1f} s ({rate / 1e6:.2f} M tokens/s"
            f"{resumed}) → {out}")


def _link(out: Path, folder: Path, model: str | None, token_width: int, dataset_options: tuple[str, ...]) -> dict:
    from mia_core import registry
    from mia_core.formats.corpus_index.infinigram import link_infini_gram

    if model is None:
        raise click.UsageError("--infini-gram needs --model: the tokenizer that index was built with")
    if dataset_options:
        raise click.UsageError("--dataset-option does not apply with --infini-gram")
    tokenizer = registry.tokenizers.create(model)
    return link_infini_gram(out, folder, getattr(tokenizer, "name", model), tokenizer.fingerprint,
                            int(tokenizer.vocab_size), token_width)


commands = [index]
