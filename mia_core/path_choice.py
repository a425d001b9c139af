"""Which measured way to run the default model (``defaults.DEFAULT_MODEL_PATHS``) `mia demo` takes here:
the fastest available one whose verdicts agree with the reference's within ``defaults.AGREEMENT_BOUND``.

Not in defaults.py, a table of names: this module reads the machine (/proc/cpuinfo, CUDA, the plugins
loaded) and decides. The choice itself (``choose_path``) is pure, so any table can be tested.
"""

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mia_core import registry
from mia_core.defaults import AGREEMENT_BOUND, NATIVE_BF16, AgreementBound, DefaultModelPath

NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo flags of a CPU computing bf16 natively


@dataclass(frozen=True)
class PathChoice:
    """The path taken, the workload whose measured speed ranked the paths, and each faster path not
    taken with the reason."""

    path: DefaultModelPath
    workload: str
    passed_over: tuple[tuple[DefaultModelPath, str], ...]


def within_bound(path: DefaultModelPath, bound: AgreementBound = AGREEMENT_BOUND) -> bool:
    """The reference, or a path whose measured verdicts moved no more than ``bound`` allows."""
    return path.reference or (path.exact_moved <= bound.exact_verdicts_moved
                              and path.matched_moved <= bound.matched_lengths_moved * path.rows)


def moved(path: DefaultModelPath) -> str:
    """What moved against the reference, over the measured rows."""
    text = f"matched length moved on {path.matched_moved / path.rows:.0%} ({path.matched_moved}/{path.rows})"
    if path.exact_moved:
        text = f"exact verdict moved on {path.exact_moved}/{path.rows}, " + text
    return text


def measured_workload(method: str, batch_size: int, paths: Sequence[DefaultModelPath]) -> str:
    """The measured workload nearest the demo's: generation or scoring (teacher-forced), at the measured
    batch size nearest ``batch_size`` on a log scale (on a tie, the larger)."""
    kind = "score" if method == "teacher-forced" else "generate"
    batches = {int(key.rsplit(" ", 1)[1]) for p in paths for key in p.speed if key.startswith(f"{kind}, batch ")}
    nearest = min(batches, key=lambda b: (abs(math.log(b / batch_size)), -b))
    return f"{kind}, batch {nearest}"


def choose_path(paths: Sequence[DefaultModelPath], is_available: Callable[[DefaultModelPath], bool],
                workload: str, bound: AgreementBound = AGREEMENT_BOUND) -> PathChoice:
    """The fastest path at ``workload`` among those available and within ``bound``; on equal speed the
    earlier in ``paths``. When none qualifies, the reference (loading it then says what is missing)."""
    reference = next(p for p in paths if p.reference)
    eligible = [p for p in paths if is_available(p) and within_bound(p, bound)]
    chosen = max(eligible, key=lambda p: p.speed[workload]) if eligible else reference
    passed_over = tuple((p, "not available here" + (f" (needs {p.needs})" if p.needs else f" (no model {p.model})")
                         if not is_available(p) else f"outside the bound, {moved(p)}")
                        for p in paths if p.speed[workload] > chosen.speed[workload])
    return PathChoice(chosen, workload, passed_over)


def cpu_has_native_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists AMX-BF16 or AVX512-BF16 among a CPU's flags."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_FLAGS)


def native_bf16_here() -> bool:
    """A CPU with native bf16 (Linux's /proc/cpuinfo; elsewhere unknown, so no) or a CUDA device."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    return cpu_has_native_bf16(cpuinfo) or _cuda_available()


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:  # the core does not need torch; the HF plugin does
        return False
    import torch

    return bool(torch.cuda.is_available())


def availability(native_bf16: Callable[[], bool] = native_bf16_here) -> Callable[[DefaultModelPath], bool]:
    """``is_available`` for this machine: the path's model is registered by a loaded plugin, and what it
    needs is here (``native_bf16`` is asked only for a path that needs it, once)."""
    asked: dict[str, bool] = {}

    def is_available(path: DefaultModelPath) -> bool:
        if registry.backends.find(path.model) is None:
            return False
        if path.needs == NATIVE_BF16 and NATIVE_BF16 not in asked:
            asked[NATIVE_BF16] = native_bf16()
        return path.needs is None or asked[path.needs]

    return is_available


def model_label(path: DefaultModelPath) -> str:
    """The model and options as a user would pass them, and the path's name."""
    options = " ".join(f"{k}={v}" for k, v in path.options.items())
    return f"{path.model}{' ' + options if options else ''}, {path.label}"


def describe_choice(choice: PathChoice, bound: AgreementBound = AGREEMENT_BOUND) -> str:
    """Why this path: the one line `mia demo` prints (after ``path: <model_label>``)."""
    speed = choice.path.speed[choice.workload]
    text = (f"the fastest path available here within the agreement bound of docs/models.md ({bound.describe()}), "
            f"by tok/s measured at {choice.workload} (this path: {speed:g})")
    if not choice.path.reference:
        text += f"; against the reference: {moved(choice.path)}"
    if choice.passed_over:
        text += "; faster but passed over: " + "; ".join(
            f"{p.label} ({p.speed[choice.workload]:g} tok/s): {why}" for p, why in choice.passed_over)
    return text
