"""Prompting a model with a prefix map: the generation loop behind ``mia prompt`` / ``mia check``.

Row ``i`` of a run uses map prefix ``i mod N`` (wraparound). Rows are produced batch by
batch and appended to the run file, which is flushed after each batch, so a killed or
interrupted run resumes exactly where it stopped (``resume=PATH``).

Three kinds of backend work here (see docs/prompt.md):

- ``generate`` (token ids in, ids out): local models; prefixes need no padding since a
  map's prefixes share one length.
- ``generate_text`` (text in, text out): API models; prefixes are decoded with the map's
  tokenizer and the answers re-tokenized with it, so every score works unchanged. Cost
  estimates, confirmation, a hard cost cap and provider batch APIs are handled here.
- ``score`` (teacher-forced check, ``method="teacher-forced"``, see ``mia_core.extraction.check``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import registry
from mia_core.defaults import DEFAULT_CHAT_MODEL, DEFAULT_MODEL
from mia_core.errors import BackendOutOfMemory, DiskError, MiaError, UsageError
from mia_core.extraction import divergence_prompts as dp
from mia_core.extraction.check import teacher_forced_batch
from mia_core.extraction.divergence_prompts import DivergenceSpec
from mia_core.extraction.shards import WHOLE, Shard, parse_shard, shard_of
from mia_core.formats.prefixmap import PrefixMap
from mia_core.formats.runs import API_COLUMNS, RunWriter, Salvage, default_run_path, open_run
from mia_core.progress import note, progress
from mia_core.redact import redact
from mia_core.token_rows import pad_rows
from mia_core.types import INT64_MAX, Sampling, TextResult, capabilities, scores_sampling

DEFAULT_BATCH_SIZE = 10
DEFAULT_MAX_LENGTH = 20
DEFAULT_CONFIRM_ABOVE = 1.0  # USD
MAX_LENGTH_LIMIT = 2**20  # new tokens per string: above any model's context; the run stores a dense row
METHODS = ("generate", "teacher-forced")
STRATEGIES = (None, "prefix-map", "divergence")  # None = prefix-map

# Options recorded in a run that a resume must not change (a change would mix two experiments).
RESUME_KEYS = ("model", "method", "num_strings", "max_length", "temperature", "top_k", "top_p", "seed",
               "retokenized")


class RunStopped(MiaError):
    """A run stopped early on purpose (cost cap); its finished rows are kept. Exit code 3."""

    exit_code = 3

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


_note = note
Confirm = Callable[[str], bool]  # asks the user a yes/no question


@dataclass
class _Job:
    """Everything fixed for one run."""

    map: PrefixMap
    backend: Any
    model: str
    method: str
    mode: str  # "tokens" | "text" | "teacher-forced"
    num_strings: int
    max_length: int
    sampling: Sampling
    prefixes: list[np.ndarray]  # one per map row, in the tokenizer the backend sees
    suffixes: list[np.ndarray] | None = None
    map_tokenizer: Any = None  # text mode: decodes prefixes, re-tokenizes answers
    retokenized: bool = False
    prefix_texts: list[str] = field(default_factory=list)
    shard: Shard = WHOLE  # --shard I/N: only the run rows i with i mod N == I


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or not 1 <= value <= INT64_MAX):
        raise UsageError(f"must be an integer from 1 to 2**63-1, got {value!r}", param_hint=f"--{name}")


def usd(amount: float) -> str:
    """A sum in US dollars with the digits that make it readable: cents from $1 up, three significant
    digits below (a cap of $0.0004 is not printed as $0.00)."""
    return f"${amount:,.2f}" if abs(amount) >= 1 or amount == 0 else f"${amount:.3g}"


def _dollars(flag: str, value: float | None, positive: bool) -> None:
    """A cost limit must be a finite number (``nan`` would compare false and turn the limit off)."""
    if value is None:
        return
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise UsageError(f"must be a finite number {'> 0' if positive else '>= 0'} (USD), got {value!r}",
                         param_hint=flag)


def run_bytes_per_row(max_length: int, method: str) -> int:
    """Memory one run row takes when its columns are read whole (tokens, logprobs when teacher-forced,
    lengths, prefix row, matched length; text not counted)."""
    per_token = 4 + (4 if method == "teacher-forced" else 0)
    return max_length * per_token + 4 + 8 + 4


def _check_run_fits(num_strings: int, max_length: int, method: str) -> None:
    """Refuse a run whose columns could never be read back on this machine (every reader loads them
    whole), saying how much memory it would take."""
    needed = num_strings * run_bytes_per_row(max_length, method)
    available = physical_memory()
    if available and needed > available:
        raise UsageError(f"{num_strings} strings of {max_length} tokens would take {_bytes(needed)} of memory to "
                         f"read back (more than this machine's {_bytes(available)}); lower --num_strings or "
                         "split the run with --shard", param_hint="--num_strings")


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _sampling_attrs(s: Sampling) -> dict[str, Any]:
    return {"temperature": float(s.temperature), "top_k": s.top_k, "top_p": s.top_p, "seed": s.seed}


def _check_resume(attrs: dict[str, Any], given: dict[str, Any]) -> None:
    for key, value in given.items():
        if value is None or key not in RESUME_KEYS:
            continue
        recorded = attrs.get(key)
        same = (float(recorded) == float(value)) if key in ("temperature", "top_p") and recorded is not None \
            else recorded == value
        if not same:
            raise MiaError(f"cannot resume: the run was made with {key}={recorded!r}, not {value!r} "
                           "(start a new run to change it)")


@functools.lru_cache(maxsize=4)
def _map_tokenizer(name: str, fingerprint: str) -> Any:
    """The map's tokenizer (cached: loading a 262k-token vocabulary takes seconds)."""
    return registry.tokenizers.create(name)


