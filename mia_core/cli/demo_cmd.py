"""`mia demo`: the embedded default end to end — prefix map → prompt → score → report."""

from pathlib import Path

import click

from mia_core.cli.options import Count, quiet_option, renamed_option
from mia_core.defaults import DEFAULT_DATASET, DEFAULT_MODEL


@click.command()
@click.option("--model", default=None,
              help=f"Model (tokenizer and backend), used as given. Default: {DEFAULT_MODEL} on the fastest of its "
                   "measured paths available here whose verdicts agree with the reference's (docs/models.md).")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="Dataset name.")
@click.option("--prefix-tokens", "--prefix_tokens", "prefix_tokens", type=Count(min=1), default=32,
              show_default=True, help="Prefix length in tokens.")
@click.option("--suffix-tokens", "--suffix_tokens", "suffix_tokens", type=Count(min=1), default=50,
              show_default=True, help="True continuation kept, and tokens generated.")
@click.option("--size", type=Count(min=1), default=None, help="Number of samples (default all).")
@click.option("--batch-size", "--batch_size", "batch_size", type=Count(min=1), default=16,
              show_default=True)
@click.option("--method", type=click.Choice(["generate", "teacher-forced"]), default="generate",
              show_default=True, help="Greedy generation, or the one-pass teacher-forced check (same verdicts).")
@click.option("--out-dir", "--out_dir", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("Prefixes"), show_default=True,
              help="Folder the prefix map is created in (the run and report go inside the map).")
@renamed_option("--out", "--out-dir", "(--out names the exact file or folder a command writes)", dest="old_out")
@quiet_option
def demo(model: str | None, dataset: str, prefix_tokens: int, suffix_tokens: int, size: int | None, batch_size: int,
         method: str, out: Path, old_out: str | None, quiet: bool) -> None:
    """Run the whole pipeline on the embedded default and print a memorization report.

    Builds a prefix map of the embedded corpus with the default model's tokenizer, prompts
    that model greedily with every prefix, scores the continuations against the true
    suffixes (member vs non-member) and writes report.html with the plots. Every table counts the
    eligible rows (true suffix of full length) and names its per-position figure by run kind:
    position agreement (generated) or next-token accuracy (teacher-forced). Without --model it runs the
    default model on the fastest measured path here within docs/models.md's agreement bound, and says which.
    """
    from mia_core.extraction.prefix import build_prefix_map
    from mia_core.extraction.prompt import prompt
    from mia_core.report import write_report
    from mia_core.scoring.summary import format_summary, score_run

    out = Path(old_out) if old_out else out
    model, model_options, path_line = _model_path(model, method, batch_size)
    click.echo(f"path: {path_line}", err=True)

    click.echo(f"[1/3] prefix map: {dataset}, {prefix_tokens}-token prefixes, {model} tokenizer", err=True)
    folder = build_prefix_map(model, dataset, prefix_tokens, prefix_loc="start", size=size, suffix_tokens=suffix_tokens,
                              out=out, quiet=quiet)
    click.echo(f"[2/3] {method} with {model}: {suffix_tokens} tokens after each prefix", err=True)
    run_paths: list[Path] = []
    prompt(folder, model, model_options=model_options, batch_size=batch_size, max_length=suffix_tokens,
           quiet=quiet, method=method, on_path=run_paths.append, rows="none")
    click.echo("[3/3] scoring", err=True)
    summary = score_run(run_paths[0])
    report = write_report(run_paths, folder / "report.html")
    click.echo(format_summary(summary))
    click.echo(_member_contrast(summary, run_paths[0]))
    click.echo(_longest_matches(run_paths[0], summary["scores_file"]))
    click.echo(f"\npath:       {path_line.split(' — ')[0]}\nprefix map: {folder}\nrun:        {run_paths[0]}"
               f"\nreport:     {report}")


def _model_path(model: str | None, method: str, batch_size: int) -> tuple[str, dict, str]:
    """The model and options to run, and the line that says which and why: ``--model`` as given, or the
    default model on the path ``mia_core.path_choice`` chooses from the measured figures."""
    from mia_core.defaults import DEFAULT_MODEL_PATHS
    from mia_core.path_choice import availability, choose_path, describe_choice, measured_workload, model_label

    if model is not None:
        return model, {}, f"{model}, as given by --model — no selection"
    workload = measured_workload(method, batch_size, DEFAULT_MODEL_PATHS)
    choice = choose_path(DEFAULT_MODEL_PATHS, availability(), workload)
    return choice.path.model, dict(choice.path.options), f"{model_label(choice.path)} — {describe_choice(choice)}"


POSITION_BUCKETS = ((1, 1), (2, 5), (6, 10), (11, 20), (21, 30), (31, 50), (51, None))


def per_position_accuracy(generations: list, suffixes: list, labels: list[str]) -> dict[str, list[float | None]]:
    """By label, the fraction of rows whose run token equals the true one at each suffix position
    (over the rows whose true suffix reaches that position)."""
    import numpy as np

    longest = max((len(s) for s in suffixes), default=0)
    out: dict[str, list[float | None]] = {}
    for label in sorted(set(labels)):
        hits, rows = np.zeros(longest), np.zeros(longest)
        for gen, true, lab in zip(generations, suffixes, labels, strict=True):
            if lab != label:
                continue
            n = len(true)
            rows[:n] += 1
            m = min(n, len(gen))
            hits[:m] += np.asarray(gen[:m]) == np.asarray(true[:m])
        out[label] = [float(h / r) if r else None for h, r in zip(hits, rows, strict=True)]
    return out


