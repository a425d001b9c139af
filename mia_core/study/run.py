"""``mia study``: the whole study in one folder, step by step, resumable (docs/study.md).

prefix map → generation and/or the teacher-forced check → scoring → membership attack (labelled
data) → dataset inference on the attack's signals (enough labelled strings) → estimates (where the data
supports them) → report, then ``results.json`` and
``samples.jsonl``. Each step records its configuration in ``study.json``: a finished step with
the same configuration is skipped, an interrupted one resumed (a run through its journal) or
redone (steps that write one file atomically), a changed one refused unless forced."""

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.progress import note
from mia_core.study import adapters
from mia_core.study.config import SCHEMA, study_name
from mia_core.study.folder import Study, StudyRequest
from mia_core.study.results import write_results
from mia_core.study.state import STEPS, StudyState, downstream, step_config

ESTIMATE_FILE = "estimate.json"
DATASET_INFERENCE_FILE = "dataset_inference.json"
REPORT_FILE = "report.html"
MODEL_STEPS = ("generate", "check", "attack")
CAPABILITY_WORDS = {"generate": "generate text", "score": "score token sequences"}


class _Skip(Exception):
    """A step the data or the configuration does not allow: recorded as skipped, with the reason."""


def run_study(request: StudyRequest) -> Path:
    """Run (or continue) the study; returns its folder, holding results.json and samples.jsonl."""
    for step in request.force_steps:
        if step not in STEPS:
            raise MiaError(f"--force-step {step}: no such step (steps: {', '.join(STEPS)})")
    study = _open(request)
    forced = downstream(set(request.force_steps))
    _refuse_changes(study, forced)
    for step in STEPS:
        _run_step(study, step, step in forced)
        if step == "prefix" and any((study.state.step(s) or {}).get("status") != "done" for s in MODEL_STEPS):
            _plan(study)
    write_results(study)
    return study.folder


def _open(request: StudyRequest) -> Study:
    """The study folder: created, or with ``resume`` the existing one (never overwritten)."""
    folder = request.root / study_name(request.config)
    if folder.exists():
        if not request.resume:
            raise MiaError(f"{folder} already exists: give --resume to continue that study, or another --name")
        return Study(request, folder, StudyState.load(folder))
    if request.resume:
        note(f"{folder} does not exist yet: starting the study", request.quiet)
    folder.mkdir(parents=True)
    return Study(request, folder, StudyState.create(folder, request.config))


def _refuse_changes(study: Study, forced: set[str]) -> None:
    """One line naming the first configuration key a recorded step was run with and that now differs."""
    for step in STEPS:
        if step in forced:
            continue
        changed = study.state.changed_key(step, step_config(step, study.config))
        if changed is None:
            continue
        key, was, now = changed
        if (study.state.step(step) or {}).get("status") == "running" and step not in ("generate", "check"):
            continue  # never finished: it is redone under the new configuration (only a run's journal must match)
        table, name = key.split(".", 1)
        raise MiaError(f"the configuration changed since step {step!r} ran: [{table}] {name} was {was!r}, now "
                       f"{now!r} ({SCHEMA[table][name].flag}); restore it, or give --force-step {step} to redo "
                       "that step and the ones after it")
    for step in forced:  # forgotten now, so a kill before a forced step reruns leaves it to be redone, not kept
        study.state.forget(step)
    study.state.data["config"] = study.config
    study.state.save()


def _run_step(study: Study, step: str, forced: bool) -> None:
    config = step_config(step, study.config)
    entry = study.state.step(step)
    if entry is not None and entry["status"] in ("done", "skipped") and not forced:
        note(f"step {step}: {entry['status']} before with the same configuration; kept", study.request.quiet)
        return
    interrupted = entry is not None and entry["status"] == "running" and not forced
    if not (interrupted and step in ("generate", "check")):  # runs resume through their journal
        _remove_outputs(study, step)
    study.state.start(step, config)
    started = time.perf_counter()
    try:
        outputs = STEP_FUNCTIONS[step](study)
    except _Skip as skip:
        note(f"step {step}: skipped: {skip}", study.request.quiet)
        study.state.finish(step, "skipped", time.perf_counter() - started, reason=str(skip))
        return
    study.state.finish(step, "done", time.perf_counter() - started, outputs)


def _remove_outputs(study: Study, step: str) -> None:
    """What an unfinished (or forced) step of this study left: the study's own files, never the user's."""
    if step == "prefix":
        for path in (study.map, study.folder / ".map-partial"):
            shutil.rmtree(path, ignore_errors=True)
        return
    targets = {"generate": [study.run("generate")], "check": [study.run("check")],
               "attack": [study.attack_file], "estimate": [study.folder / ESTIMATE_FILE],
               "dataset_inference": [study.folder / DATASET_INFERENCE_FILE],
               "report": [study.folder / REPORT_FILE]}.get(step, [])
    for target in targets:
        for path in target.parent.glob(target.stem + ".*") if target.parent.is_dir() else []:
            path.unlink()
        for path in target.parent.glob(target.stem + "_roc.png") if target.parent.is_dir() else []:
            path.unlink()
    if step == "score":
        from mia_core.formats.scores import scores_path

        for run in study.done_runs():
            scores_path(run).unlink(missing_ok=True)


def _enabled(study: Study, table: str) -> None:
    if not study.config[table]["enabled"]:
        raise _Skip(f"disabled by [{table}] enabled = false")


