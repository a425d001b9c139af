"""``mia calibrate``: a randomized controlled trial of membership inference on the user's own model.

1. read the dataset and draw a seeded random half of its samples as members (``split``);
2. fine-tune a copy of the model on the members (+ canaries) through the plugin's ``finetune``;
3. on the fine-tuned model and on the untouched base model (the control), run the attack with
   every signal on the samples and the extraction pipeline (prefix → prompt → score) on them,
   labelled with the true random split, and rank the canaries;
4. write one report (``report.json``, ``report.md``, plots) into the calibration folder.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import __version__
from mia_core.attack import report as attack_report
from mia_core.attack import run as ar
from mia_core.attack import scoring
from mia_core.attack import signals as sig
from mia_core.calibrate import canaries as cn
from mia_core.calibrate.split import random_split, usable_samples
from mia_core.calibrate.training import FinetuneConfig, finetune_into, finetuner_for
from mia_core.errors import MiaError
from mia_core.formats.names import safe_name, timestamp, unused_path
from mia_core.formats.safeio import open_atomically
from mia_core.progress import note
from mia_core.types import MEMBER, Sample

ROLES = ("fine-tuned", "base")


@dataclass
class CalibrateConfig:
    model: str
    dataset: str = "corpus"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    canaries: int = 0
    canary_repeats: tuple[int, ...] = cn.DEFAULT_REPEATS
    canary_digits: int = cn.DEFAULT_DIGITS
    canary_candidates: int = cn.DEFAULT_CANDIDATES
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    batch_size: int = 8
    n_boot: int = 1000
    out: Path = Path("Calibrations")
    quiet: bool = False



def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with open_atomically(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_split(config: CalibrateConfig) -> tuple[list[Sample], dict[str, int]]:
    """The dataset's samples, relabelled by the seeded random split."""
    from mia_core import registry

    dataset = registry.datasets.create(config.dataset, config.dataset_options)
    samples, counts = usable_samples(dataset)
    return random_split(samples, config.seed, f"dataset {config.dataset!r}"), counts


def calibrate(config: CalibrateConfig) -> dict[str, Any]:
    """Run a whole calibration; returns the report (also written as ``report.json``)."""
    from mia_core import registry

    for n, what in ((config.prefix_tokens, "prefix tokens"), (config.suffix_tokens, "suffix tokens")):
        if n < 1:
            raise MiaError(f"{what} must be at least 1")
    if config.prefix_tokens + config.suffix_tokens > config.finetune.max_tokens:
        raise MiaError(f"prefix ({config.prefix_tokens}) + suffix ({config.suffix_tokens}) tokens exceed the "
                       f"{config.finetune.max_tokens} trained tokens per sample (--max-tokens)")
    finetuner_for(config.model)  # refuse untrainable models before reading anything
    scoring.check_registered_scoring(config.model)
    labelled, read_counts = read_split(config)
    canaries = cn.make_canaries(config.canaries, config.seed, config.canary_repeats, config.canary_digits) \
        if config.canaries else []

    config.out.mkdir(parents=True, exist_ok=True)
    folder = unused_path(config.out, f"{safe_name(config.model)}_{safe_name(config.dataset)}_{timestamp()}")
    folder.mkdir()
    split_file = _write_jsonl(folder / "split.jsonl",
                              [{"id": s.id, "label": s.label, "text": s.text} for s in labelled])
    if canaries:
        _write_jsonl(folder / "canaries.jsonl", [{"id": c.id, "repeats": c.repeats, "prefix": c.prefix,
                                                  "secret": c.secret} for c in canaries])
    members = [s.text for s in labelled if s.label == MEMBER]
    note(f"calibration folder {folder}: {len(members)} members, {len(labelled) - len(members)} non-members"
        + (f", {len(canaries)} canaries" if canaries else ""), config.quiet)
    model_dir = folder / "model"
    training = finetune_into(config.model, config.model_options, members + cn.training_texts(canaries), model_dir,
                             config.finetune)

    backends = {"fine-tuned": registry.backends.create(str(model_dir), config.model_options),
                "base": registry.backends.create(config.model, config.model_options)}
    pmap = _prefix_map(config, split_file, folder)
    results: dict[str, Any] = {}
    for role in ROLES:
        backend = backends[role]
        note(f"evaluating the {role} model", config.quiet)
        reference = backends["base"] if role == "fine-tuned" else None
        results[role] = {
            "attack": _attack(config, backend, labelled, reference, folder, role),
            "extraction": _extraction(config, backend, pmap, model_dir if role == "fine-tuned" else config.model),
            "canaries": _canaries(config, backend, canaries) if canaries else None,
        }
    report = _report(config, folder, labelled, read_counts, canaries, training, results, pmap)
    from mia_core.calibrate.report import write_report

    write_report(report, folder)
    return report


def _prefix_map(config: CalibrateConfig, split_file: Path, folder: Path) -> Path:
    from mia_core.extraction.prefix import build_prefix_map

    return build_prefix_map(config.model, "files", config.prefix_tokens, prefix_loc="start",
                            suffix_tokens=config.suffix_tokens, out=folder / "Prefixes", quiet=config.quiet,
                            dataset_options={"path": str(split_file), "id_field": "id", "label_field": "label"})


