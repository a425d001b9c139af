"""Prompting a model with a prefix map: the generation loop behind ``mia prompt`` / ``mia check``.

Row ``i`` of a run uses map prefix ``i mod N`` (wraparound). Rows are produced batch by
batch and appended to the run file, which is flushed after each batch, so a killed or
interrupted run resumes exactly where it stopped (``resume=PATH``).

:func:`prompt` is spec -> backend -> job -> writer -> loop: the options become a
:class:`~mia_core.extraction.spec.RunSpec` (validated, reconciled with a resumed run; no I/O), the
backend is loaded, a :class:`_Job` holds what every batch reads, and a :class:`_PromptLoop` asks
the rows and commits them with their counters.

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
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mia_core import registry
from mia_core.defaults import DEFAULT_CHAT_MODEL, DEFAULT_MODEL
from mia_core.divergence import prompts as dp
from mia_core.errors import BackendOutOfMemory, DiskError, MiaError, UsageError
from mia_core.extraction.check import teacher_forced_batch
from mia_core.extraction.spec import Confirm, PromptOptions, RunSpec, batch_api_forced
from mia_core.formats.prefixmap import PrefixMap
from mia_core.formats.runs import API_COLUMNS, Run, RunWriter, Salvage, default_run_path, open_run
from mia_core.progress import note, progress
from mia_core.redact import redact
from mia_core.token_rows import pad_rows
from mia_core.types import (
    INT64_MAX,
    Sampling,
    TextResult,
    bos_prepended,
    capabilities,
    reports_progress,
    scores_sampling,
)


class RunStopped(MiaError):
    """A run stopped early on purpose (cost cap); its finished rows are kept. Exit code 3."""

    exit_code = 3

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


_note = note


@dataclass(frozen=True)
class _Job:
    """What every batch of one run reads: the spec, the backend and the prompts in the backend's tokens."""

    spec: RunSpec
    backend: Any
    mode: str  # "tokens" | "text" | "teacher-forced"
    prefixes: Sequence[np.ndarray]  # one per map row (or divergence prompt), in the tokenizer the backend sees
    tokenizer: Any  # the tokenizer the run's tokens are in (recorded in the run)
    suffixes: Sequence[np.ndarray] | None = None
    map_tokenizer: Any = None  # text mode: decodes prefixes, re-tokenizes answers
    retokenized: bool = False
    prefix_texts: list[str] = field(default_factory=list)
    static: dict[str, np.ndarray] = field(default_factory=dict)  # datasets written once into the run
    source: dict[str, Any] = field(default_factory=dict)  # run attributes: where the prompts came from
    map: PrefixMap | None = None  # None: a divergence run


def usd(amount: float) -> str:
    """A sum in US dollars with the digits that make it readable: cents from $1 up, three significant
    digits below (a cap of $0.0004 is not printed as $0.00)."""
    return f"${amount:,.2f}" if abs(amount) >= 1 or amount == 0 else f"${amount:.3g}"


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
                         "split the run with --shard", option="num_strings")


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


@functools.lru_cache(maxsize=4)
def _map_tokenizer(name: str, fingerprint: str) -> Any:
    """The map's tokenizer (cached: loading a 262k-token vocabulary takes seconds)."""
    return registry.tokenizers.create(name)


def _mode(spec: RunSpec, backend: Any) -> str:
    """How this backend answers: ``tokens``, ``text`` or ``teacher-forced`` (refusing one that cannot)."""
    caps = capabilities(backend)
    if spec.teacher_forced:
        if "score" not in caps:
            raise MiaError(f"model {spec.model!r} cannot score sequences, so the teacher-forced check needs "
                           "generation instead (mia prompt --method generate)")
        if not spec.sampling.greedy and not scores_sampling(backend):
            raise MiaError(f"model {spec.model!r} cannot score under a sampling scheme (its score() has no sampling "
                           "option), so a teacher-forced run cannot record p for --temperature/--top_k/--top_p")
        return "teacher-forced"
    if "generate" in caps:
        return "tokens"
    if "generate_text" in caps:
        return "text"
    raise MiaError(f"model {spec.model!r} can neither generate tokens nor text (capabilities: {sorted(caps)})")