def _build_job(pmap: PrefixMap, backend: Any, model: str, method: str, num_strings: int, max_length: int,
               sampling: Sampling, retokenize: bool) -> _Job:
    caps = capabilities(backend)
    if method == "teacher-forced":
        if "score" not in caps:
            raise MiaError(f"model {model!r} cannot score sequences, so the teacher-forced check needs "
                           "generation instead (mia prompt --method generate)")
        if not sampling.greedy and not scores_sampling(backend):
            raise MiaError(f"model {model!r} cannot score under a sampling scheme (its score() has no sampling "
                           "option), so a teacher-forced run cannot record p for --temperature/--top_k/--top_p")
        mode = "teacher-forced"
    elif "generate" in caps:
        mode = "tokens"
    elif "generate_text" in caps:
        mode = "text"
    else:
        raise MiaError(f"model {model!r} can neither generate tokens nor text (capabilities: {sorted(caps)})")
    prefixes = list(pmap.read("prefixes"))
    suffixes = pmap.suffixes() if mode == "teacher-forced" else None
    job = _Job(pmap, backend, model, method, mode, num_strings, max_length, sampling, prefixes, suffixes)
    if mode == "text":
        job.map_tokenizer = _map_tokenizer(pmap.tokenizer_name, pmap.tokenizer_fingerprint)
        if job.map_tokenizer.fingerprint != pmap.tokenizer_fingerprint:
            raise MiaError(f"tokenizer {pmap.tokenizer_name!r} no longer matches the map's fingerprint "
                           "(its version changed?); remake the map with mia prefix")
        job.prefix_texts = job.map_tokenizer.decode_batch([p.tolist() for p in prefixes])
        return job
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        raise MiaError(f"model {model!r} has no tokenizer, so it cannot take token prefixes")
    if tok.fingerprint != pmap.tokenizer_fingerprint:
        if not retokenize:
            raise MiaError(
                f"model {model!r} uses tokenizer {tok.name!r} (fingerprint {tok.fingerprint[:12]}), but the map was "
                f"made with {pmap.tokenizer_name!r} (fingerprint {pmap.tokenizer_fingerprint[:12]}); make a map with "
                f"this model (mia prefix --model {model}) or pass --retokenize")
        map_tok = _map_tokenizer(pmap.tokenizer_name, pmap.tokenizer_fingerprint)
        texts = map_tok.decode_batch([p.tolist() for p in prefixes])
        job.prefixes = [np.asarray(p, dtype=np.int32) for p in tok.encode_batch(texts)]
        if any(len(p) == 0 for p in job.prefixes):
            raise MiaError("--retokenize produced an empty prefix; this map cannot be retokenized")
        all_suffixes = pmap.suffixes()
        job.suffixes = [np.asarray(s, dtype=np.int32) for s in
                        tok.encode_batch(map_tok.decode_batch([s.tolist() for s in all_suffixes]))]
        job.retokenized = True
    return job


def _columns(mode: str, sampling: Sampling) -> dict[str, tuple[str, Any]]:
    if mode == "teacher-forced":
        columns = {"logprobs": ("float32", "max_length"), "matched_length": ("int32", None)}
        if not sampling.greedy:  # p of the true suffix under this scheme (probabilistic extraction)
            columns["sampled_logprobs"] = ("float32", "max_length")
        return columns
    if mode == "text":
        return dict(API_COLUMNS)
    return {}


def _static(job: _Job) -> dict[str, np.ndarray]:
    if not job.retokenized:
        return {}
    prefixes, prefix_lengths = pad_rows(job.prefixes)
    suffixes, suffix_lengths = pad_rows(job.suffixes or [])
    return {"prefixes": prefixes, "prefix_lengths": prefix_lengths.astype(np.int32), "suffixes": suffixes,
            "suffix_lengths": suffix_lengths.astype(np.int32)}


def _batch_sampling(s: Sampling, start: int) -> Sampling:
    # One seed per batch, derived from the run's seed and the batch's first row, so a
    # resumed run samples what the uninterrupted run would have. Wrapped below 2**63: every seed a run
    # accepts (up to 2**63-1) gives valid batch seeds, and smaller sums are unchanged.
    return s if s.seed is None or s.greedy else Sampling(s.temperature, s.top_k, s.top_p,
                                                         (s.seed + start) % (INT64_MAX + 1))


def _text_columns(job: _Job, results: Sequence[TextResult]) -> dict[str, list]:
    """Re-tokenize API answers with the map's tokenizer; errors become empty rows."""
    errors = [_failure(r) for r in results]
    answers = ["" if e else r.text or "" for r, e in zip(results, errors, strict=True)]
    ids = job.map_tokenizer.encode_batch(answers) if answers else []
    tokens = [t[:job.max_length] for t in ids]
    return {
        "tokens": tokens,
        "text": job.map_tokenizer.decode_batch(tokens) if tokens else [],
        "raw_text": [r.raw if r.raw is not None else (r.text or "") for r in results],  # the answer as received
        "stop_reason": [r.stop_reason or "" for r in results],
        "error": errors,
        "input_tokens": [r.usage.get("input_tokens") for r in results],
        "output_tokens": [r.usage.get("output_tokens") for r in results],
        "cost_usd": [r.usage.get("cost_usd") for r in results],
        "usage": [json.dumps(r.usage, default=str) for r in results],
    }