def _attack(config: CalibrateConfig, backend: Any, labelled: list[Sample], reference: Any, folder: Path,
            role: str) -> dict[str, Any]:
    """Every signal on the samples' first ``max_tokens`` tokens (what was trained), true labels.
    The fine-tuned model also gets the ref signal with the base model as reference."""
    # The model-free blind baseline is added by ar.attack itself where mia attack offers it
    # (a "blind" row in the metrics); the report shows it when present.
    from mia_core.attack.workflow import AttackRequest, run_attack

    names = list(sig.TARGET_SIGNALS) + (["ref"] if reference is not None else [])
    options = ar.AttackConfig(signals=names, batch_size=config.batch_size, n_boot=config.n_boot, seed=config.seed,
                              quiet=config.quiet)
    outcome = run_attack(AttackRequest(
        model=role, samples=tuple(labelled), max_tokens=config.finetune.max_tokens, options=options,
        out_path=folder / "attacks" / f"{role}.h5", title=f"{role} model, random split",
        attrs={"dataset": str(folder / "split.jsonl")}, backend=backend, reference_backend=reference))
    return {"results": str(outcome.path), "plot": str(outcome.plot) if outcome.plot else None,
            "metrics": [m.to_dict() for m in outcome.metrics], "table": attack_report.format_table(outcome.metrics),
            "label_message": outcome.label_message, "warnings": list(getattr(outcome, "warnings", []) or [])}


def _extraction(config: CalibrateConfig, backend: Any, pmap: Path, model: str | Path) -> dict[str, Any]:
    """prefix → prompt (teacher-forced greedy check) → score, as `mia prompt` and `mia score` do."""
    from mia_core.extraction.prompt import prompt
    from mia_core.scoring.summary import score_run

    runs: list[Path] = []
    prompt(pmap, str(model), method="teacher-forced", batch_size=config.batch_size, backend=backend,
           quiet=config.quiet, on_path=runs.append, rows="none")
    summary = score_run(runs[0])
    return {"run": str(runs[0]), "k": summary["k"], "by_label": summary["by_label"]}


def _canaries(config: CalibrateConfig, backend: Any, canaries: list[cn.Canary]) -> list[dict[str, Any]]:
    """Each canary's exposure among candidate secrets and whether greedy decoding reproduces it."""
    tok = backend.tokenizer
    sequences: list[list[int]] = []
    spans: list[tuple[int, int, int, bool, int]] = []  # start, count, secret tokens, exact, space
    for canary in canaries:
        others, space, exact = cn.candidate_secrets(canary, config.canary_digits, config.canary_candidates,
                                                    config.seed)
        prefix_ids = tok.encode_batch([canary.prefix])[0]
        encoded = tok.encode_batch([canary.prefix + s for s in (canary.secret, *others)])
        # Scored from where the first candidate's tokens leave the sentence's: BPE may merge the
        # sentence's last space into some secrets' first digit, and every candidate must be
        # scored on the same text given the same context.
        shared = min(_common_prefix_length(prefix_ids, ids) for ids in encoded)
        spans.append((len(sequences), len(encoded), shared, exact, space))
        sequences.extend(encoded)
    scored = scoring.score_sequences(backend, sequences, config.batch_size * 8, config.quiet, desc="canaries",
                                     distribution=False)
    rows = []
    for canary, (start, count, shared, exact, space) in zip(canaries, spans, strict=True):
        nll = np.empty(count)
        for j in range(count):
            tokens, s = sequences[start + j], scored[start + j]
            n = len(tokens) - shared  # the secret's tokens: scores are aligned from the end
            nll[j] = -float(np.sum(s.logprob[-n:]))
        true_tokens, true_scores = sequences[start], scored[start]
        n = len(true_tokens) - shared
        extracted = bool(np.array_equal(np.asarray(true_scores.argmax[-n:]), np.asarray(true_tokens[-n:])))
        rows.append({"id": canary.id, "repeats": canary.repeats, "secret": canary.secret, "nll": nll[0],
                     "exposure": cn.exposure(nll[0], nll[1:], space, exact), "extracted": extracted,
                     "candidates": count - 1, "space": space, "exact": exact,
                     "ceiling": cn.exposure_ceiling(space, count - 1, exact)})
    return rows


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _report(config: CalibrateConfig, folder: Path, labelled: list[Sample], read_counts: dict[str, int],
            canaries: list[cn.Canary], training: dict[str, Any], results: dict[str, Any],
            pmap: Path) -> dict[str, Any]:
    n_members = sum(s.label == MEMBER for s in labelled)
    return {
        "mia_version": __version__, "folder": str(folder), "model": config.model, "dataset": config.dataset,
        "dataset_options": config.dataset_options, "model_options": config.model_options, "seed": config.seed,
        "fine_tuned_model": str(folder / "model"), "prefix_map": str(pmap),
        "split": {"members": n_members, "nonmembers": len(labelled) - n_members, **read_counts,
                  "file": str(folder / "split.jsonl")},
        "finetune": {**config.finetune.to_dict(), **training},
        "extraction_window": {"prefix_tokens": config.prefix_tokens, "suffix_tokens": config.suffix_tokens},
        "canaries": {"per_level": config.canaries, "repeats": list(config.canary_repeats),
                     "digits": config.canary_digits, "candidates": config.canary_candidates} if canaries else None,
        "results": results,
    }
