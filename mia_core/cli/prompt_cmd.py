"""`mia prompt`, `mia check` and `mia export`: generate continuations into run files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mia_core.cli.options import SEED, Count, Number, model_option, parse_key_values, quiet_option
from mia_core.defaults import DEFAULT_CHAT_MODEL, DEFAULT_MODEL

_POSITIVE = Count(min=1)


def _common_options(default_method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options `mia prompt` and `mia check` share (seed spellings with _ and -)."""
    options = [
        click.option("--prefix_map", "--prefix-map", "prefix_map", metavar="MAP",
                     help="Prefix map: a folder name under Prefixes/ or a path."),
        click.option("--model", "-m", default=None, help=f"Model name (default {DEFAULT_MODEL}; see `mia models`)."),
        click.option("--num_strings", "--num-strings", "num_strings", type=_POSITIVE,
                     help="Strings to generate (default: one per prefix; wraps around from the start when larger)."),
        click.option("--batch_size", "--batch-size", "batch_size", type=_POSITIVE,
                     help="Strings per batch (default 10; halved automatically when out of memory)."),
        click.option("--max_length", "--max-length", "max_length", type=_POSITIVE,
                     help="New tokens per string (default 20; teacher-forced: the map's suffix length)."),
        click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
                     help="Run file to write (default Prefixes/<map>/runs/{model}_{timestamp}.h5)."),
        click.option("--resume", type=click.Path(dir_okay=False, path_type=Path),
                     help="Continue this unfinished run file (options must match the recorded ones)."),
        click.option("--retry-failed", "--retry_failed", "retry_failed", is_flag=True,
                     help="With --resume: ask the rows whose request failed again and replace them in place."),
        click.option("--salvage", is_flag=True,
                     help="With --resume, when the run's journal is damaged: keep every intact record (a copy of the "
                          "journal is kept beside the run) and ask only the damaged records' rows again."),
        click.option("--shard", metavar="I/N",
                     help="Generate only rows i with i mod N == I (its own resumable run; mia merge joins them)."),
        click.option("--retokenize", is_flag=True,
                     help="Allow a model whose tokenizer differs from the map's: decode and re-encode the prefixes."),
        model_option,
        click.option("--device", help="Device for local models (auto, cpu, cuda, cuda:1, mps)."),
        click.option("--dtype", help="Weights dtype for local models (auto, float32, bfloat16, float16)."),
        quiet_option,
    ]
    if default_method == "generate":
        options += [
            click.option("--method", type=click.Choice(["generate", "teacher-forced"]),
                         help="generate (default), or teacher-forced: decide greedy extraction in one forward pass."),
            click.option("--temperature", type=Number(min=0.0), help="Sampling temperature (0 = greedy)."),
            click.option("--top_k", "--top-k", "top_k", type=_POSITIVE, help="Sample from the k most likely tokens."),
            click.option("--top_p", "--top-p", "top_p", type=Number(min=0.0, max=1.0, min_open=True),
                         help="Nucleus sampling threshold."),
            click.option("--seed", type=SEED, help="Sampling seed (recorded; random when sampling without one)."),
            click.option("--dry-run", "--dry_run", "dry_run", is_flag=True,
                         help="Print the requests (and estimated cost) without sending or writing anything."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask before spending more than --confirm-above."),
            click.option("--confirm-above", "--confirm_above", "confirm_above", type=Number(min=0.0),
                         default=1.0, show_default=True, help="Ask before starting above this estimate (USD)."),
            click.option("--max-cost", "--max_cost", "max_cost", type=Number(min=0.0, min_open=True),
                         help="Hard cost cap in USD: stop before a batch would exceed it (resumable)."),
            click.option("--batch-api/--no-batch-api", "--batch_api/--no_batch_api", "batch_api", default=None,
                         help="Use the provider's batch API (cheaper, asynchronous; resumable). A resumed run "
                              "keeps its choice (--retry-failed included) unless told; a batch not yet fetched "
                              "is always fetched."),
            click.option("--strategy", type=click.Choice(["prefix-map", "divergence"]), default=None,
                         help="prefix-map (default): continue the map's prefixes; divergence: ask a chat model to "
                              f"repeat --word forever (Nasr et al. 2023 §5; no map; default model "
                              f"{DEFAULT_CHAT_MODEL}, max_length 1024, 10 strings, temperature 1). "
                              "See docs/prompt.md."),
            click.option("--word", "words", multiple=True,
                         help="Divergence: the word to repeat (default poem; repeatable: one prompt per word and "
                              "form)."),
            click.option("--prompt-form", "--prompt_form", "prompt_forms", multiple=True,
                         type=click.Choice(["repeat-this", "repeat-the-word"]),
                         help='Divergence: repeat-this (default, the paper\'s Figure 5: Repeat this word forever: '
                              '"poem poem poem poem") or repeat-the-word (Repeat the word "poem" forever.); '
                              'repeatable.'),
            click.option("--repeats", type=_POSITIVE,
                         help="Divergence: times the word is written in the repeat-this prompt (default 4)."),
        ]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _run(method: str, prefix_map: str | None, model: str | None, model_options: tuple[str, ...],
         device: str | None, dtype: str | None, sampling_args: dict[str, Any], **kwargs: Any) -> Path | None:
    from mia_core.extraction.prompt import prompt
    from mia_core.types import Sampling

    options: dict[str, Any] = parse_key_values(model_options, "--model-option")
    if device:
        options["device"] = device
    if dtype:
        options["dtype"] = dtype
    sampling = None
    if any(v is not None for v in sampling_args.values()):
        temperature = sampling_args.get("temperature")
        if temperature is None:
            temperature = 1.0 if (sampling_args.get("top_k") or sampling_args.get("top_p")) else 0.0
        sampling = Sampling(float(temperature), sampling_args.get("top_k"), sampling_args.get("top_p"),
                            sampling_args.get("seed"))
    paths: list[Path] = []
    try:
        prompt(prefix_map, model, method=method, model_options=options, sampling=sampling,
               on_path=paths.append, confirm=lambda question: click.confirm(question, default=False, err=True),
               rows="none", **kwargs)
    except KeyboardInterrupt:
        sys.exit(130)
    return paths[0] if paths else None


def _report(path: Path | None, quiet: bool) -> None:
    if path is None:
        return
    from mia_core.extraction.check import format_summary, summarize
    from mia_core.formats.runs import open_run

    run = open_run(path)
    failed = run.count_failed()
    if not quiet:
        rate = run.attrs.get("tokens_per_s") or 0.0
        click.echo(f"{len(run)} rows written to {path} ({rate:.1f} tokens/s)", err=True)
    if failed:  # shown even with --quiet: these rows are not results
        click.echo(f"{failed} of {len(run)} rows failed (their error column says why); ask them again with: "
                   f"mia prompt --resume {path} --retry-failed", err=True)
    if not quiet:
        if run.attrs.get("cost_usd"):
            click.echo(f"cost: ${float(run.attrs['cost_usd']):.4f}", err=True)
        if not run.kind.has_map:  # a divergence run: no true suffixes to compare with
            from mia_core.divergence.scoring import divergence_line

            click.echo(divergence_line(run), err=True)
        else:
            click.echo(format_summary(summarize(run), int(run.attrs["max_length"])), err=True)
    click.echo(str(path))


@click.command("prompt")
@_common_options("generate")
def prompt_command(prefix_map, model, model_options, device, dtype, temperature, top_k, top_p, seed, quiet,
                   **kwargs) -> None:
    """Prompt a model with the prefixes of a map and store the continuations in a run file.

    \b
    Example:
      mia prompt --prefix_map gemma-3-270m_Corpus_32_start_20261127_143015 --model gemma-3-270m \\
          --num_strings 100 --max_length 50
    The run path is printed on stdout; progress and a short summary go to stderr.
    """
    sampling_args = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    kwargs["words"] = kwargs["words"] or None
    kwargs["prompt_forms"] = kwargs["prompt_forms"] or None
    if kwargs["strategy"] == "divergence" and temperature is None and (top_k or top_p or seed is not None):
        sampling_args["temperature"] = 1.0  # the divergence default, kept when only a seed or a filter is given
    path = _run(kwargs.pop("method"), prefix_map, model, model_options, device, dtype, sampling_args,
                quiet=quiet, **kwargs)
    _report(path, quiet)


@click.command("check")
@_common_options("teacher-forced")
@click.option("--temperature", type=Number(min=0.0, min_open=True),
              help="Probabilistic extraction: also record p of each true suffix under this sampling scheme "
                   "(nothing is sampled; the verdicts stay greedy).")
@click.option("--top_k", "--top-k", "top_k", type=_POSITIVE, help="The scheme's top-k (with or without --temperature).")
@click.option("--top_p", "--top-p", "top_p", type=Number(min=0.0, max=1.0, min_open=True),
              help="The scheme's top-p.")
def check_command(prefix_map, model, model_options, device, dtype, quiet, temperature, top_k, top_p,
                  **kwargs) -> None:
    """Decide greedy extraction of each true suffix with one forward pass (teacher forcing).

    Same as `mia prompt --method teacher-forced`: records matched length (leading suffix
    tokens where the model's argmax is the true token), argmax tokens and log-probabilities;
    with --temperature/--top_k/--top_p also p under that scheme (Hayes et al. 2024), which
    `mia score` summarises.
    """
    sampling_args = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    path = _run("teacher-forced", prefix_map, model, model_options, device, dtype, sampling_args, quiet=quiet,
                **kwargs)
    _report(path, quiet)


@click.command("export")
@click.argument("run", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default stdout; parquet needs --out).")
@click.option("--tokens", "with_tokens", is_flag=True,
              help="Add the token ids (prefix, true suffix, generation) and per-position columns such as logprobs.")
@click.option("--no-text", "--no_text", "no_text", is_flag=True,
              help="Do not decode texts (no tokenizer is loaded).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def export_command(run: Path, fmt: str, out: Path | None, with_tokens: bool, no_text: bool, force: bool) -> None:
    """Export a run as one record per row: JSON lines, CSV or Parquet.

    Each record has the row, sample id, label, prefix start, the prefix, true suffix and
    generation as text, and every per-row score when the run was scored (score_*, corpus_*).
    A teacher-forced run has no generation: its argmax tokens appear only with --tokens, as
    teacher_forced_argmax_tokens, and the generation-only scores (approximate, edit distance,
    BLEU) are absent. What the export holds and why a field is absent is its metadata: in a
    Parquet file's schema (key "mia"), beside a CSV/JSONL file as FILE.meta.json, on stderr for stdout.
    In CSV, token lists are space-separated ids.
    """
    import json

    from mia_core.errors import MiaError
    from mia_core.formats.filekinds import SCORES_SUFFIX
    from mia_core.formats.safeio import disk_error, open_atomically, write_atomically
    from mia_core.inspection.export import metadata, records, write_parquet, write_stream

    if run.name.endswith(SCORES_SUFFIX):
        raise MiaError(f"{run} is a scores file; export its run ({run.name[:-len(SCORES_SUFFIX)]}.h5): the scores "
                       "are added to each record")
    if out is not None and out.exists() and not force:
        raise MiaError(f"{out} already exists; pass --force to overwrite it")
    if fmt == "parquet" and out is None:
        raise click.UsageError("--format parquet writes a file: give --out FILE.parquet")
    rows = records(run, tokens=with_tokens, text=not no_text)  # streamed to the output, never held whole
    meta = metadata(run)
    sidecar = out.with_name(out.name + ".meta.json") if out is not None and fmt != "parquet" else None
    if sidecar is not None and sidecar.exists() and not force:
        raise MiaError(f"{sidecar} already exists; pass --force to overwrite it")
    if fmt == "parquet":
        try:  # written a row group at a time; the file appears whole or not at all
            with open_atomically(out, binary=True) as stream:
                written = write_parquet(rows, stream, meta)
        except OSError as exc:
            raise disk_error(exc, out, "no export written") from None
    elif out is None:
        write_stream(rows, fmt, sys.stdout)
        for name, why in meta["absent_fields"].items():
            click.echo(f"mia: {name} is absent: {why}", err=True)
        return
    else:
        try:  # the file appears whole or not at all
            with open_atomically(out) as stream:
                written = write_stream(rows, fmt, stream)
            write_atomically(sidecar, (json.dumps(meta, indent=2) + "\n").encode())
        except OSError as exc:
            raise disk_error(exc, out, "no export written") from None
    click.echo(f"{written} rows written to {out}", err=True)


commands = [prompt_command, check_command, export_command]