def _map_job(spec: RunSpec, pmap: PrefixMap, backend: Any) -> _Job:
    """A job over a prefix map's rows."""
    mode = _mode(spec, backend)
    prefixes = pmap.lazy_rows("prefixes")  # read a block at a time: flat memory whatever the map's size
    source = {"prefix_map": str(pmap.folder.resolve()), "map_size": len(pmap)}
    if mode == "text":
        map_tokenizer = _map_tokenizer(pmap.tokenizer_name, pmap.tokenizer_fingerprint)
        if map_tokenizer.fingerprint != pmap.tokenizer_fingerprint:
            raise MiaError(f"tokenizer {pmap.tokenizer_name!r} no longer matches the map's fingerprint "
                           "(its version changed?); remake the map with mia prefix")
        return _Job(spec, backend, mode, prefixes, map_tokenizer, map_tokenizer=map_tokenizer, map=pmap,
                    prefix_texts=map_tokenizer.decode_batch([p.tolist() for p in prefixes]), source=source)
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        raise MiaError(f"model {spec.model!r} has no tokenizer, so it cannot take token prefixes")
    suffixes = pmap.lazy_rows("suffixes", "suffix_lengths") if mode == "teacher-forced" else None
    if tok.fingerprint == pmap.tokenizer_fingerprint:
        return _Job(spec, backend, mode, prefixes, tok, suffixes, source=source, map=pmap)
    if not spec.retokenize:
        raise MiaError(
            f"model {spec.model!r} uses tokenizer {tok.name!r} (fingerprint {tok.fingerprint[:12]}), but the map was "
            f"made with {pmap.tokenizer_name!r} (fingerprint {pmap.tokenizer_fingerprint[:12]}); make a map with "
            f"this model (mia prefix --model {spec.model}) or pass --retokenize")
    prefixes, suffixes = _retokenized(pmap, tok)
    return _Job(spec, backend, mode, prefixes, tok, suffixes, retokenized=True, source=source, map=pmap,
                static=_retokenized_static(prefixes, suffixes))