def _failure(result: TextResult) -> str:
    """Why a request gave no usable answer ("" when it did): every failed row says so in ``error``."""
    if result.error:
        return str(result.error)
    if (result.stop_reason or "") == "refusal":
        return "refused: the model declined to answer (stop_reason refusal)"
    if not (result.text or "").strip():
        return f"empty reply (stop_reason {result.stop_reason or 'none'})"
    return ""


def _generate_batch(job: _Job, rows: np.ndarray) -> dict[str, list]:
    n_map = len(job.prefixes)
    prow = rows % n_map
    sampling = _batch_sampling(job.sampling, int(rows[0]))
    if job.mode == "teacher-forced":
        cols = teacher_forced_batch(job.backend, [job.prefixes[r] for r in prow],
                                    [job.suffixes[r] for r in prow], job.max_length, job.sampling)
        cols["text"] = job.backend.tokenizer.decode_batch([list(map(int, t)) for t in cols["tokens"]])
    elif job.mode == "text":
        results = job.backend.generate_text([job.prefix_texts[r] for r in prow], job.max_length, sampling)
        if len(results) != len(prow):
            raise MiaError(f"backend {job.model!r} returned {len(results)} answers for {len(prow)} prompts")
        cols = _text_columns(job, results)
    else:
        # Group by prefix length: equal-length prefixes need no padding (always one group
        # unless retokenized).
        tokens: list[list[int]] = [[] for _ in prow]
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(prow):
            groups.setdefault(len(job.prefixes[r]), []).append(i)
        for members in groups.values():
            new = job.backend.generate([job.prefixes[prow[i]].tolist() for i in members], job.max_length, sampling)
            for i, t in zip(members, new, strict=True):
                tokens[i] = list(t)[:job.max_length]
        cols = {"tokens": tokens, "text": job.backend.tokenizer.decode_batch(tokens)}
    cols["prefix_row"] = prow
    return cols


def _cost_of(cols: dict[str, list]) -> float:
    return float(sum(c for c in cols.get("cost_usd", []) if c is not None and c == c))


def _sum_usage(total: dict[str, Any], cols: dict[str, list]) -> dict[str, Any]:
    for raw in cols.get("usage", []):
        for key, value in json.loads(raw).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def _confirm_cost(estimate: float, confirm_above: float, yes: bool, confirm: Confirm | None) -> None:
    if estimate <= confirm_above or yes:
        return
    if confirm is None or not sys.stdin.isatty():
        raise MiaError(f"the estimated cost {usd(estimate)} is above --confirm-above {usd(confirm_above)}; "
                       "pass --yes to go ahead")
    if not confirm(f"Estimated cost {usd(estimate)}. Continue?"):
        raise MiaError("cancelled; nothing was sent")


