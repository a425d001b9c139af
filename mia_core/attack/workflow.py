"""The attack workflow in one call: ``run_attack(request) -> outcome``.

Opens the strings' source (a prefix map, a dataset, or samples already in memory), refuses a map
without both labels before any model is loaded, loads the target and reference models (or takes
them loaded), caps the strings to what both score, runs :func:`mia_core.attack.run.attack_blocks`, which
writes the results file a block of strings at a time, then the ROC plot and exports. ``mia attack``,
``mia calibrate`` and ``mia study`` all call it; the CLI only parses options and prints.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_core.attack import run as ar
from mia_core.attack import scoring
from mia_core.errors import MiaError
from mia_core.formats.names import safe_name, timestamp, unused_path
from mia_core.types import Backend, Sample


@dataclass(frozen=True)
class AttackRequest:
    """Everything one attack needs. Exactly one source: ``prefix_map``, ``dataset`` or ``samples``."""

    model: str
    prefix_map: Path | None = None
    dataset: str | None = None
    samples: tuple[Sample, ...] | None = None  # strings already in memory (calibrate's random split)
    dataset_options: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] | None = None  # sample id -> label, for a dataset without labels
    labels_file: str | None = None  # where ``labels`` came from (recorded)
    model_options: Mapping[str, str] = field(default_factory=dict)
    reference: str | None = None
    reference_options: Mapping[str, str] = field(default_factory=dict)
    max_tokens: int | None = scoring.DEFAULT_MAX_TOKENS  # longest string scored, capped by the models' contexts
    limit: int | None = None  # only the first N windows or samples
    options: ar.AttackConfig = field(default_factory=ar.AttackConfig)  # signals, bootstrap, seed, ...
    out_dir: Path | None = None  # default: MAP/attacks, or Prefixes/attacks for a dataset
    out_path: Path | None = None  # the exact results file (instead of a new name in out_dir)
    plot: bool = True
    exports: tuple[str, ...] = ()
    title: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)  # recorded in the results file, last
    backend: Backend | None = field(default=None, compare=False)  # the target, already loaded
    reference_backend: Backend | None = field(default=None, compare=False)


@dataclass
class _Source:
    items: Any  # an items.ItemSource
    stem: str  # the results file's name, before its timestamp
    folder: Path  # where it is written by default
    attrs: dict[str, Any]  # what the results file records about its strings
    name: str  # for the ROC plot's title


def run_attack(request: AttackRequest) -> ar.AttackOutcome:
    """Run the attack ``request`` describes and save it; the outcome's ``path`` is the results file."""
    _check_source(request)
    pmap, codes = _open_map(request) if request.prefix_map is not None else (None, None)
    backend, reference, limit, ref_limit = _models(request)
    options = request.options
    if options.max_context is None:
        options = dataclasses.replace(options, max_context=scoring.context_limit(backend))
    source = _source(request, pmap, codes, backend, limit)
    return _attack(request, source, backend, reference, limit, ref_limit, options, is_map=pmap is not None)


def _attack(request: AttackRequest, source: "_Source", backend: Backend, reference: Backend | None,
            limit: int | None, ref_limit: int | None, options: ar.AttackConfig, is_map: bool) -> ar.AttackOutcome:
    """The strings scored and written to the results file a block at a time (memory does not grow with them,
    docs/scale.md), then its ROC plot and exports."""
    from mia_core.attack import report
    from mia_core.attack.metrics import label_problem
    from mia_core.formats.attack_results import ResultsWriter, write_results_streamed
    from mia_core.formats.safeio import remove_stale_temps_in

    problem = label_problem(source.items.codes)
    if problem is not None and options.require_labels:  # before the results folder is made
        raise MiaError(problem)
    path = _results_path(request, source)
    done: list[ar.AttackOutcome] = []

    def fill(writer: ResultsWriter) -> None:
        outcome = ar.attack_blocks(backend, source.items, options, writer.append, writer.read_text, reference,
                                   ref_limit, is_map=is_map)
        _record(outcome, request, source, limit)
        for name, (rows, values) in outcome.late_signals.items():
            writer.add_signal(name, rows, values)
        writer.finish(outcome.attrs)
        done.append(outcome)

    remove_stale_temps_in(path.parent)  # of attacks killed before they finished
    write_results_streamed(path, fill)
    return report.finish_outcome(done[0], path, plot=request.plot, exports=tuple(dict.fromkeys(request.exports)),
                                 title=_title(request, source))


