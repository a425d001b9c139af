"""The model names mia-mamba answers to, and how each resolves to a checkpoint folder.

- ``mamba-3b``: ``state-spaces/mamba-2.8b-slimpj`` (mamba_ssm layout; trained on SlimPajama,
  a public corpus, which is what makes membership ground truth possible);
- ``mamba-2.8b-hf``: ``state-spaces/mamba-2.8b-hf`` (transformers layout);
- ``mamba:ID``: any hub id or local folder holding a Mamba checkpoint;
- a local folder whose ``config.json`` describes a Mamba model, in either layout.

Nothing here imports torch: the match predicate runs while the registry looks a name up.
"""

import os
from pathlib import Path

from mia_core.errors import MiaError
from mia_mamba.layout import looks_like_mamba, read_config

PREFIX = "mamba:"
KNOWN = {
    "mamba-3b": "state-spaces/mamba-2.8b-slimpj",
    "mamba-2.8b-hf": "state-spaces/mamba-2.8b-hf",
}
# Mamba checkpoints in the mamba_ssm layout ship no tokenizer: they were trained with this one.
DEFAULT_TOKENIZER = "EleutherAI/gpt-neox-20b"


def is_mamba_folder(name: str) -> bool:
    """Match predicate: ``mamba:...`` or a local folder whose config says Mamba."""
    if name.lower().startswith(PREFIX):
        return True
    path = Path(os.path.expanduser(name))
    if not path.is_dir():
        return False
    config = read_config(path)
    return config is not None and looks_like_mamba(config)


def checkpoint_ref(name: str) -> str:
    """The hub id or local path behind a user-typed name."""
    key = name.lower()
    if key in KNOWN:
        return KNOWN[key]
    if key.startswith(PREFIX):
        ref = name[len(PREFIX):].strip()
        if not ref:
            raise MiaError(f"{name!r}: give a hub id or a folder after 'mamba:', e.g. mamba:state-spaces/mamba-130m")
        return ref
    return name


def resolve_folder(ref: str, what: str = "checkpoint", local_only: bool = False) -> Path:
    """A local folder for a hub id or path: the path itself, else the Hugging Face cache
    (downloading only when ``HF_HUB_OFFLINE=0``, as mia-hf does). Fails saying how to make
    the checkpoint available. ``local_only`` never downloads (a tokenizer lookup must not
    fetch gigabytes of weights just to see whether the checkpoint ships a tokenizer)."""
    path = Path(os.path.expanduser(ref))
    if path.is_dir():
        return path
    if path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") != 1:
        raise MiaError(f"{what} {ref!r}: no such folder (and not a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download
    from mia_hf.sources import local_files_only, offline_message

    try:
        return Path(snapshot_download(ref, local_files_only=local_only or local_files_only()))
    except Exception as exc:  # huggingface_hub raises several types for "not in the cache"
        raise MiaError(offline_message(ref)) from exc
