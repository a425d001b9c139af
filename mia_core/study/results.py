"""The study's hand-in: ``results.json`` (every figure the report shows, read back from the step
files, with the configuration, versions, device and timings) and ``samples.jsonl`` (+ ``.parquet``):
one record per sample with its texts, every extraction score and every attack signal.
Schemas: docs/study.md."""

import json
from pathlib import Path
from typing import Any

from mia_core.formats.safeio import write_atomically
from mia_core.study import adapters
from mia_core.study.folder import Study
from mia_core.study.state import STEPS

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


def write_results(study: Study) -> Path:
    """Write results.json and samples.jsonl (and samples.parquet when pyarrow is installed)."""
    results = json_ready(collect(study))
    path = write_atomically(study.folder / RESULTS_FILE, json.dumps(results, indent=2, sort_keys=True).encode("utf-8"))
    rows = json_ready(sample_rows(study))
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomically(study.folder / SAMPLES_FILE, text.encode("utf-8"))
    _write_parquet(study.folder / "samples.parquet", rows)
    return path


def collect(study: Study) -> dict[str, Any]:
    """Every figure of the study, from its files: summaries of the scored runs, the attack's metrics,
    the estimates (or why they are withheld), with where each came from."""
    steps = {name: {k: v for k, v in (study.state.step(name) or {}).items() if k != "config"} for name in STEPS}
    return {
        "schema_version": SCHEMA_VERSION,
        "study": study.folder.name,
        "configuration": study.config,
        "environment": _environment(study),
        "timings_s": {name: entry.get("seconds") for name, entry in steps.items() if entry},
        "steps": steps,
        "extraction": {run.stem: adapters.score(run, study.config, save=False) for run in study.done_runs()},
        "attack": _attack(study),
        "dataset_inference": _dataset_inference(study),
        "estimate": _estimate(study),
    }


def _environment(study: Study) -> dict[str, Any]:
    """Versions, git commit, host and the device the model steps ran on (from the run files' provenance)."""
    from mia_core.formats.provenance import provenance

    here = provenance()
    env = {key: here.get(key) for key in ("mia_version", "python", "libraries", "plugins", "git_commit", "host")}
    env["device"] = None
    for run in study.done_runs():
        from mia_core.formats.runs import open_run

        recorded = open_run(run).attrs.get("provenance") or {}
        env["device"], env["dtype"] = recorded.get("device"), recorded.get("dtype")
        break
    return env


def _attack(study: Study) -> dict[str, Any]:
    entry = study.state.step("attack") or {}
    if entry.get("status") != "done":
        return {"withheld": entry.get("reason") or "the attack step did not run"}
    from mia_core.formats.attack_results import AttackResults

    results = AttackResults(study.attack_file)
    keep = ("metrics", "counts", "label_message", "warnings", "blind", "signals", "sign_convention", "k",
            "forward_passes_per_string")
    return {"file": str(study.attack_file), **{key: results.attrs.get(key) for key in keep}}


def _dataset_inference(study: Study) -> dict[str, Any]:
    entry = study.state.step("dataset_inference") or {}
    if entry.get("status") != "done":
        return {"withheld": entry.get("reason") or "the dataset_inference step did not run"}
    from mia_core.formats.setlevel_results import read_setlevel_results

    path = study.folder / "dataset_inference.json"  # in the study folder, wherever the study was run from
    record = read_setlevel_results(path)
    return {"file": str(path), **{key: record.get(key) for key in ("result", "alpha", "blind", "missing",
                                                                   "warnings", "signals")}}


def _estimate(study: Study) -> dict[str, Any]:
    entry = study.state.step("estimate") or {}
    if entry.get("status") != "done":
        return {"withheld": entry.get("reason") or "the estimate step did not run"}
    path = study.folder / "estimate.json"  # in the study folder, wherever the study was run from
    return {"file": str(path), **json.loads(path.read_text(encoding="utf-8"))}


def sample_rows(study: Study) -> list[dict[str, Any]]:
    """One record per map row, keyed by the user's sample id: texts, scores of each run, attack signals."""
    rows: dict[int, dict[str, Any]] = {}
    for run in study.done_runs():
        for rec in adapters.sample_records(run):
            row = rows.setdefault(rec["prefix_index"], {
                "id": rec["sample_id"], "label": rec["label"], "prefix_start": rec["prefix_start"],
                "prefix_text": rec.get("prefix_text"), "true_suffix_text": rec.get("true_suffix_text")})
            if "generation_text" in rec:
                row["generation_text"] = rec["generation_text"]
            fixed = {"index", "prefix_index", "sample_id", "label", "prefix_start", "prefix_text",
                     "true_suffix_text", "generation_text"}
            row[run.stem] = {k: v for k, v in rec.items() if k not in fixed}
    for row_index, signals in _signals_by_row(study).items():
        if row_index in rows:
            rows[row_index]["signals"] = signals
    return [rows[i] for i in sorted(rows)]


def _signals_by_row(study: Study) -> dict[int, dict[str, float | None]]:
    if (study.state.step("attack") or {}).get("status") != "done":
        return {}
    from mia_core.formats.attack_results import AttackResults

    results = AttackResults(study.attack_file)
    signals = results.signals
    row_numbers = results.columns["row"]
    return {int(r): {name: _finite(values[i]) for name, values in signals.items()}
            for i, r in enumerate(row_numbers)}


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON: numpy scalars and arrays as numbers and lists, NaN and infinity as null
    (a figure that does not exist), paths as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist"):
        return json_ready(value.tolist())
    if isinstance(value, float):
        return _finite(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        from mia_core.inspection.export import parquet_bytes

        data = parquet_bytes(rows)
    except Exception:  # pyarrow absent (or a column pyarrow cannot type): the JSONL file is the record
        return
    write_atomically(path, data)
