"""What a prompt run is, decided before anything is loaded: ``PromptOptions`` (what the caller gave)
and ``RunSpec`` (the run those options make, or the run a resume continues).

Pure: no file is read, no model loaded, nothing printed. The caller reads what these need (the
map's size, a resumed run's attributes) and passes it in; every refusal is a ``UsageError`` naming
the option by its Python name, or a ``MiaError`` for a resume that would change the experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mia_core.divergence import prompts as dp
from mia_core.divergence.prompts import DivergenceSpec
from mia_core.errors import MiaError, UsageError
from mia_core.extraction.shards import WHOLE, Shard, parse_shard, shard_of
from mia_core.types import INT64_MAX, Sampling

DEFAULT_BATCH_SIZE = 10
DEFAULT_MAX_LENGTH = 20
DEFAULT_CONFIRM_ABOVE = 1.0  # USD
MAX_LENGTH_LIMIT = 2**20  # new tokens per string: above any model's context; the run stores a dense row
METHODS = ("generate", "teacher-forced")
STRATEGIES = (None, "prefix-map", "divergence")  # None = prefix-map

# Options recorded in a run that a resume must not change (a change would mix two experiments).
RESUME_KEYS = ("model", "method", "num_strings", "max_length", "temperature", "top_k", "top_p", "seed",
               "retokenized")

Confirm = Callable[[str], bool]  # asks the user a yes/no question


#: What prompt() returns: the seed's list of dictionaries, an iterator over them (read from the run
#: file in chunks, so memory does not grow with the run) or nothing (the CLI prints the run's path).
RETURNED_ROWS = ("list", "iter", "none")


@dataclass(frozen=True)
class PromptOptions:
    """The arguments of :func:`mia_core.extraction.prompt.prompt` (docs there); ``None`` = not given."""

    prefix_map: str | Path | None = None
    model: str | None = None
    num_strings: int | None = None
    batch_size: int | None = None
    max_length: int | None = None
    sampling: Sampling | None = None
    out: str | Path | None = None
    resume: str | Path | None = None
    retokenize: bool = False
    model_options: Mapping[str, Any] | None = None
    quiet: bool = False
    method: str | None = None
    backend: Any = None
    dry_run: bool = False
    yes: bool = False
    confirm_above: float = DEFAULT_CONFIRM_ABOVE
    max_cost: float | None = None
    batch_api: bool | None = None
    prefixes_dir: str | Path = "Prefixes"
    on_path: Callable[[Path], None] | None = None
    retry_failed: bool = False
    salvage: bool = False
    confirm: Confirm | None = None
    shard: str | Shard | None = None
    strategy: str | None = None
    words: Sequence[str] | None = None
    prompt_forms: Sequence[str] | None = None
    repeats: int | None = None
    rows: str = "list"  # what prompt() returns: the rows as a "list", an "iter" (chunked reads) or "none"

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def given_shard(self) -> Shard | None:
        return self.shard if isinstance(self.shard, Shard) or self.shard is None else parse_shard(self.shard)

    @property
    def divergence_given(self) -> dict[str, Any]:
        """The divergence options given, under the names of :class:`DivergenceSpec`'s fields."""
        return {"words": tuple(self.words) if self.words else None,
                "forms": tuple(self.prompt_forms) if self.prompt_forms else None, "repeats": self.repeats}


def check_options(options: PromptOptions) -> None:
    """Refuse a bad value or combination of options, before anything is read or loaded."""
    if options.strategy not in STRATEGIES:
        raise UsageError(f"must be one of {', '.join(s for s in STRATEGIES if s)}, got {options.strategy!r}",
                         option="strategy")
    if options.strategy != dp.STRATEGY and options.resume is None \
            and any(v is not None for v in options.divergence_given.values()):
        raise UsageError("--word, --prompt-form and --repeats belong to --strategy divergence")
    if options.rows not in RETURNED_ROWS:
        raise UsageError(f"must be one of {', '.join(RETURNED_ROWS)}, got {options.rows!r}", option="rows")
    if options.method is not None and options.method not in METHODS:
        raise UsageError(f"must be one of {', '.join(METHODS)}, got {options.method!r}", option="method")
    for name in ("num_strings", "batch_size", "max_length"):
        _positive(name, getattr(options, name))
    _dollars("max_cost", options.max_cost, positive=True)
    _dollars("confirm_above", options.confirm_above, positive=False)
    options.given_shard  # noqa: B018 -- parsing it refuses a malformed I/N now
    if options.retry_failed and options.resume is None:
        raise UsageError("--retry-failed needs --resume RUN (the run whose failed rows to ask again)")
    if options.salvage and options.resume is None:
        raise UsageError("--salvage needs --resume RUN (the run whose damaged journal to salvage)")
    if options.resume is not None and options.out is not None:
        raise UsageError("--out and --resume exclude each other (the resumed run is the output)")


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or not 1 <= value <= INT64_MAX):
        raise UsageError(f"must be an integer from 1 to 2**63-1, got {value!r}", option=name)