def _retokenized(pmap: PrefixMap, tokenizer: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The map's prefixes and suffixes decoded with its tokenizer and encoded with ``tokenizer``."""
    map_tok = _map_tokenizer(pmap.tokenizer_name, pmap.tokenizer_fingerprint)

    def encode(rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        texts = map_tok.decode_batch([r.tolist() for r in rows])
        return [np.asarray(ids, dtype=np.int32) for ids in tokenizer.encode_batch(texts)]

    prefixes = encode(list(pmap.read("prefixes")))
    if any(len(p) == 0 for p in prefixes):
        raise MiaError("--retokenize produced an empty prefix; this map cannot be retokenized")
    return prefixes, encode(pmap.suffixes())


def _retokenized_static(prefixes: list[np.ndarray], suffixes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A retokenized run stores the prefixes and suffixes it used (the map's are in another tokenizer)."""
    padded_prefixes, prefix_lengths = pad_rows(prefixes)
    padded_suffixes, suffix_lengths = pad_rows(suffixes)
    return {"prefixes": padded_prefixes, "prefix_lengths": prefix_lengths.astype(np.int32),
            "suffixes": padded_suffixes, "suffix_lengths": suffix_lengths.astype(np.int32)}


def _divergence_job(spec: RunSpec, backend: Any) -> _Job:
    """A job whose "map rows" are the divergence prompts (``mia_core.divergence.prompts``)."""
    mode = _mode(spec, backend)
    prepared = dp.prepare(spec.divergence, backend, spec.model, mode)
    source = {"prefix_map": "", "map_size": len(prepared["prefixes"]), "strategy": dp.STRATEGY,
              dp.STRATEGY: spec.divergence.attrs(prepared["delivery"])}
    return _Job(spec, prepared["backend"], mode, prepared["prefixes"], prepared["tokenizer"],
                map_tokenizer=prepared["map_tokenizer"], prefix_texts=prepared["prefix_texts"],
                static=prepared["static"], source=source)


def _columns(mode: str, sampling: Sampling) -> dict[str, tuple[str, Any]]:
    if mode == "teacher-forced":
        columns = {"logprobs": ("float32", "max_length"), "matched_length": ("int32", None)}
        if not sampling.greedy:  # p of the true suffix under this scheme (probabilistic extraction)
            columns["sampled_logprobs"] = ("float32", "max_length")
        return columns
    if mode == "text":
        return dict(API_COLUMNS)
    return {}


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
    tokens = [t[:job.spec.max_length] for t in ids]
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
    sampling = _batch_sampling(job.spec.sampling, int(rows[0]))
    if job.mode == "teacher-forced":
        cols = teacher_forced_batch(job.backend, [job.prefixes[r] for r in prow],
                                    [job.suffixes[r] for r in prow], job.spec.max_length, job.spec.sampling)
        cols["text"] = job.backend.tokenizer.decode_batch([list(map(int, t)) for t in cols["tokens"]])
    elif job.mode == "text":
        results = job.backend.generate_text([job.prefix_texts[r] for r in prow], job.spec.max_length, sampling)
        if len(results) != len(prow):
            raise MiaError(f"backend {job.spec.model!r} returned {len(results)} answers for {len(prow)} prompts")
        cols = _text_columns(job, results)
    else:
        # Group by prefix length: equal-length prefixes need no padding (always one group
        # unless retokenized).
        tokens: list[list[int]] = [[] for _ in prow]
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(prow):
            groups.setdefault(len(job.prefixes[r]), []).append(i)
        for members in groups.values():
            new = job.backend.generate([job.prefixes[prow[i]].tolist() for i in members], job.spec.max_length, sampling)
            for i, t in zip(members, new, strict=True):
                tokens[i] = list(t)[:job.spec.max_length]
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


def prompt(prefix_map: str | Path | None = None, model: str | None = None,
           **options: Any) -> list[dict] | Iterator[dict] | None:
    """Prompt ``model`` with the prefixes of ``prefix_map`` and store every continuation.

    Returns the seed's list of dictionaries, one per string (``index``, ``prefix_index``,
    ``sample_id``, ``sample_label``, ``prefix_tokens``, ``generated_tokens``, ``text`` and
    the run's extra columns); ``rows="iter"`` an iterator over them instead, read from the run file in chunks
    (memory does not grow with the run), ``rows="none"`` nothing. Keyword ``options``
    (:class:`~mia_core.extraction.spec.PromptOptions`; an unknown keyword is a ``TypeError``): ``num_strings`` =
    number of prefixes by default (wraparound when larger), ``batch_size`` 10, ``max_length`` 20 new tokens
    (teacher-forced: the map's suffix length), ``sampling`` greedy, ``model`` ``defaults.DEFAULT_MODEL``.
    ``resume`` continues a run file; options given then must equal the recorded ones. ``on_path`` is called with
    the run path as soon as it is known. ``method`` is ``"generate"`` (default) or ``"teacher-forced"`` (see
    ``mia_core.extraction.check``). ``retry_failed`` (with ``resume``) asks the rows whose request failed again
    and replaces them in place. ``salvage`` (with ``resume``) continues a run whose journal is damaged: every
    intact record is kept, a copy of the journal is kept beside the run, and only the rows of damaged records
    are asked again. ``confirm`` asks the user a yes/no question (the CLI's prompt) when an API estimate is
    above ``confirm_above``; without it, or without a terminal, such a run needs ``yes``. ``shard`` (``"I/N"``)
    generates only the rows ``i`` with ``i mod N == I`` (see ``mia_core.extraction.shards``, docs/scale.md).
    ``strategy`` ``"divergence"`` takes no map: it asks the model to repeat ``words`` forever (Nasr et al. 2023
    §5) in the ``prompt_forms`` with the word ``repeats`` times (``mia_core.divergence.prompts``). ``backend``
    is a loaded backend to use instead of loading ``model``; ``dry_run`` prints the requests;
    ``max_cost``/``confirm_above``/``yes``/``batch_api`` are the cost controls of API models.
    See docs/prompt.md.
    """
    given = PromptOptions(prefix_map, model, **options)
    resumed = _open_resumed(given) if given.resume is not None else None
    spec, pmap = _resumed_spec(given, resumed) if resumed is not None else _new_spec(given)
    _check_source(spec, pmap)
    backend = given.backend if given.backend is not None else registry.backends.create(spec.model,
                                                                                       dict(spec.model_options))
    job = _divergence_job(spec, backend) if spec.divergence is not None else _map_job(spec, pmap, backend)
    _check_batch_api(job)
    if resumed is not None and spec.divergence is not None:
        dp.check_same_prompts(resumed.run, job.prefix_texts, job.static)
    retry_rows = resumed.retry_rows if resumed is not None else []
    start_row = len(resumed.run) if resumed is not None else 0
    if given.dry_run:
        _dry_run(job, start_row, spec.batch_size, retry_rows)
        return _returned_rows(iter(()), given.rows)
    _estimate_and_confirm(job, start_row, given.confirm_above, given.yes, given.confirm, given.max_cost,
                          spec.batch_api, retry_rows)
    path = _write_run(job, given, resumed, retry_rows)
    return _returned_rows(_rows_of(open_run(path)), given.rows)


@dataclass(frozen=True)
class _Resumed:
    """A run to continue, read (read-only: a refused resume or a dry run leaves it as it was)."""

    run: Run
    retry_rows: list[int]  # rows of the run file to ask again in place


def _open_resumed(given: PromptOptions) -> _Resumed:
    resume = given.resume
    resumed = open_run(resume, salvage=given.salvage)
    if resumed.complete and RunWriter.finish_compaction(resume):  # killed at its final compaction
        _note(f"{resume}: finished the compaction a killed run left (journal folded in, temporary files "
              "removed); its rows are unchanged")
        resumed = open_run(resume, salvage=given.salvage)
    return _Resumed(resumed, _rows_to_ask_again(resumed, given.retry_failed, given.salvage))


def _resumed_spec(given: PromptOptions, resumed: _Resumed) -> tuple[RunSpec, PrefixMap | None]:
    attrs, written = resumed.run.attrs, len(resumed.run)
    spec = RunSpec.resumed(attrs, given, written)
    if batch_api_forced(attrs, given, written < spec.num_strings):
        _note("this run was started with --batch-api; resuming it with the batch API")
    return spec, (None if spec.divergence is not None else _resumed_map(resumed.run, given))


def _resumed_map(run: Run, given: PromptOptions) -> PrefixMap:
    """The map a resumed run was made from (where it was recorded, else the run's own folder)."""
    recorded = str(run.attrs["prefix_map"])
    if given.prefix_map is not None and \
            PrefixMap(given.prefix_map, given.prefixes_dir).folder.resolve() != Path(recorded).resolve():
        raise MiaError(f"cannot resume: the run was made from the map {recorded}, not {given.prefix_map}")
    return PrefixMap(recorded) if Path(recorded).is_dir() else PrefixMap(run.path.resolve().parent.parent)


def _new_spec(given: PromptOptions) -> tuple[RunSpec, PrefixMap | None]:
    fresh_seed = random.randrange(2**31)  # recorded when sampling without a seed
    if given.strategy == dp.STRATEGY:  # the embedded default model is a base model: a chat model instead
        return RunSpec.for_divergence(given, given.model or DEFAULT_CHAT_MODEL, fresh_seed), None
    if given.prefix_map is None:
        raise UsageError("give a prefix map (--prefix_map) or a run to --resume")
    pmap = PrefixMap(given.prefix_map, given.prefixes_dir)
    return RunSpec.for_map(given, given.model or DEFAULT_MODEL, len(pmap), pmap.suffix_tokens, fresh_seed), pmap


def _check_source(spec: RunSpec, pmap: PrefixMap | None) -> None:
    """Before the model is loaded: the run fits in memory, and every map column it will read is intact
    (read once now: a damaged map stops here, not mid-run)."""
    if pmap is not None and len(pmap) == 0:
        raise MiaError(f"the prefix map {pmap.folder} holds no prefixes")
    _check_run_fits(spec.shard.size(spec.num_strings), spec.max_length, spec.method)
    if pmap is not None:
        pmap.verify(["prefixes", "sample_id", "sample_label"]
                    + (["suffixes", "suffix_lengths"] if spec.teacher_forced or spec.retokenize else []))


def _check_batch_api(job: _Job) -> None:
    if not job.spec.batch_api:
        return
    if job.mode != "text":
        raise UsageError("--batch-api is for API (text) models only")
    if not callable(getattr(job.backend, "run_batch", None)):
        raise MiaError(f"model {job.spec.model!r} has no batch API (its backend does not implement run_batch)")


def _write_run(job: _Job, given: PromptOptions, resumed: _Resumed | None, retry_rows: list[int]) -> Path:
    """Open the run file (new, or the resumed one), ask every pending row into it, close it."""
    writer = _reopen(job, given, resumed) if resumed is not None else _create(job, given)
    try:
        if given.on_path is not None:
            given.on_path(writer.path)
        _PromptLoop(job, writer, given.quiet, given.max_cost, retry_rows, fresh=resumed is None).run()
    finally:
        writer.close()
    return writer.path


def _reopen(job: _Job, given: PromptOptions, resumed: _Resumed) -> RunWriter:
    writer = RunWriter.reopen(given.resume, salvage=_salvage_for(job) if given.salvage else None)
    if given.salvage and resumed.run.damage is not None:
        copy = writer.path.parent / writer.attrs["salvaged"][-1]["journal_copy"]
        _note(f"the damaged journal is kept as {copy}")
    return writer


def _create(job: _Job, given: PromptOptions) -> RunWriter:
    folder = job.map.folder if job.map is not None else dp.runs_folder(given.prefixes_dir)
    path = Path(given.out) if given.out is not None else default_run_path(folder, job.spec.model)
    if path.suffix != ".h5":
        raise UsageError(f"a run file name must end in .h5, got {path}", option="out")
    return RunWriter.create(path, _run_attrs(job), job.spec.max_length, _columns(job.mode, job.spec.sampling),
                            job.static)


def _run_attrs(job: _Job) -> dict[str, Any]:
    """A new run's attributes: its spec, where its prompts came from, the backend, zeroed counters."""
    backend = job.backend
    describe = backend.describe() if callable(getattr(backend, "describe", None)) else {}
    options = dict(job.spec.model_options)
    return {**job.spec.attrs(), "backend": describe, **job.source,
            "tokenizer": job.tokenizer.name, "tokenizer_fingerprint": job.tokenizer.fingerprint,
            "bos_prepended": bos_prepended(backend),
            "retokenized": job.retokenized,
            "model_options_redacted": sorted(k for k, v in options.items() if redact({k: v})[k] != v),
            "elapsed_s": 0.0, "generated_tokens": 0, "cost_usd": 0.0, "usage": {}}


def _rows_of(run: Run) -> Iterator[dict]:
    """The run's rows as the seed's dictionaries, read in chunks."""
    rows = run.iter_dicts(with_map=run.kind.has_map)
    if run.kind.has_map:
        return rows
    texts = dp.prompt_texts(run)  # each row's prompt instead of a map row's prefix
    return ({**row, "prompt_text": text} for row, text in zip(rows, texts, strict=True))


def _returned_rows(rows: Iterator[dict], returned: str) -> list[dict] | Iterator[dict] | None:
    """``prompt(rows=...)``: the list, the iterator itself, or nothing (not even read)."""
    return list(rows) if returned == "list" else rows if returned == "iter" else None


def _rows_to_ask_again(resumed: Any, retry_failed: bool, salvage: bool) -> list[int]:
    """The rows of a resumed run to ask again in place: rows of damaged journal records (found now by
    ``--salvage``, or left by an interrupted salvage), and the failed rows with ``--retry-failed``;
    refuses a resume that has nothing to do."""
    path, attrs, written = resumed.path, resumed.attrs, len(resumed)
    failed = np.flatnonzero(resumed.failed_rows()).tolist()
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
        whole = job.spec.shard.index + rows * job.spec.shard.count
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
    retried = job.spec.shard.index + np.asarray(retry_rows, dtype=np.int64) * job.spec.shard.count
    return np.concatenate([retried, job.spec.shard.run_rows(start_row, job.spec.num_strings, job.spec.num_strings)])


def _dry_run(job: _Job, start_row: int, batch_size: int, retry_rows: Sequence[int] = ()) -> None:
    rows = _pending_rows(job, start_row, retry_rows)
    render = getattr(job.backend, "render_request", None)
    for i in rows:
        r = int(i % len(job.prefixes))
        if job.mode == "text":
            text = job.prefix_texts[r]
            request = render(text, job.spec.max_length) if callable(render) else {"prompt": text}
        else:
            request = {"prefix_tokens": job.prefixes[r].tolist()}
        print(json.dumps({"row": int(i), "prefix_index": r, "request": request}, default=str), flush=True)
    estimate = _estimate(job, rows)
    cost = f"; estimated cost ${estimate:.4f}" if estimate is not None else ""
    _note(f"dry run: {len(rows)} requests in batches of {batch_size} to {job.spec.model}{cost}; nothing sent or "
          "written")


def _estimate(job: _Job, rows: np.ndarray) -> float | None:
    estimate = getattr(job.backend, "estimate_cost", None)
    if not _estimates_cost(job) or len(rows) == 0:
        return None
    return float(estimate([job.prefix_texts[int(i % len(job.prefixes))] for i in rows], job.spec.max_length))


def _estimates_cost(job: _Job) -> bool:
    """Whether the run's requests have a price to estimate (an API model that estimates its costs)."""
    return job.mode == "text" and callable(getattr(job.backend, "estimate_cost", None))


def _estimate_and_confirm(job: _Job, start_row: int, confirm_above: float, yes: bool, confirm: Confirm | None,
                          max_cost: float | None, batch_api: bool, retry_rows: Sequence[int] = ()) -> None:
    if not _estimates_cost(job):  # the pending rows (8 bytes each) are listed only when they have a price
        return
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
    _note(f"estimated cost: ${estimate:.4f} for {len(rows)} requests to {job.spec.model}{retried}")


def _resume_hint(path: Path) -> str:
    return f"mia prompt --resume {path}"


class _ProgressBar:
    """The run's progress bar, moved by whole rows: by the backend within a batch (``on_rows_done``,
    fractional: HF reports every step), and by each committed batch; never ahead of the batch asked."""

    def __init__(self, job: _Job, todo: int, quiet: bool) -> None:
        self.bar = progress(total=todo, desc=f"{job.spec.method} {job.spec.model}", unit="str", quiet=quiet)
        self.batch_rows = 0  # rows in the batch being asked
        self.shown = 0  # whole rows of it shown on the bar
        self.reported = 0.0  # rows of it the backend reported

    def start_batch(self, rows: int) -> None:
        self.batch_rows, self.shown, self.reported = rows, 0, 0.0

    def on_rows_done(self, rows: float, new_tokens: int) -> None:
        self.reported += rows
        whole = min(int(self.reported), self.batch_rows) - self.shown
        if whole > 0:
            self.shown += whole
            self.bar.update(whole)

    def batch_committed(self, rows: int, postfix: str) -> None:
        self.bar.update(rows - self.shown)
        self.start_batch(0)
        self.bar.set_postfix_str(postfix)

    def batch_redone(self) -> None:
        self.bar.update(-self.shown)
        self.start_batch(0)

    def close(self) -> None:
        self.bar.close()


class _PromptLoop:
    """Asks a run's pending rows batch by batch and commits each with the counters it moves (one journal
    record: both or neither); halves the batch on out-of-memory, stops at the cost cap."""

    def __init__(self, job: _Job, writer: RunWriter, quiet: bool, max_cost: float | None,
                 retry_rows: Sequence[int], fresh: bool) -> None:
        attrs = writer.attrs
        self.job, self.writer, self.max_cost, self.fresh = job, writer, max_cost, fresh
        self.retry_rows = list(retry_rows)
        self.elapsed0, self.tokens0 = float(attrs.get("elapsed_s") or 0.0), int(attrs.get("generated_tokens") or 0)
        self.spent, self.usage = float(attrs.get("cost_usd") or 0.0), dict(attrs.get("usage") or {})
        self.t0, self.tokens = time.perf_counter(), 0
        self.total = job.spec.shard.size(job.spec.num_strings)
        self.batch_size = job.spec.batch_size  # halved on out-of-memory; the size in use is recorded
        self.bar = _ProgressBar(job, len(self.retry_rows) + self.total - writer.rows_done, quiet)

    def run(self) -> None:
        """Ask every pending row, then record the run as finished."""
        hook = _ProgressHook(self.job.backend, self.bar.on_rows_done)
        try:
            with hook:
                self._ask_all()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        except MiaError as exc:
            self._failed(exc)
            raise
        except BaseException:
            self.bar.close()
            _discard_if_empty(self.writer, self.fresh)
            raise
        self.bar.close()
        self._finish()

    def _ask_all(self) -> None:
        batch_api = self.job.spec.batch_api
        if not batch_api:
            self._ask_again(self.retry_rows)
        if batch_api and (self.retry_rows or self.writer.rows_done < self.job.spec.num_strings):  # else nothing to poll
            _execute_batch_api(self.job, self.writer, self.record, self.retry_rows)
        elif not batch_api:
            self._ask_new_rows()

    def _ask_again(self, retry_rows: list[int]) -> None:
        """Failed rows asked again, replaced in place."""
        pending, shard = list(retry_rows), self.job.spec.shard
        while pending:
            local = np.asarray(pending[:self.batch_size], dtype=np.int64)  # rows of this run file
            rows = shard.index + local * shard.count  # rows of the whole run
            self._check_cost(rows, f"{len(retry_rows) - len(pending)} of {len(retry_rows)} failed rows asked again")
            cols = self._generate(rows)
            if cols is not None:
                self.record(cols, replace=local.tolist())
                pending = pending[len(local):]

    def _ask_new_rows(self) -> None:
        while self.writer.rows_done < self.total:
            start = self.writer.rows_done
            rows = self.job.spec.shard.run_rows(start, self.batch_size, self.job.spec.num_strings)
            self._check_cost(rows, f"{start} of {self.total} rows kept")
            cols = self._generate(rows)
            if cols is not None:
                self.record(cols)

    def _generate(self, rows: np.ndarray) -> dict[str, list] | None:
        """The batch's columns, or None when it did not fit (the batch size is halved: ask again)."""
        self.bar.start_batch(len(rows))
        try:
            return _generate_batch(self.job, rows)
        except BackendOutOfMemory:
            self.bar.batch_redone()
            if self.batch_size == 1:
                raise MiaError("out of memory even at batch size 1; try a smaller --max_length, "
                               "--dtype bfloat16 or another --device") from None
            self.batch_size //= 2
            _note(f"out of memory at batch size {self.batch_size * 2}; retrying with batch size {self.batch_size}")
            return None

    def record(self, cols: dict[str, list], replace: Sequence[int] | None = None) -> None:
        """Commit a batch with the counters it moves (one journal record: both or neither)."""
        writer = self.writer
        new_tokens = int(sum(len(t) for t in cols["tokens"]))
        if replace is not None:  # a retried row's earlier (failed) tokens no longer count
            new_tokens -= int(writer.read("lengths")[np.asarray(replace, dtype=np.int64)].sum())
        new_spent, new_usage = self.spent + _cost_of(cols), _sum_usage(dict(self.usage), cols)
        elapsed = time.perf_counter() - self.t0
        api = self.job.mode == "text"
        counters = {"elapsed_s": self.elapsed0 + elapsed, "generated_tokens": self.tokens0 + self.tokens + new_tokens,
                    **({"cost_usd": new_spent, "usage": new_usage} if api else {})}
        lost = writer.attrs.get("salvage_rows") or []
        if replace is not None and lost:  # rows of damaged journal records, now asked again
            counters["salvage_rows"] = sorted(set(lost) - set(replace))
        if replace is None:
            writer.append(cols, **counters)
        else:
            writer.replace(replace, cols, **counters)
        self.tokens, self.spent, self.usage = self.tokens + new_tokens, new_spent, new_usage
        self.bar.batch_committed(len(cols["prefix_row"]), f"{self.tokens / max(elapsed, 1e-9):.1f} tok/s"
                                 + (f", ${self.spent:.4f}" if api else ""))

    def _check_cost(self, rows: np.ndarray, done: str) -> None:
        if self.max_cost is None:
            return
        next_cost = _estimate(self.job, rows) or 0.0
        if self.spent + next_cost <= self.max_cost and self.spent < self.max_cost:
            return
        path, cap = self.writer.path, usd(self.max_cost)
        if self.fresh and self.writer.rows_done == 0 and not self.retry_rows:  # nothing paid, nothing to resume
            raise RunStopped(
                f"stopped before the first batch: it would cost about {usd(next_cost)}, above --max-cost "
                f"{cap}; nothing was sent or written (no run file); raise --max-cost or lower "
                "--batch_size", path)
        raise RunStopped(
            f"stopped at the cost cap: ${self.spent:.4f} spent, the next batch would cost about "
            f"${next_cost:.4f} (--max-cost {cap}); {done} in {path}; "
            f"continue with: {_resume_hint(path)} --max-cost HIGHER", path)

    def _interrupted(self) -> None:
        self.bar.close()
        writer = self.writer
        if _discard_if_empty(writer, self.fresh):
            _note(f"\ninterrupted before the first row; nothing was kept (no run file left at {writer.path})")
        else:
            _note(f"\ninterrupted: {writer.rows_done} of {self.total} rows kept in {writer.path}; "
                  f"continue with: {_resume_hint(writer.path)}")

    def _failed(self, exc: MiaError) -> None:
        """Say in the error what became of the run file."""
        self.bar.close()
        writer = self.writer
        if _discard_if_empty(writer, self.fresh) and not isinstance(exc, RunStopped):
            exc.message += f" (nothing was written; no run file left at {writer.path})"
        elif not isinstance(exc, (RunStopped, DiskError)) and writer.rows_done:
            exc.message += f" ({writer.rows_done} rows kept; continue with: {_resume_hint(writer.path)})"

    def _finish(self) -> None:
        writer = self.writer
        elapsed = self.elapsed0 + time.perf_counter() - self.t0
        total_tokens = self.tokens0 + self.tokens
        failed = int(writer.failed_rows().sum())
        writer.finish(elapsed_s=elapsed, generated_tokens=total_tokens, rows_failed=failed, complete=failed == 0,
                      tokens_per_s=total_tokens / elapsed if elapsed > 0 else 0.0, batch_size_used=self.batch_size)
        if failed and failed == writer.rows_done:
            first = next(e for e in writer.read("error") if e)
            raise MiaError(f"all {failed} requests failed (first error: {first}); the run is kept in {writer.path}: "
                           f"fix the cause, then ask them again with: {_resume_hint(writer.path)} --retry-failed")


class _ProgressHook:
    """Points a backend's ``on_rows_done`` (``mia_core.types.ReportsProgress``) at this run's bar while
    the run lasts: never kept past it."""

    def __init__(self, backend: Any, callback: Callable[[float, int], None]) -> None:
        self.backend, self.callback = backend, callback

    def __enter__(self) -> None:
        if reports_progress(self.backend):
            self.backend.on_rows_done = self.callback

    def __exit__(self, *exc: object) -> None:
        if reports_progress(self.backend):
            self.backend.on_rows_done = None


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
        if writer.rows_done < job.spec.num_strings:
            _run_batch(job, writer, record, [], paid)  # the unwritten rows' paid batch first
        paid = {}
    _run_batch(job, writer, record, retry_rows, paid)


def _run_batch(job: _Job, writer: RunWriter, record: Callable[..., None], retry_rows: Sequence[int],
               state: dict[str, Any]) -> None:
    """One ``run_batch`` call: results may arrive in any order (and again after a resume); retried rows
    are replaced as they come, new rows written in order as soon as they are contiguous."""
    retry = {int(r) for r in retry_rows}
    pending: dict[int, TextResult] = {}
    rows = sorted(retry) + list(range(writer.rows_done, job.spec.num_strings))
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
            if writer.rows_done <= row < job.spec.num_strings:
                pending[int(row)] = result
        ready: list[int] = []
        while writer.rows_done + len(ready) in pending:
            ready.append(writer.rows_done + len(ready))
        if ready:
            cols = _text_columns(job, [pending.pop(r) for r in ready])
            cols["prefix_row"] = np.array(ready) % len(job.prefixes)
            record(cols)

    job.backend.run_batch(items, job.spec.max_length, job.spec.sampling, state, save_state, on_results)
    if writer.attrs.get("batch_state"):  # every result of it is written: a later call submits anew
        writer.set_attrs(batch_state={**writer.attrs["batch_state"], "collected": True})
    if writer.rows_done < job.spec.num_strings:
        raise MiaError(f"the batch ended without results for rows {writer.rows_done}..{job.spec.num_strings - 1}")
