"""The set-level tests from a request to a results file: load the model(s) and the strings, compute the
inputs, run the statistics, write the JSON record (with provenance). ``mia dataset-inference``,
``mia contamination`` and a study call these; the commands only parse options and print."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_core.attack import items as attack_items
from mia_core.attack import scoring
from mia_core.attack.labels import normalize_label
from mia_core.attack.metrics import label_problem
from mia_core.errors import MiaError
from mia_core.formats.names import safe_name, timestamp
from mia_core.formats.prefixmap import PrefixMap
from mia_core.formats.provenance import provenance
from mia_core.formats.setlevel_results import write_setlevel_results
from mia_core.progress import note
from mia_core.setlevel import DEFAULT_ALPHA
from mia_core.setlevel import contamination as ct
from mia_core.setlevel import run as sr
from mia_core.types import MEMBER, NONMEMBER, Backend

DEFAULT_MAX_SHARDS = 50  # Oren et al.'s default
HOW_TO_SPLIT = ("dataset inference takes members as the suspect set and non-members as the validation set; give "
                "the two sets as datasets instead (--suspect DATA --validation DATA)")


@dataclass(frozen=True)
class DatasetInferenceRequest:
    """Everything ``mia dataset-inference`` was asked: the two sets (datasets, or a labelled map's members
    and non-members), the target and optional reference model, the features and the test's settings."""

    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    suspect: str | None = None
    validation: str | None = None
    prefix_map: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    reference_options: dict[str, Any] = field(default_factory=dict)
    features: sr.FeatureConfig = field(default_factory=sr.FeatureConfig)
    splits: int = 10
    alpha: float = DEFAULT_ALPHA
    max_tokens: int | None = 512
    limit: int | None = None
    out_dir: Path | None = None


@dataclass(frozen=True)
class ContaminationRequest:
    """Everything ``mia contamination`` was asked: the benchmark in its order, the model and the test's settings."""

    dataset: str
    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    permutations: int = 99
    shards: int | None = None
    context: int | None = None
    alpha: float = DEFAULT_ALPHA
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    quiet: bool = False
    out_dir: Path | None = None


def run_dataset_inference(req: DatasetInferenceRequest) -> tuple[dict[str, Any], Path]:
    """The results record of dataset inference and the JSON file it was written to."""
    pmap = labelled_map(req.prefix_map) if req.prefix_map is not None else None
    backend, ref_backend, limit_tokens, ref_limit = scoring.load_scoring_models(
        req.model, req.model_options, req.reference, req.reference_options, req.max_tokens)
    if pmap is not None:
        items, _ = attack_items.load_map_items(pmap, backend, limit_tokens, None, req.features.quiet)
        suspect = [it for it in items if it.label == MEMBER][:req.limit]
        validation = [it for it in items if it.label == NONMEMBER][:req.limit]
        folder, source = pmap.folder / "setlevel", {"prefix_map": str(pmap.folder)}
        stem = f"{safe_name(req.model)}_dataset-inference_{timestamp()}"
    else:
        suspect = _dataset_items(req.suspect, req, backend, limit_tokens)
        validation = _dataset_items(req.validation, req, backend, limit_tokens)
        folder = Path("Prefixes") / "setlevel"
        source = {"suspect": req.suspect, "validation": req.validation, "dataset_options": req.dataset_options}
        stem = f"{safe_name(req.model)}_{safe_name(req.suspect)}_dataset-inference_{timestamp()}"
    features = sr.set_features(backend, suspect, validation, req.features, ref_backend, ref_limit)
    result = sr.dataset_inference(features, req.splits, req.features.seed)
    record = dataset_inference_record(features, result, model=req.model, reference=req.reference, **source,
                                      alpha=req.alpha, max_tokens=limit_tokens, signals=list(req.features.signals),
                                      min_k_fractions=list(req.features.fractions))
    return record, write_record(record, _described(backend), req.out_dir or folder, stem)


