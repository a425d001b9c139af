"""Fine-tuning through the plugin contract, into a model folder that appears complete or not at all.

A backend plugin offers fine-tuning by registering its models with a ``finetune`` entry, a
callable or a lazy ``"module:attr"`` string (like factories, so registering imports no torch)::

    register("my-model", "my_plugin.backend:load", capabilities=["generate", "score"],
             finetune="my_plugin.finetune:finetune")

and the callable is ``finetune(name, options, texts, folder, config) -> dict``: train a copy of
model ``name`` (backend ``options``) on ``texts`` as ``config`` says and write to ``folder`` a
model folder its own backend factory loads by path; return what to record (losses, method...).
The core writes into a hidden temporary folder beside the target and renames it only when the
plugin returned: an interrupted or failed fine-tune never leaves a folder that loads.
"""

import dataclasses
import errno
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.defaults import FINETUNE_EXAMPLE
from mia_core.errors import MiaError
from mia_core.formats.names import PARTIAL_SUFFIX
from mia_core.formats.safeio import process_alive

METHODS = ("auto", "full", "lora")


@dataclass(frozen=True)
class FinetuneConfig:
    """What the plugin trains with. ``method`` ``auto`` is full fine-tuning up to
    ``full_max_params`` parameters and LoRA above."""

    epochs: int = 3
    learning_rate: float = 0.0  # 0: the plugin's default for the method
    batch_size: int = 8
    max_tokens: int = 64
    method: str = "auto"
    seed: int = 0
    lora_rank: int = 16
    full_max_params: int = 1_000_000_000
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finetuner_for(model: str) -> Callable[..., dict]:
    """The ``finetune`` callable registered with ``model``'s backend, or a one-line refusal."""
    from mia_core import registry

    lowered = model.lower()
    if lowered.endswith(".gguf"):
        raise MiaError(f"{model!r} is a GGUF file: quantized GGUF weights cannot be fine-tuned; give the model's "
                       "Hugging Face folder or a registered name (mia models)")
    entry = registry.backends.get(model)
    if entry.finetune is None:
        why = ("an API model is served remotely" if "generate_text" in (entry.capabilities or ())
               else "it registers no fine-tuning")
        raise MiaError(f"model {model!r} cannot be fine-tuned: plugin {entry.plugin!r} offers no training for it "
                       f"({why}); use a local Hugging Face model, e.g. {FINETUNE_EXAMPLE}")
    return dataclasses.replace(entry, factory=entry.finetune).load_factory()


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove temporary model folders left by killed runs (their process is gone)."""
    removed = []
    for path in folder.glob(f".*{PARTIAL_SUFFIX}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def require_free_space(folder: Path, needed_bytes: int) -> None:
    """Refuse to start a fine-tune whose model cannot be written (checked before training)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise MiaError(f"not enough disk space for the fine-tuned model in {folder}: it needs about "
                       f"{needed_bytes / 1e9:.2f} GB, {free / 1e9:.2f} GB are free (use --out on another disk)")


def finetune_into(model: str, options: dict[str, Any], texts: Sequence[str], target: Path,
                  config: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune ``model`` on ``texts`` into the new folder ``target`` (which must not exist)."""
    from mia_core import registry

    finetune = finetuner_for(model)
    options = registry.backends.check_options(model, options)  # typed, as the backend's factory gets them
    if target.exists():
        raise MiaError(f"{target} already exists: refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target.parent)
    tmp = target.with_name(f".{target.name}{PARTIAL_SUFFIX}-{os.getpid()}")
    tmp.mkdir()
    try:
        info = finetune(model, dict(options), list(texts), tmp, config)
        os.rename(tmp, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise MiaError(f"no space left on the device while writing the fine-tuned model to {target.parent}: "
                           "nothing was kept (free some space or use --out on another disk)") from exc
        raise MiaError(f"cannot write the fine-tuned model to {target}: {exc}") from exc
    except MiaError:
        raise
    except Exception as exc:  # a plugin's failure: one line, and nothing kept
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MiaError(f"fine-tuning {model!r} failed: {type(exc).__name__}: {first}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; removed after any failure
    return dict(info or {})