def _record(outcome: ar.AttackOutcome, request: AttackRequest, source: "_Source", limit: int | None) -> None:
    """What the results file records beside the outcome's own attributes: the strings' source, the model's name as
    asked, the token limit and the request's own."""
    outcome.attrs.update(source.attrs, model=request.model, max_tokens=limit)
    if request.reference_backend is None:
        outcome.attrs["reference"] = request.reference
    outcome.attrs.update(request.attrs)


def _results_path(request: AttackRequest, source: "_Source") -> Path:
    path = request.out_path or unused_path(request.out_dir or source.folder, f"{source.stem}_{timestamp()}", ".h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _title(request: AttackRequest, source: "_Source") -> str:
    return request.title or f"{request.model} on {source.name}"


def _check_source(request: AttackRequest) -> None:
    given = [request.prefix_map is not None, request.dataset is not None, request.samples is not None]
    if sum(given) != 1:
        raise MiaError("an attack needs exactly one source of strings: a prefix map, a dataset or samples")
    if "ref" in request.options.signals and not (request.reference or request.reference_backend):
        raise MiaError("the ref signal needs a reference model (--reference MODEL)")


def _open_map(request: AttackRequest) -> tuple[Any, Any]:
    """The prefix map and the membership code of each row attacked, refused (before any model is loaded) when its
    rows lack a member or a non-member."""
    from mia_core.attack.items import map_membership_codes
    from mia_core.attack.metrics import label_problem
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(request.prefix_map)
    n_rows = len(pmap) if request.limit is None else min(request.limit, len(pmap))
    codes = map_membership_codes(pmap, n_rows)
    problem = label_problem(codes)
    if problem:
        raise MiaError(f"prefix map {pmap.folder.name}: {problem}")
    return pmap, codes


def _models(request: AttackRequest) -> tuple[Backend, Backend | None, int | None, int | None]:
    """(target, reference, target's token limit, reference's): loaded here unless the request holds them."""
    if request.backend is None:
        return scoring.load_scoring_models(request.model, dict(request.model_options), request.reference,
                                      dict(request.reference_options), request.max_tokens)
    backend, reference = request.backend, request.reference_backend
    limit = scoring.effective_max_tokens(backend, request.max_tokens)
    ref_limit = scoring.effective_max_tokens(reference, request.max_tokens) if reference is not None else None
    if ref_limit is not None and limit is not None:
        limit = min(limit, ref_limit)
    return backend, reference, limit, ref_limit


def _source(request: AttackRequest, pmap: Any, codes: Any, backend: Backend, limit: int | None) -> _Source:
    """The strings to score (an ``items.ItemSource``: a block of model tokens at a time), with where their results
    go and what is recorded about them."""
    from mia_core.attack.items import DatasetSource, MapSource

    quiet = request.options.quiet
    model = safe_name(request.model)
    if pmap is not None:
        return _Source(MapSource(pmap, backend, limit, len(codes), codes, quiet), model, pmap.folder / "attacks",
                       {"prefix_map": str(pmap.folder)}, pmap.folder.name)
    if request.samples is not None:
        samples = DatasetSource(request.samples, backend, limit, request.labels, request.limit, quiet=quiet)
        return _Source(samples, model, Path("Prefixes") / "attacks", {}, "the given samples")
    from mia_core import registry

    dataset = registry.datasets.create(request.dataset, dict(request.dataset_options))
    items = DatasetSource(dataset, backend, limit, request.labels, request.limit, getattr(dataset, "length", None),
                          quiet)
    if not len(items):
        raise MiaError(f"nothing to score: all {items.read['samples']} sample(s) of {request.dataset!r} are empty")
    attrs = {"dataset": request.dataset, "dataset_options": dict(request.dataset_options),
             "skipped_empty": items.read["empty"], "labels_file": request.labels_file}
    return _Source(items, f"{model}_{safe_name(request.dataset)}", Path("Prefixes") / "attacks", attrs,
                   request.dataset)