def _can(study: Study, capability: str, step: str) -> None:
    """Skip a model step the model cannot do (its registration promises what it can, known before loading
    it): an API model that only generates text has no teacher-forced check and no attack."""
    from mia_core import registry

    promised = registry.backends.get(study.config["study"]["model"]).capabilities
    if promised is None or capability in promised or (capability == "generate" and "generate_text" in promised):
        return
    raise _Skip(f"the model {study.config['study']['model']!r} cannot {CAPABILITY_WORDS[capability]} "
                f"(it offers {', '.join(sorted(promised)) or 'nothing'}), so no {step}")


def _prefix(study: Study) -> dict[str, Any]:
    staging = study.folder / ".map-partial"
    built = adapters.build_map(study.config, staging, study.request.quiet)
    built.rename(study.map)
    shutil.rmtree(staging, ignore_errors=True)
    return {"prefix_map": str(study.map)}


def _plan(study: Study) -> None:
    """Before any model runs: the prompts and tokens of each model step (the API cost estimate and its
    confirmation come from `mia prompt`'s own controls; progress bars give the ETA from the first batch)."""
    from mia_core.formats.prefixmap import PrefixMap

    rows = len(PrefixMap(study.map))
    cfg = study.config
    p, s = cfg["prefix"]["prefix_tokens"], cfg["prefix"]["suffix_tokens"]
    lines = [f"study plan: {rows} prefix-map rows ({p}-token prefixes, up to {s} suffix tokens)"]
    if cfg["prompt"]["enabled"]:
        lines.append(f"  generate: {rows} prompts, {rows * p} prompt tokens, up to "
                     f"{rows * cfg['prompt']['max_length']} new tokens")
    if cfg["check"]["enabled"]:
        lines.append(f"  check: {rows} teacher-forced sequences, up to {rows * (p + s)} tokens scored")
    if cfg["attack"]["enabled"]:
        lines.append(f"  attack: {rows} strings, up to {rows * (p + s)} tokens scored per forward pass")
    note("\n".join(lines), study.request.quiet)


def _model_run(name: str, method: str) -> Callable[[Study], dict[str, Any]]:
    """The generate step (`mia prompt`) or the check step (`mia check`), into the map's runs/NAME.h5."""
    def step(study: Study) -> dict[str, Any]:
        _enabled(study, "prompt" if name == "generate" else "check")
        _can(study, "generate" if name == "generate" else "score", name)
        run = adapters.prompt_run(study.map, study.config, method, study.run(name), study.request.quiet,
                                  study.request.yes, study.request.confirm)
        return {"run": str(run)}
    return step


def _score(study: Study) -> dict[str, Any]:
    runs = study.done_runs()
    for run in runs:
        adapters.score(run, study.config, save=True)
    return {"scored": [str(r) for r in runs]}


def _attack(study: Study) -> dict[str, Any]:
    from mia_core.attack.labels import normalize_label
    from mia_core.attack.metrics import label_problem
    from mia_core.formats.prefixmap import PrefixMap

    _enabled(study, "attack")
    _can(study, "score", "membership attack")
    pmap = PrefixMap(study.map)
    problem = label_problem([normalize_label(v) for v in pmap.read("sample_label", slice(0, len(pmap)))])
    if problem:
        raise _Skip(f"no membership attack: {problem}")
    outcome = adapters.attack(study.map, study.config, study.attack_file, study.request.quiet)
    return {"results": str(outcome.path)}


def _dataset_inference(study: Study) -> dict[str, Any]:
    _enabled(study, "dataset_inference")
    attack = study.state.step("attack") or {}
    if attack.get("status") != "done":
        raise _Skip(f"dataset inference needs the attack's signals: {attack.get('reason') or 'no attack step'}")
    try:
        path = adapters.dataset_inference(study.attack_file, study.config, study.folder / DATASET_INFERENCE_FILE,
                                          study.request.quiet)
    except MiaError as exc:
        raise _Skip(f"dataset inference withheld: {exc}") from None
    return {"results": str(path)}


def _estimate(study: Study) -> dict[str, Any]:
    import json

    from mia_core.formats.safeio import write_atomically

    _enabled(study, "estimate")
    try:
        result = adapters.estimate(_estimated_runs(study), study.config)
    except MiaError as exc:
        raise _Skip(f"estimates withheld: {exc}") from None
    from mia_core.study.results import json_ready

    path = write_atomically(study.folder / ESTIMATE_FILE, json.dumps(json_ready(result)).encode("utf-8"))
    return {"estimate": str(path)}


def _estimated_runs(study: Study) -> list[Path]:
    """The runs the estimates pool: the generation (the check's verdicts are the same greedy strings),
    else the check."""
    return [r for r in study.done_runs() if r.stem == "generate"] or study.done_runs()


def _report(study: Study) -> dict[str, Any]:
    _enabled(study, "report")
    attacks = [study.attack_file] if study.attack_file.is_file() else []
    setlevel = [study.folder / DATASET_INFERENCE_FILE] if (study.folder / DATASET_INFERENCE_FILE).is_file() else []
    estimated = _estimated_runs(study) if study.config["estimate"]["enabled"] else []
    path = adapters.report(study.done_runs(), attacks, study.config, study.folder / REPORT_FILE, setlevel, estimated)
    return {"report": str(path)}


STEP_FUNCTIONS: dict[str, Callable[[Study], dict[str, Any]]] = {
    "prefix": _prefix, "generate": _model_run("generate", "generate"),
    "check": _model_run("check", "teacher-forced"),
    "score": _score, "attack": _attack, "dataset_inference": _dataset_inference, "estimate": _estimate,
    "report": _report,
}