def prompt(prefix_map: str | Path | None = None, model: str | None = None, num_strings: int | None = None,
           batch_size: int | None = None, max_length: int | None = None, sampling: Sampling | None = None,
           out: str | Path | None = None, resume: str | Path | None = None, retokenize: bool = False,
           model_options: dict[str, Any] | None = None, quiet: bool = False, *, method: str | None = None,
           backend: Any = None, dry_run: bool = False, yes: bool = False,
           confirm_above: float = DEFAULT_CONFIRM_ABOVE, max_cost: float | None = None,
           batch_api: bool | None = None,
           prefixes_dir: str | Path = "Prefixes", on_path: Callable[[Path], None] | None = None,
           retry_failed: bool = False, salvage: bool = False, confirm: Confirm | None = None,
           shard: str | Shard | None = None, strategy: str | None = None, words: Sequence[str] | None = None,
           prompt_forms: Sequence[str] | None = None, repeats: int | None = None) -> list[dict]:
    """Prompt ``model`` with the prefixes of ``prefix_map`` and store every continuation.

    Returns the seed's list of dictionaries, one per string (``index``, ``prefix_index``,
    ``sample_id``, ``sample_label``, ``prefix_tokens``, ``generated_tokens``, ``text`` and
    the run's extra columns). Defaults: ``num_strings`` = number of prefixes (wraparound
    when larger), ``batch_size`` 10, ``max_length`` 20 new tokens (teacher-forced: the
    map's suffix length), greedy decoding, ``model`` ``defaults.DEFAULT_MODEL``. ``resume`` continues a
    run file; options given then must equal the recorded ones. ``on_path`` is called with
    the run path as soon as it is known. ``method`` is ``"generate"`` (default) or
    ``"teacher-forced"`` (see ``mia_core.extraction.check``). ``retry_failed`` (with ``resume``)
    asks the rows whose request failed again and replaces them in place. ``salvage`` (with ``resume``)
    continues a run whose journal is damaged: every intact record is kept, a copy of the journal is
    kept beside the run, and only the rows of damaged records are asked again. ``confirm`` asks the
    user a yes/no question (the CLI's prompt) when an API estimate is above ``confirm_above``;
    without it, or without a terminal, such a run needs ``yes``. ``shard`` (``"I/N"``) generates
    only the rows ``i`` with ``i mod N == I`` (see ``mia_core.extraction.shards``, docs/scale.md). ``strategy``
    ``"divergence"`` takes no map: it asks the model to repeat ``words`` forever (Nasr et al. 2023 §5) in
    the ``prompt_forms`` with the word ``repeats`` times (``mia_core.extraction.divergence_prompts``).
    See docs/prompt.md.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"must be one of {', '.join(s for s in STRATEGIES if s)}, got {strategy!r}",
                         param_hint="--strategy")
    divergence: DivergenceSpec | None = None
    divergence_given = {"words": tuple(words) if words else None,
                        "forms": tuple(prompt_forms) if prompt_forms else None, "repeats": repeats}
    if strategy != dp.STRATEGY and resume is None and any(v is not None for v in divergence_given.values()):
        raise UsageError("--word, --prompt-form and --repeats belong to --strategy divergence")
    if method is not None and method not in METHODS:
        raise UsageError(f"must be one of {', '.join(METHODS)}, got {method!r}", param_hint="--method")
    for name, value in (("num_strings", num_strings), ("batch_size", batch_size), ("max_length", max_length)):
        _positive(name, value)
    _dollars("--max-cost", max_cost, positive=True)
    _dollars("--confirm-above", confirm_above, positive=False)
    options = dict(model_options or {})
    given_shard = shard if isinstance(shard, Shard) or shard is None else parse_shard(shard)
    writer: RunWriter | None = None
    start_row = 0
    retry_rows: list[int] = []
    if retry_failed and resume is None:
        raise UsageError("--retry-failed needs --resume RUN (the run whose failed rows to ask again)")
    if salvage and resume is None:
        raise UsageError("--salvage needs --resume RUN (the run whose damaged journal to salvage)")
    if resume is not None:
        if out is not None:
            raise UsageError("--out and --resume exclude each other (the resumed run is the output)")
        # Checked read-only: a refused resume (or a dry run) leaves the file exactly as it was.
        resumed = open_run(resume, salvage=salvage)
        if resumed.complete and RunWriter.finish_compaction(resume):  # killed at its final compaction
            _note(f"{resume}: finished the compaction a killed run left (journal folded in, temporary files "
                  "removed); its rows are unchanged")
            resumed = open_run(resume, salvage=salvage)
        attrs, start_row = resumed.attrs, len(resumed)
        retry_rows = _rows_to_ask_again(resumed, retry_failed, salvage)
        given = {"model": model, "method": method, "num_strings": num_strings, "max_length": max_length,
                 "retokenized": True if retokenize else None}
        if sampling is not None:
            given.update(_sampling_attrs(sampling))
        _check_resume(attrs, given)
        if given_shard is not None and given_shard != shard_of(attrs):
            raise MiaError(f"cannot resume: the run is shard {shard_of(attrs)}, not {given_shard}")
        shard = shard_of(attrs)
        pmap: PrefixMap | None = None
        if dp.is_divergence_run(attrs):
            if prefix_map is not None:
                raise MiaError(f"cannot resume: {resume} is a divergence run, which has no prefix map")
            divergence = dp.DivergenceSpec.from_attrs(attrs)
            for key, value in divergence_given.items():
                if value is not None and value != getattr(divergence, key):
                    raise MiaError(f"cannot resume: the run was made with {key}={getattr(divergence, key)!r}, "
                                   f"not {value!r} (start a new run to change it)")
        elif strategy == dp.STRATEGY or any(v is not None for v in divergence_given.values()):
            raise MiaError(f"cannot resume: {resume} is not a divergence run (it was made from a prefix map)")
        else:
            if prefix_map is not None and PrefixMap(prefix_map, prefixes_dir).folder.resolve() != \
                    Path(attrs["prefix_map"]).resolve():
                raise MiaError(f"cannot resume: the run was made from the map {attrs['prefix_map']}, "
                               f"not {prefix_map}")
            pmap = PrefixMap(attrs["prefix_map"]) if Path(str(attrs["prefix_map"])).is_dir() \
                else PrefixMap(resumed.path.resolve().parent.parent)
        model, method = str(attrs["model"]), str(attrs["method"])
        num_strings, max_length = int(attrs["num_strings"]), int(attrs["max_length"])
        sampling = Sampling(float(attrs["temperature"]), attrs["top_k"], attrs["top_p"], attrs["seed"])
        retokenize = bool(attrs["retokenized"])
        _refuse_redacted(attrs, options, resume)
        options = {**(attrs.get("model_options") or {}), **options}
        batch_size = batch_size or int(attrs["batch_size"])
        if batch_api is None:  # as recorded (--no-batch-api: retried rows go through the Messages API)
            batch_api = bool(attrs.get("batch_api"))
        state = attrs.get("batch_state") or {}
        if state.get("batch_id") and not state.get("collected") and start_row < num_strings and not batch_api \
                and not dry_run:
            # Its batch is paid for: fetch it, never ask the Messages API for the same rows again.
            batch_api = True
            _note("this run was started with --batch-api; resuming it with the batch API")
    elif strategy == dp.STRATEGY:
        dp.check_not_map_options(prefix_map, retokenize, method, given_shard)
        divergence = dp.DivergenceSpec(divergence_given["words"] or (dp.DEFAULT_WORD,),
                                       divergence_given["forms"] or (dp.DEFAULT_FORM,), repeats or dp.DEFAULT_REPEATS)
        pmap = None
        model, method = model or DEFAULT_CHAT_MODEL, "generate"  # the embedded default is a base model
        num_strings = num_strings or dp.DEFAULT_NUM_STRINGS
        max_length = max_length or dp.DEFAULT_MAX_LENGTH
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        sampling = sampling or Sampling(dp.DEFAULT_TEMPERATURE)
        shard = WHOLE
        if not sampling.greedy and sampling.seed is None:
            sampling = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, random.randrange(2**31))
    else:
        if prefix_map is None:
            raise UsageError("give a prefix map (--prefix_map) or a run to --resume")
        pmap = PrefixMap(prefix_map, prefixes_dir)
        model = model or DEFAULT_MODEL
        method = method or "generate"
        num_strings = num_strings or len(pmap)
        max_length = max_length or (pmap.suffix_tokens if method == "teacher-forced" else DEFAULT_MAX_LENGTH)
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        sampling = sampling or Sampling()
        shard = given_shard or WHOLE
        if not sampling.greedy and sampling.seed is None and method != "teacher-forced":
            # record a seed so the run can be reproduced (teacher forcing samples nothing)
            sampling = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, random.randrange(2**31))
    batch_api = bool(batch_api)
    if pmap is not None and len(pmap) == 0:
        raise MiaError(f"the prefix map {pmap.folder} holds no prefixes")
    if max_length > MAX_LENGTH_LIMIT:
        raise UsageError(f"{max_length} is above {MAX_LENGTH_LIMIT} new tokens per string (the run stores "
                                 "max_length values per row)", param_hint="--max_length")
    _check_run_fits(shard.size(num_strings), max_length, method)
    # Everything this run will read from the map, read once now: a damaged map stops here, not mid-run.
    if pmap is not None:
        pmap.verify(["prefixes", "sample_id", "sample_label"]
                    + (["suffixes", "suffix_lengths"] if method == "teacher-forced" or retokenize else []))
    try:
        backend = backend if backend is not None else registry.backends.create(model, options)
        prepared: dict[str, Any] = {}
        if divergence is not None:
            job, prepared = _divergence_job(divergence, backend, model, num_strings, max_length, sampling)
            if resume is not None:
                dp.check_same_prompts(resumed, prepared)
        else:
            job = _build_job(pmap, backend, model, method, num_strings, max_length, sampling, retokenize)
        job.shard = shard
        if batch_api and shard != WHOLE:
            raise UsageError("--shard and --batch-api exclude each other (a provider batch is one job)")
        if batch_api and job.mode != "text":
            raise UsageError("--batch-api is for API (text) models only")
        if batch_api and not callable(getattr(backend, "run_batch", None)):
            raise MiaError(f"model {model!r} has no batch API (its backend does not implement run_batch)")
        if dry_run:
            _dry_run(job, start_row, batch_size, retry_rows)
            return []
        _estimate_and_confirm(job, start_row, confirm_above, yes, confirm, max_cost, batch_api, retry_rows)
        if resume is not None:
            writer = RunWriter.reopen(resume, salvage=_salvage_for(job) if salvage else None)
            if salvage and resumed.damage is not None:
                copy = writer.path.parent / writer.attrs["salvaged"][-1]["journal_copy"]
                _note(f"the damaged journal is kept as {copy}")
        else:
            folder = pmap.folder if pmap is not None else dp.runs_folder(prefixes_dir)
            path = Path(out) if out is not None else default_run_path(folder, model)
            if path.suffix != ".h5":
                raise UsageError(f"a run file name must end in .h5, got {path}", param_hint="--out")
            describe = backend.describe() if callable(getattr(backend, "describe", None)) else {}
            tokenizer = prepared.get("tokenizer") or job.map_tokenizer or backend.tokenizer
            source = {"prefix_map": str(pmap.folder.resolve()), "map_size": len(pmap)} if pmap is not None else \
                {"prefix_map": "", "map_size": len(job.prefixes), "strategy": dp.STRATEGY,
                 dp.STRATEGY: divergence.attrs(prepared["delivery"])}
            attrs = {"model": model, "method": method, "backend": describe, **source,
                     "tokenizer": tokenizer.name, "tokenizer_fingerprint": tokenizer.fingerprint,
                     "num_strings": num_strings, "batch_size": batch_size, **_sampling_attrs(sampling),
                     "bos_prepended": describe.get("bos_prepended", getattr(backend, "bos_prepended", None)),
                     "retokenized": job.retokenized, "model_options": options, "batch_api": batch_api,
                     "model_options_redacted": sorted(k for k, v in options.items() if redact({k: v})[k] != v),
                     "elapsed_s": 0.0,
                     "generated_tokens": 0, "cost_usd": 0.0, "usage": {}}
            if shard != WHOLE:
                attrs["shard"] = str(shard)
            static = prepared.get("static") or _static(job)
            writer = RunWriter.create(path, attrs, max_length, _columns(job.mode, sampling), static)
        if on_path is not None:
            on_path(writer.path)
        _execute(job, writer, batch_size, quiet, max_cost, batch_api, retry_rows, fresh=resume is None)
    finally:
        if writer is not None:
            writer.close()
        if divergence is not None and getattr(backend, "verbatim_prompt", False):
            backend.verbatim_prompt = False  # a backend object passed in may serve prefix-map runs next
    run = open_run(writer.path)
    rows = run.to_dicts(with_map=pmap is not None)
    if pmap is None:  # a divergence run: each row's prompt instead of a map row's prefix
        for row, text in zip(rows, dp.prompt_texts(run), strict=True):
            row["prompt_text"] = text
    return rows


def _divergence_job(spec: DivergenceSpec, backend: Any, model: str, num_strings: int, max_length: int,
                    sampling: Sampling) -> tuple[_Job, dict[str, Any]]:
    """A job whose "map rows" are the divergence prompts (``mia_core.extraction.divergence_prompts``)."""
    caps = capabilities(backend)
    mode = "tokens" if "generate" in caps else "text" if "generate_text" in caps else None
    if mode is None:
        raise MiaError(f"model {model!r} can neither generate tokens nor text (capabilities: {sorted(caps)})")
    prepared = dp.prepare(spec, backend, model, mode)
    job = _Job(None, backend, model, "generate", mode, num_strings, max_length, sampling, prepared["prefixes"])
    job.map_tokenizer = prepared["map_tokenizer"]
    job.prefix_texts = prepared["prefix_texts"]
    return job, prepared


def failed_rows(run: Any) -> list[int]:
    """Rows whose request failed (a non-empty ``error``: API error, malformed body, refusal, empty reply)."""
    if not run.has("error"):
        return []
    return [int(i) for i in np.flatnonzero([bool(e) for e in run.read("error")])]


def _refuse_redacted(attrs: Mapping[str, Any], given: Mapping[str, Any], run: str | Path) -> None:
    """A model option recorded without its secret (``mia_core.redact``) must be given again on resume."""
    recorded = attrs.get("model_options") or {}
    for key in attrs.get("model_options_redacted") or []:
        if key not in given:
            raise MiaError(f"the run {run} recorded --model-option {key} without its secret ({recorded.get(key)}); "
                           f"give it again: mia prompt --resume {run} --model-option {key}=...")


def _rows_to_ask_again(resumed: Any, retry_failed: bool, salvage: bool) -> list[int]:
    """The rows of a resumed run to ask again in place: rows of damaged journal records (found now by
    ``--salvage``, or left by an interrupted salvage), and the failed rows with ``--retry-failed``;
    refuses a resume that has nothing to do."""
    path, attrs, written = resumed.path, resumed.attrs, len(resumed)
    failed = failed_rows(resumed)
    lost = sorted(set(resumed.lost_rows) | {int(r) for r in attrs.get("salvage_rows") or []})
    if salvage and resumed.damage is None:
        _note(f"the journal of {path} is intact: nothing to salvage")
    if resumed.damage is not None:
        _note(f"salvaging {path}: {len(lost)} rows of damaged journal records asked again, "
              f"{written - len(lost)} intact rows kept")
    elif lost:
        _note(f"{len(lost)} rows of damaged journal records (from an interrupted --salvage) are asked again")
    if retry_failed:
        if not resumed.has("error"):
            raise MiaError(f"{path} records no request errors (not an API run); nothing to retry")
        if not failed and not lost and (resumed.complete or written >= int(attrs["num_strings"])):
            raise MiaError(f"{path} has no failed rows; nothing to retry")
        return sorted(set(lost) | set(failed))
    if lost or resumed.damage is not None:
        return lost
    if resumed.complete:
        raise MiaError(f"{path} is already complete ({written} rows); nothing to resume")
    if failed and written >= int(attrs["num_strings"]):
        raise MiaError(f"all {written} rows of {path} are written, {len(failed)} of them failed; ask those "
                       f"again with: mia prompt --resume {path} --retry-failed")
    return []


LOST_ROW_ERROR = "lost in a damaged journal record; asked again by mia prompt --resume (--salvage)"


def _salvage_for(job: _Job) -> Salvage:
    """How a salvaged run fills the rows of its damaged journal records until they are asked again:
    no tokens, the right prefix row, and (API runs) an error saying why; counters from the rows kept."""

    def placeholders(rows: np.ndarray) -> dict[str, Any]:
        whole = job.shard.index + rows * job.shard.count
        cols: dict[str, Any] = {"tokens": [[] for _ in rows], "prefix_row": whole % len(job.prefixes)}
        if job.mode == "text":
            cols["error"] = [LOST_ROW_ERROR] * len(rows)
        return cols

    def counters(columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {"generated_tokens": int(np.sum(columns["lengths"]))}
        if "cost_usd" in columns:
            usage = _sum_usage({}, {"usage": [raw for raw in columns["usage"] if raw]})
            out.update(cost_usd=float(np.nansum(columns["cost_usd"])), usage=usage)
        return out

    return Salvage(placeholders, counters)


def _pending_rows(job: _Job, start_row: int, retry_rows: Sequence[int]) -> np.ndarray:
    """The run rows still to ask: failed rows asked again (given as rows of this run file), then the rest."""
    retried = job.shard.index + np.asarray(retry_rows, dtype=np.int64) * job.shard.count
    return np.concatenate([retried, job.shard.run_rows(start_row, job.num_strings, job.num_strings)])


def _dry_run(job: _Job, start_row: int, batch_size: int, retry_rows: Sequence[int] = ()) -> None:
    rows = _pending_rows(job, start_row, retry_rows)
    render = getattr(job.backend, "render_request", None)
    for i in rows:
        r = int(i % len(job.prefixes))
        if job.mode == "text":
            text = job.prefix_texts[r]
            request = render(text, job.max_length) if callable(render) else {"prompt": text}
        else:
            request = {"prefix_tokens": job.prefixes[r].tolist()}
        print(json.dumps({"row": int(i), "prefix_index": r, "request": request}, default=str), flush=True)
    estimate = _estimate(job, rows)
    cost = f"; estimated cost ${estimate:.4f}" if estimate is not None else ""
    _note(f"dry run: {len(rows)} requests in batches of {batch_size} to {job.model}{cost}; nothing sent or written")


def _estimate(job: _Job, rows: np.ndarray) -> float | None:
    estimate = getattr(job.backend, "estimate_cost", None)
    if job.mode != "text" or not callable(estimate) or len(rows) == 0:
        return None
    return float(estimate([job.prefix_texts[int(i % len(job.prefixes))] for i in rows], job.max_length))


def _estimate_and_confirm(job: _Job, start_row: int, confirm_above: float, yes: bool, confirm: Confirm | None,
                          max_cost: float | None, batch_api: bool, retry_rows: Sequence[int] = ()) -> None:
    rows = _pending_rows(job, start_row, retry_rows)
    estimate = _estimate(job, rows)
    if estimate is None:
        return
    if batch_api and max_cost is not None and estimate > max_cost:
        raise MiaError(f"the estimated cost {usd(estimate)} is above --max-cost {usd(max_cost)}, and a provider "
                       "batch cannot be stopped part-way; lower --num_strings or raise --max-cost")
    _confirm_cost(estimate, confirm_above, yes, confirm)
    # Said once the run goes ahead: a refusal above is the command's only line (it names the estimate).
    retried = f" ({len(retry_rows)} of them asked again in place)" if len(retry_rows) else ""
    _note(f"estimated cost: ${estimate:.4f} for {len(rows)} requests to {job.model}{retried}")


def _resume_hint(path: Path) -> str:
    return f"mia prompt --resume {path}"


def _execute(job: _Job, writer: RunWriter, batch_size: int, quiet: bool, max_cost: float | None,
             batch_api: bool, retry_rows: Sequence[int] = (), fresh: bool = False) -> None:
    attrs = writer.attrs
    elapsed0, tokens0 = float(attrs.get("elapsed_s") or 0.0), int(attrs.get("generated_tokens") or 0)
    spent, usage = float(attrs.get("cost_usd") or 0.0), dict(attrs.get("usage") or {})
    t0, tokens = time.perf_counter(), 0
    total = job.shard.size(job.num_strings)
    todo = len(retry_rows) + total - writer.rows_done
    bar = progress(total=todo, desc=f"{job.method} {job.model}", unit="str", quiet=quiet)
    in_batch = 0  # whole rows shown on the bar within the current batch (reported through on_rows_done)
    reported = 0.0  # rows the backend reported within the current batch (fractional: HF reports every step)

    def on_rows_done(rows: float, new_tokens: int) -> None:
        nonlocal in_batch, reported
        reported += rows
        whole = min(int(reported), len_batch) - in_batch
        if whole > 0:
            in_batch += whole
            bar.update(whole)

    len_batch = batch_size  # the bar never runs ahead of the batch being generated
    if hasattr(job.backend, "on_rows_done"):  # backends that report progress within a batch (vLLM, HF)
        job.backend.on_rows_done = on_rows_done

    def record(cols: dict[str, list], replace: Sequence[int] | None = None) -> None:
        """Commit a batch with the counters it moves (one journal record: both or neither)."""
        nonlocal tokens, spent, usage, in_batch, reported
        new_tokens = int(sum(len(t) for t in cols["tokens"]))
        if replace is not None:  # a retried row's earlier (failed) tokens no longer count
            new_tokens -= int(writer.read("lengths")[np.asarray(replace, dtype=np.int64)].sum())
        new_spent, new_usage = spent + _cost_of(cols), _sum_usage(dict(usage), cols)
        elapsed = time.perf_counter() - t0
        extra = {"cost_usd": new_spent, "usage": new_usage} if job.mode == "text" else {}
        counters = {"elapsed_s": elapsed0 + elapsed, "generated_tokens": tokens0 + tokens + new_tokens, **extra}
        lost = writer.attrs.get("salvage_rows") or []
        if replace is not None and lost:  # rows of damaged journal records, now asked again
            counters["salvage_rows"] = sorted(set(lost) - set(replace))
        if replace is None:
            writer.append(cols, **counters)
        else:
            writer.replace(replace, cols, **counters)
        tokens, spent, usage = tokens + new_tokens, new_spent, new_usage
        bar.update(len(cols["prefix_row"]) - in_batch)
        in_batch, reported = 0, 0.0
        bar.set_postfix_str(f"{tokens / max(elapsed, 1e-9):.1f} tok/s" + (f", ${spent:.4f}" if extra else ""))

    def check_cost(rows: np.ndarray, done: str) -> None:
        if max_cost is None:
            return
        next_cost = _estimate(job, rows) or 0.0
        if spent + next_cost > max_cost or spent >= max_cost:
            if fresh and writer.rows_done == 0 and not retry_rows:  # nothing paid, nothing to resume
                raise RunStopped(
                    f"stopped before the first batch: it would cost about {usd(next_cost)}, above --max-cost "
                    f"{usd(max_cost)}; nothing was sent or written (no run file); raise --max-cost or lower "
                    "--batch_size", writer.path)
            raise RunStopped(
                f"stopped at the cost cap: ${spent:.4f} spent, the next batch would cost about "
                f"${next_cost:.4f} (--max-cost {usd(max_cost)}); {done} in {writer.path}; "
                f"continue with: {_resume_hint(writer.path)} --max-cost HIGHER", writer.path)

    def generate(rows: np.ndarray) -> dict[str, list] | None:
        nonlocal size, in_batch, reported, len_batch
        len_batch = len(rows)
        try:
            return _generate_batch(job, rows)
        except BackendOutOfMemory:
            bar.update(-in_batch)  # the batch is redone smaller
            in_batch, reported = 0, 0.0
            if size == 1:
                raise MiaError("out of memory even at batch size 1; try a smaller --max_length, "
                               "--dtype bfloat16 or another --device") from None
            size //= 2
            _note(f"out of memory at batch size {size * 2}; retrying with batch size {size}")
            return None

    size = batch_size  # halved on out-of-memory; the size in use is recorded
    try:
        pending = [] if batch_api else list(retry_rows)
        while pending:  # failed rows asked again, replaced in place
            local = np.asarray(pending[:size], dtype=np.int64)  # rows of this run file
            rows = job.shard.index + local * job.shard.count  # rows of the whole run
            check_cost(rows, f"{len(retry_rows) - len(pending)} of {len(retry_rows)} failed rows asked again")
            cols = generate(rows)
            if cols is not None:
                record(cols, replace=local.tolist())
                pending = pending[len(local):]
        if batch_api and (retry_rows or writer.rows_done < job.num_strings):  # (else: no batch to poll)
            _execute_batch_api(job, writer, record, retry_rows)
        else:
            while writer.rows_done < total:
                start = writer.rows_done
                rows = job.shard.run_rows(start, size, job.num_strings)
                check_cost(rows, f"{start} of {total} rows kept")
                cols = generate(rows)
                if cols is not None:
                    record(cols)
    except KeyboardInterrupt:
        bar.close()
        if _discard_if_empty(writer, fresh):
            _note(f"\ninterrupted before the first row; nothing was kept (no run file left at {writer.path})")
        else:
            _note(f"\ninterrupted: {writer.rows_done} of {total} rows kept in {writer.path}; "
                  f"continue with: {_resume_hint(writer.path)}")
        raise
    except MiaError as exc:
        bar.close()
        if _discard_if_empty(writer, fresh) and not isinstance(exc, RunStopped):
            exc.message += f" (nothing was written; no run file left at {writer.path})"
        elif not isinstance(exc, (RunStopped, DiskError)) and writer.rows_done:
            exc.message += f" ({writer.rows_done} rows kept; continue with: {_resume_hint(writer.path)})"
        raise
    except BaseException:
        bar.close()
        _discard_if_empty(writer, fresh)
        raise
    finally:
        if hasattr(job.backend, "on_rows_done"):  # the hook points at this run's bar: not kept past it
            job.backend.on_rows_done = None
    bar.close()
    elapsed = elapsed0 + time.perf_counter() - t0
    total_tokens = tokens0 + tokens
    failed = len(failed_rows(writer))
    writer.finish(elapsed_s=elapsed, generated_tokens=total_tokens, rows_failed=failed, complete=failed == 0,
                  tokens_per_s=total_tokens / elapsed if elapsed > 0 else 0.0, batch_size_used=size)
    if failed and failed == writer.rows_done:
        first = next(e for e in writer.read("error") if e)
        raise MiaError(f"all {failed} requests failed (first error: {first}); the run is kept in {writer.path}: "
                       f"fix the cause, then ask them again with: {_resume_hint(writer.path)} --retry-failed")


def _discard_if_empty(writer: RunWriter, fresh: bool) -> bool:
    """A new run that failed before its first row leaves no file behind (unless a paid
    provider batch is recorded in it)."""
    if not fresh or writer.rows_done or (writer.attrs.get("batch_state") or {}).get("batch_id"):
        return False
    writer.discard()
    return True


def _execute_batch_api(job: _Job, writer: RunWriter, record: Callable[..., None],
                       retry_rows: Sequence[int] = ()) -> None:
    """Ask ``retry_rows`` again and the unwritten rows through ``backend.run_batch`` (half price).

    A batch not fully fetched yet (``batch_state`` without ``collected``) is paid for: it is fetched,
    never submitted again; but the stored batch of the first pass holds the failed answers of the
    rows to retry, so the retry goes into a new batch (after that batch's unwritten rows are fetched)."""
    stored = dict(writer.attrs.get("batch_state") or {})
    paid = {} if stored.get("collected") else stored
    if retry_rows and paid and not paid.get("retry"):
        if writer.rows_done < job.num_strings:
            _run_batch(job, writer, record, [], paid)  # the unwritten rows' paid batch first
        paid = {}
    _run_batch(job, writer, record, retry_rows, paid)


def _run_batch(job: _Job, writer: RunWriter, record: Callable[..., None], retry_rows: Sequence[int],
               state: dict[str, Any]) -> None:
    """One ``run_batch`` call: results may arrive in any order (and again after a resume); retried rows
    are replaced as they come, new rows written in order as soon as they are contiguous."""
    retry = {int(r) for r in retry_rows}
    pending: dict[int, TextResult] = {}
    rows = sorted(retry) + list(range(writer.rows_done, job.num_strings))
    items = [(int(i), job.prefix_texts[int(i % len(job.prefixes))]) for i in rows]

    def save_state(new_state: dict) -> None:
        writer.set_attrs(batch_state={**new_state, "retry": bool(retry_rows)})

    def on_results(results: list[tuple[int, TextResult]]) -> None:
        replaced = [(int(row), result) for row, result in results if int(row) in retry]
        if replaced:
            cols = _text_columns(job, [result for _, result in replaced])
            cols["prefix_row"] = np.array([row for row, _ in replaced]) % len(job.prefixes)
            record(cols, replace=[row for row, _ in replaced])
            retry.difference_update(row for row, _ in replaced)
        for row, result in results:
            if writer.rows_done <= row < job.num_strings:
                pending[int(row)] = result
        ready: list[int] = []
        while writer.rows_done + len(ready) in pending:
            ready.append(writer.rows_done + len(ready))
        if ready:
            cols = _text_columns(job, [pending.pop(r) for r in ready])
            cols["prefix_row"] = np.array(ready) % len(job.prefixes)
            record(cols)

    job.backend.run_batch(items, job.max_length, job.sampling, state, save_state, on_results)
    if writer.attrs.get("batch_state"):  # every result of it is written: a later call submits anew
        writer.set_attrs(batch_state={**writer.attrs["batch_state"], "collected": True})
    if writer.rows_done < job.num_strings:
        raise MiaError(f"the batch ended without results for rows {writer.rows_done}..{job.num_strings - 1}")