def _dollars(name: str, value: float | None, positive: bool) -> None:
    """A cost limit must be a finite number (``nan`` would compare false and turn the limit off)."""
    if value is None:
        return
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise UsageError(f"must be a finite number {'> 0' if positive else '>= 0'} (USD), got {value!r}",
                         option=name)


@dataclass(frozen=True)
class RunSpec:
    """Everything that fixes one run: recorded in the run file, equal again on every resume."""

    model: str
    method: str
    num_strings: int
    max_length: int
    batch_size: int
    sampling: Sampling
    retokenize: bool = False
    shard: Shard = WHOLE
    model_options: Mapping[str, Any] = field(default_factory=dict)
    batch_api: bool = False
    divergence: DivergenceSpec | None = None

    def __post_init__(self) -> None:
        if self.max_length > MAX_LENGTH_LIMIT:
            raise UsageError(f"{self.max_length} is above {MAX_LENGTH_LIMIT} new tokens per string (the run stores "
                             "max_length values per row)", option="max_length")
        if self.batch_api and self.shard != WHOLE:
            raise UsageError("--shard and --batch-api exclude each other (a provider batch is one job)")

    @property
    def teacher_forced(self) -> bool:
        return self.method == "teacher-forced"

    @classmethod
    def for_map(cls, options: PromptOptions, model: str, map_size: int, map_suffix_tokens: int,
                fresh_seed: int) -> RunSpec:
        """A new run over a prefix map of ``map_size`` rows; ``fresh_seed`` is recorded when sampling
        without a seed (teacher forcing samples nothing, so it records none)."""
        method = options.method or "generate"
        teacher_forced = method == "teacher-forced"
        sampling = options.sampling or Sampling()
        if not teacher_forced:
            sampling = _seeded(sampling, fresh_seed)
        return cls(model, method, options.num_strings or map_size,
                   options.max_length or (map_suffix_tokens if teacher_forced else DEFAULT_MAX_LENGTH),
                   options.batch_size or DEFAULT_BATCH_SIZE, sampling, options.retokenize,
                   options.given_shard or WHOLE, dict(options.model_options or {}), bool(options.batch_api))

    @classmethod
    def for_divergence(cls, options: PromptOptions, model: str, fresh_seed: int) -> RunSpec:
        """A new divergence run (no map): the prompts are every given word in every prompt form."""
        dp.check_not_map_options(options.prefix_map, options.retokenize, options.method, options.given_shard)
        given = options.divergence_given
        divergence = DivergenceSpec(given["words"] or (dp.DEFAULT_WORD,), given["forms"] or (dp.DEFAULT_FORM,),
                                    options.repeats or dp.DEFAULT_REPEATS)
        sampling = _seeded(options.sampling or Sampling(dp.DEFAULT_TEMPERATURE), fresh_seed)
        return cls(model, "generate", options.num_strings or dp.DEFAULT_NUM_STRINGS,
                   options.max_length or dp.DEFAULT_MAX_LENGTH, options.batch_size or DEFAULT_BATCH_SIZE,
                   sampling, model_options=dict(options.model_options or {}), batch_api=bool(options.batch_api),
                   divergence=divergence)

    @classmethod
    def resumed(cls, attrs: Mapping[str, Any], options: PromptOptions, rows_written: int) -> RunSpec:
        """The run ``attrs`` records, refusing any given option that differs from it (a resume never
        mixes two experiments); options a resume may change (batch size, model options, the batch API)
        are taken from ``options`` when given."""
        _check_same(attrs, options)
        divergence = _resumed_divergence(attrs, options)
        _refuse_redacted(attrs, options.model_options or {}, options.resume)
        num_strings = int(attrs["num_strings"])
        return cls(str(attrs["model"]), str(attrs["method"]), num_strings, int(attrs["max_length"]),
                   options.batch_size or int(attrs["batch_size"]),
                   Sampling(float(attrs["temperature"]), attrs["top_k"], attrs["top_p"], attrs["seed"]),
                   bool(attrs["retokenized"]), shard_of(attrs),
                   {**(attrs.get("model_options") or {}), **(options.model_options or {})},
                   resumed_batch_api(attrs, options, rows_written < num_strings), divergence)

    def attrs(self) -> dict[str, Any]:
        """The run attributes this spec fixes (the rest: map, backend, tokenizer, counters)."""
        recorded = {"model": self.model, "method": self.method, "num_strings": self.num_strings,
                    "batch_size": self.batch_size, **sampling_attrs(self.sampling),
                    "model_options": dict(self.model_options), "batch_api": self.batch_api}
        if self.shard != WHOLE:
            recorded["shard"] = str(self.shard)
        return recorded