def dataset_inference_record(features: sr.SetFeatures, result: Any, **inputs: Any) -> dict[str, Any]:
    """The results record of dataset inference: its inputs (model, sets, alpha, ...), the result and what
    the features' computation reported (strings left out, the blind baseline, warnings, cost)."""
    return {"kind": "dataset-inference", **inputs, "result": result.to_dict(), "missing": features.missing,
            "blind": features.blind, "warnings": features.warnings, "forward_passes_per_string": features.passes}


def run_contamination(req: ContaminationRequest) -> tuple[dict[str, Any], Path]:
    """The results record of the contamination test and the JSON file it was written to."""
    from mia_core import registry

    texts = benchmark_texts(req.dataset, req.dataset_options, req.limit, req.quiet)
    n_shards = req.shards or max(1, min(DEFAULT_MAX_SHARDS, len(texts) // ct.MIN_EXAMPLES_PER_SHARD))
    needed = n_shards * ct.MIN_EXAMPLES_PER_SHARD
    if len(texts) < needed:
        raise MiaError(f"dataset {req.dataset!r} has {len(texts)} usable example(s): {n_shards} shard(s) need at "
                       f"least {needed} ({ct.MIN_EXAMPLES_PER_SHARD} per shard: a shard of one example has one "
                       "order); use fewer --shards or more examples")
    scoring.check_registered_scoring(req.model)
    backend = registry.backends.create(req.model, req.model_options)
    scoring.require_scoring(backend, req.model)
    result = sr.contamination(backend, texts, n_shards, req.permutations, req.seed, req.batch_size, req.context,
                              req.quiet)
    warnings = []
    if result.resolution > req.alpha:
        warnings.append(f"with {req.permutations} permutations the permutation p-value cannot go below "
                        f"{result.resolution:.3g} > {req.alpha:g}: use at least {int(-(-1 // req.alpha)) - 1} "
                        "permutations to be able to reject at this level")
    record = {"kind": "contamination", "model": req.model, "dataset": req.dataset,
              "dataset_options": req.dataset_options, "alpha": req.alpha, "result": result.to_dict(),
              "warnings": warnings}
    stem = f"{safe_name(req.model)}_{safe_name(req.dataset)}_contamination_{timestamp()}"
    return record, write_record(record, _described(backend), req.out_dir or Path("Prefixes") / "setlevel", stem)


def labelled_map(prefix_map: str) -> PrefixMap:
    """The prefix map, refused in one line (before any model loads) unless it has both labels."""
    pmap = PrefixMap(prefix_map)
    labels = [normalize_label(v) for v in pmap.read("sample_label", slice(0, len(pmap)))]
    problem = label_problem(labels, task="dataset inference", needs="dataset inference", how_to=HOW_TO_SPLIT)
    if problem:
        raise MiaError(f"prefix map {pmap.folder.name}: {problem}")
    return pmap


def _dataset_items(name: str | None, req: DatasetInferenceRequest, backend: Backend,
                   limit_tokens: int | None) -> list[attack_items.Item]:
    from mia_core import registry

    ds = registry.datasets.create(name, req.dataset_options)
    items, _ = attack_items.load_dataset_items(ds, backend, limit_tokens, None, req.limit, getattr(ds, "length", None),
                                     req.features.quiet)
    return items


def benchmark_texts(name: str, options: dict[str, Any], limit: int | None, quiet: bool) -> list[str]:
    """The benchmark's examples in dataset order (empty ones skipped: the others keep their order)."""
    from mia_core import registry

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


def _described(backend: Backend) -> dict[str, Any]:
    try:
        described = backend.describe()
    except Exception:  # describe() is informative only, as in mia attack
        return {}
    return described if isinstance(described, dict) else {}


def write_record(record: dict[str, Any], described: dict[str, Any], folder: Path, stem: str) -> Path:
    """The record as JSON with the provenance every mia file records (the backend's describe() in it)."""
    record["provenance"] = provenance(described)
    path = write_setlevel_results(Path(folder), stem, record)
    record["results"] = str(path)
    return path