def _member_contrast(summary: dict, run_path: Path) -> str:
    """Members next to non-members, and by document group (the id's first part), over the eligible
    rows the summary counts: matched length, approximate memorization, the per-position figure named
    by run kind, and that figure by suffix position. The label rows equal the summary's by-label figures."""
    import numpy as np

    from mia_core.formats.runs import open_run
    from mia_core.formats.scores import read_scores
    from mia_core.formatting import per_position_name
    from mia_core.text_table import text_table

    run = open_run(run_path)
    stored = read_scores(summary["scores_file"])["match"]
    key, name = per_position_name(run.method)
    eligible = np.asarray(stored["eligible"], dtype=bool)
    matched, agreement = np.asarray(stored["matched_length"]), np.asarray(stored[key])
    labels = [str(x) or "unlabelled" for x in run.map_column("sample_label")]
    ids = [str(x) for x in run.map_column("sample_id")]
    groups = [f"{lab}: {i.split('/')[0]}" for lab, i in zip(labels, ids, strict=True)]
    how = ("the model's most likely token at each position, given the true text before it"
           if run.method == "teacher-forced" else "the greedy continuation against the true text")
    rows = []
    for names, by_label in ((labels, True), (groups, False)):
        for group in sorted(set(names)):
            mask = np.array([n == group for n in names]) & eligible
            approx = summary["by_label"].get(group, {}).get("approximate") if by_label else None
            rows.append([group, int(mask.sum()), f"{matched[mask].mean():.2f}" if mask.any() else "n/a",
                         _rate(approx) if approx else "", f"{agreement[mask].mean():.3f}" if mask.any() else "n/a"])
    left_out = int((~eligible).sum())
    lines = ["", f"members vs non-members, then by document group ({how}); eligible rows only ({int(eligible.sum())} "
                 f"of {len(eligible)}: true suffix of {summary['k']} tokens"
                 + (f"; {left_out} row(s) with a shorter suffix or a failed request left out" if left_out else "")
                 + "):",
             text_table(["label: document group", "eligible rows", "mean matched tokens", "approximate", name],
                        rows, indent="  ", right=(1, 2, 3, 4))]
    withheld = {r["approximate"]["withheld"] for r in summary["by_label"].values()
                if (r.get("approximate") or {}).get("withheld")}
    lines += [f"  approximate n/a: {why}" for why in sorted(withheld)]
    keep = [i for i in range(len(eligible)) if eligible[i]]
    generations, suffixes = run.tokens(), run.suffixes()
    accuracy = per_position_accuracy([generations[i] for i in keep], [suffixes[i][:summary["k"]] for i in keep],
                                     [labels[i] for i in keep])
    heads = [f"{lo}" if hi == lo else (f"{lo}-{hi}" if hi else f"{lo}+") for lo, hi in POSITION_BUCKETS]
    rows = []
    for label, acc in accuracy.items():
        cells = []
        for lo, hi in POSITION_BUCKETS:
            part = [a for a in acc[lo - 1:hi] if a is not None]
            cells.append(f"{sum(part) / len(part):.2f}" if part else "-")
        rows.append([label, *cells])
    lines += ["", f"{name} by suffix position (fraction of the eligible rows with the true token there):",
              text_table(["label", *heads], rows, indent="  ", right=range(1, len(heads) + 1))]
    return "\n".join(lines)


def _rate(r: dict) -> str:
    """``count/n``, or n/a where the rate is withheld (the reason is printed below the table) or has no row."""
    return f"{r['count']}/{r['n']}" if r and r.get("n") and not r.get("withheld") else "n/a"


def _longest_matches(run_path: Path, scores_file: str, top: int = 5) -> str:
    """The eligible rows whose continuation followed the true text longest, with the reproduced text."""
    import numpy as np

    from mia_core import registry
    from mia_core.formats.runs import open_run
    from mia_core.formats.scores import read_scores

    run = open_run(run_path)
    stored = read_scores(scores_file)["match"]
    matched, eligible = stored["matched_length"], np.asarray(stored["eligible"], dtype=bool)
    ids, labels = run.map_column("sample_id"), run.map_column("sample_label")
    prefixes, tokens = run.prefixes(), run.tokens()
    tokenizer = registry.tokenizers.create(run.prefix_map.tokenizer_name)
    top_rows = [int(i) for i in np.argsort(-matched, kind="stable") if eligible[i] and matched[i] > 0][:top]
    lines = [f"\nlongest extractions: the run's tokens equal to the true suffix from its start "
             f"(top {len(top_rows)} of the {int(eligible.sum())} eligible rows; prefix in [brackets]):"]
    if not top_rows:
        lines.append("  none: no eligible row starts with the true suffix's first token")
    texts = tokenizer.decode_batch([list(map(int, prefixes[i][-12:])) for i in top_rows]
                                   + [list(map(int, tokens[i][:matched[i]])) for i in top_rows])
    for n, i in enumerate(top_rows):
        prefix, body = " ".join(texts[n].split()), " ".join(texts[len(top_rows) + n].split())
        lines.append(f"  {int(matched[i]):3d} tokens  {ids[i]} ({labels[i] or 'unlabelled'}): "
                     f"[...{prefix}] {body[:300]}")
    return "\n".join(lines)


commands = [demo]