def _seeded(sampling: Sampling, fresh_seed: int) -> Sampling:
    """A sampled run records a seed, so that it can be reproduced."""
    if sampling.greedy or sampling.seed is not None:
        return sampling
    return replace(sampling, seed=fresh_seed)


def sampling_attrs(s: Sampling) -> dict[str, Any]:
    return {"temperature": float(s.temperature), "top_k": s.top_k, "top_p": s.top_p, "seed": s.seed}


def _check_same(attrs: Mapping[str, Any], options: PromptOptions) -> None:
    given = {"model": options.model, "method": options.method, "num_strings": options.num_strings,
             "max_length": options.max_length, "retokenized": True if options.retokenize else None}
    if options.sampling is not None:
        given.update(sampling_attrs(options.sampling))
    for key, value in given.items():
        if value is None or key not in RESUME_KEYS:
            continue
        recorded = attrs.get(key)
        same = (float(recorded) == float(value)) if key in ("temperature", "top_p") and recorded is not None \
            else recorded == value
        if not same:
            raise MiaError(f"cannot resume: the run was made with {key}={recorded!r}, not {value!r} "
                           "(start a new run to change it)")
    shard = options.given_shard
    if shard is not None and shard != shard_of(attrs):
        raise MiaError(f"cannot resume: the run is shard {shard_of(attrs)}, not {shard}")


def _resumed_divergence(attrs: Mapping[str, Any], options: PromptOptions) -> DivergenceSpec | None:
    """The recorded divergence spec (None for a prefix-map run), refusing divergence options that differ
    and a map given to a divergence run."""
    given = options.divergence_given
    if dp.is_divergence_run(dict(attrs)) and options.prefix_map is not None:
        raise MiaError(f"cannot resume: {options.resume} is a divergence run, which has no prefix map")
    if not dp.is_divergence_run(dict(attrs)):
        if options.strategy == dp.STRATEGY or any(v is not None for v in given.values()):
            raise MiaError(f"cannot resume: {options.resume} is not a divergence run (it was made from a prefix map)")
        return None
    divergence = DivergenceSpec.from_attrs(dict(attrs))
    for key, value in given.items():
        if value is not None and value != getattr(divergence, key):
            raise MiaError(f"cannot resume: the run was made with {key}={getattr(divergence, key)!r}, "
                           f"not {value!r} (start a new run to change it)")
    return divergence


def resumed_batch_api(attrs: Mapping[str, Any], options: PromptOptions, rows_left: bool) -> bool:
    """As recorded unless given (``--no-batch-api``: retried rows go through the Messages API); but a
    provider batch paid for and not yet fetched is always fetched (:func:`batch_api_forced`)."""
    return _chosen_batch_api(attrs, options) or batch_api_forced(attrs, options, rows_left)


def _chosen_batch_api(attrs: Mapping[str, Any], options: PromptOptions) -> bool:
    return bool(attrs.get("batch_api")) if options.batch_api is None else options.batch_api


def batch_api_forced(attrs: Mapping[str, Any], options: PromptOptions, rows_left: bool) -> bool:
    """Whether a resume goes through the batch API although not asked to: its batch is paid for, so it is
    fetched, never asked again row by row (a dry run fetches nothing)."""
    state = attrs.get("batch_state") or {}
    return bool(state.get("batch_id")) and not state.get("collected") and rows_left \
        and not options.dry_run and not _chosen_batch_api(attrs, options)


def _refuse_redacted(attrs: Mapping[str, Any], given: Mapping[str, Any], run: str | Path | None) -> None:
    """A model option recorded without its secret (``mia_core.redact``) must be given again on resume."""
    recorded = attrs.get("model_options") or {}
    for key in attrs.get("model_options_redacted") or []:
        if key not in given:
            raise MiaError(f"the run {run} recorded --model-option {key} without its secret ({recorded.get(key)}); "
                           f"give it again: mia prompt --resume {run} --model-option {key}=...")
