"""The one place the study calls each pipeline step's library function: when a step's signature
changes (a run spec instead of keyword arguments, the report moving package), only the function
here changes."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def build_map(config: dict[str, dict[str, Any]], out: Path, quiet: bool) -> Path:
    """`mia prefix`: the prefix map, ``--limit`` as a seeded draw balanced over labels (the first N usable
    samples of data with fewer than two labels)."""
    from mia_core.extraction.prefix import build_prefix_map, parse_prefix_loc

    study, prefix = config["study"], config["prefix"]
    size = study["limit"] if study["limit"] is not None else prefix["size"]
    if study["limit"] is not None and prefix["size"] is not None:
        size = min(study["limit"], prefix["size"])
    return build_prefix_map(study["model"], study["dataset"], prefix["prefix_tokens"],
                            prefix_loc=parse_prefix_loc(prefix["prefix_loc"]), size=size,
                            suffix_tokens=prefix["suffix_tokens"], seed=study["seed"], out=out,
                            dataset_options=dict(study["dataset_options"]), quiet=quiet,
                            balance="auto" if study["limit"] is not None else False)


def prompt_run(prefix_map: Path, config: dict[str, dict[str, Any]], method: str, run: Path, quiet: bool,
               yes: bool = False, confirm: Callable[[str], bool] | None = None) -> Path:
    """`mia prompt` (``method="generate"``) or `mia check` (``"teacher-forced"``) into ``run``; an
    existing ``run`` (a step that was interrupted) is resumed through its journal."""
    from mia_core.extraction.prompt import prompt
    from mia_core.types import Sampling

    study = config["study"]
    table = config["prompt"] if method == "generate" else config["check"]
    sampling = None
    if method == "generate" and table["temperature"] is not None:
        sampling = Sampling(temperature=table["temperature"], top_k=table["top_k"], top_p=table["top_p"])
    common = {"model": study["model"], "batch_size": table["batch_size"], "quiet": quiet, "method": method,
              "model_options": dict(study["model_options"]), "yes": yes, "confirm": confirm, "rows": "none"}
    if method == "generate":
        common.update(max_length=table["max_length"], sampling=sampling, max_cost=table["max_cost"])
    if run.is_file():
        from mia_core.formats.runs import RunWriter, open_run

        existing = open_run(run)
        if existing.complete:  # killed after the run finished, before the study recorded it
            RunWriter.finish_compaction(run)
            return run
        if len(existing) >= int(existing.attrs["num_strings"]):  # every row written, some failed: scored as such
            return run
        prompt(resume=run, **common)
    else:
        prompt(prefix_map, out=run, **common)
    return run


def score(run: Path, config: dict[str, dict[str, Any]], save: bool) -> dict[str, Any]:
    """`mia score`: the run's summary (and its scores file when ``save``), with the index when named."""
    from mia_core.scoring.summary import score_run

    table = config["score"]
    return score_run(run, edit_threshold=table["edit_threshold"], index=table["index"], window=table["window"],
                     save=save)


def attack(prefix_map: Path, config: dict[str, dict[str, Any]], out: Path, quiet: bool) -> Any:
    """`mia attack` on the map's windows, written to ``out``."""
    from mia_core.attack import run as ar
    from mia_core.attack.signals import parse_fractions, parse_signals
    from mia_core.attack.workflow import AttackRequest, run_attack

    study, table = config["study"], config["attack"]
    names = parse_signals(table["signals"])
    if table["reference"] and "ref" not in names:
        names.append("ref")
    fractions = parse_fractions(table["min_k_fraction"])
    options = ar.AttackConfig(signals=names, k=fractions[0] if len(fractions) == 1 else fractions,
                              batch_size=table["batch_size"], n_boot=table["bootstrap"], seed=study["seed"],
                              quiet=quiet)
    return run_attack(AttackRequest(model=study["model"], prefix_map=prefix_map,
                                    model_options=dict(study["model_options"]), reference=table["reference"],
                                    max_tokens=table["max_tokens"], options=options, out_path=out))


def estimate(runs: Sequence[Path], config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`mia estimate` on scored runs, as the report shows it; raises ``MiaError`` with the reason when the
    data cannot support it."""
    from mia_core.errors import MiaError
    from mia_core.scoring.tables import estimate_or_reason

    table = config["estimate"]
    _, result, refusal = estimate_or_reason(list(runs), table["t"], table["confidence"])
    if refusal is not None:
        raise MiaError(refusal)
    return result


def dataset_inference(attack_file: Path, config: dict[str, dict[str, Any]], out: Path, quiet: bool) -> Path:
    """`mia dataset-inference` on the attack's stored signals (members = suspect, non-members = validation):
    no forward pass beyond the attack's; its JSON record written as ``out``."""
    from mia_core.formats.attack_results import AttackResults
    from mia_core.setlevel import run as sr
    from mia_core.setlevel import workflow

    results = AttackResults(attack_file)
    attrs, table = dict(results.attrs), config["dataset_inference"]
    features = sr.features_from_signals(results.signals, [str(v) for v in results.columns["label"]],
                                        [str(v) for v in results.columns["text"]],
                                        attrs, list(attrs.get("warnings") or []), quiet=quiet)
    result = sr.dataset_inference(features, table["splits"], config["study"]["seed"])
    record = workflow.dataset_inference_record(
        features, result, model=config["study"]["model"], reference=config["attack"]["reference"],
        attack_results=str(attack_file), alpha=table["alpha"], max_tokens=config["attack"]["max_tokens"],
        signals=features.names)
    described = attrs.get("backend") if isinstance(attrs.get("backend"), dict) else {}
    return workflow.write_record(record, described, out.parent, out.stem)


def report(runs: Sequence[Path], attacks: Sequence[Path], config: dict[str, dict[str, Any]], out: Path,
           setlevel: Sequence[Path] = (), estimate_runs: Sequence[Path] = ()) -> Path:
    """`mia report`: the study's HTML report, its Good-Turing section over ``estimate_runs`` with the
    study's [estimate] options (left out when empty), so it shows what results.json holds."""
    from mia_core.report.build import EstimateOptions, write_report

    table, est = config["score"], config["estimate"]
    return write_report(list(runs), out, index=table["index"], window=table["window"], attacks=list(attacks),
                        examples=config["report"]["examples"], setlevel=list(setlevel),
                        estimates=EstimateOptions(tuple(estimate_runs), tuple(est["t"]), est["confidence"]))


def sample_records(run: Path) -> list[dict[str, Any]]:
    """`mia export`'s records of a run: texts, label, every per-row score."""
    from mia_core.inspection.export import records

    return list(records(run))
