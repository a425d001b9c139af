"""Which execution path runs a Mamba model: mamba-ssm's CUDA kernels or transformers' torch code.

``kernel=auto`` (default) takes mamba-ssm when it imports and a CUDA device is used, else
the torch path; ``kernel=cuda`` insists on mamba-ssm (clear error saying what is missing);
``kernel=torch`` always uses transformers' ``MambaForCausalLM``. Released mamba-ssm neither
installs nor imports without CUDA, so nothing here imports it unless asked to.
"""

from mia_core.errors import MiaError

KERNELS = ("auto", "cuda", "torch")
INSTALL_HINT = "pip install 'mia-mamba[cuda]' (mamba-ssm and causal-conv1d; they need CUDA and a matching torch)"


def mamba_ssm_import_error() -> str | None:
    """None when mamba-ssm's model class imports, else why not (one line)."""
    try:
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel  # noqa: F401
    except Exception as exc:  # ImportError, or OSError/RuntimeError from its compiled extensions
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def select_kernel(requested: str, device: str | None = None) -> str:
    """``"cuda"`` (mamba-ssm) or ``"torch"`` (transformers) for ``kernel=requested``.

    ``device`` is the user's ``device`` option (None/"auto" for automatic).
    """
    kernel = (requested or "auto").strip().lower()
    if kernel not in KERNELS:
        raise MiaError(f"kernel={requested!r}: expected one of {', '.join(KERNELS)}")
    if kernel == "torch":
        return "torch"
    wants_cpu = device is not None and device.lower() not in ("auto", "cuda") and not device.lower().startswith("cuda:")
    if kernel == "cuda":
        if wants_cpu:
            raise MiaError(f"kernel=cuda runs on a CUDA device, not device={device}; use kernel=torch there")
        if not cuda_available():
            raise MiaError(
                "kernel=cuda needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False); "
                "install a CUDA build of torch on a GPU machine, or use kernel=torch"
            )
        problem = mamba_ssm_import_error()
        if problem:
            raise MiaError(f"kernel=cuda needs mamba-ssm, which does not import ({problem}): {INSTALL_HINT}")
        return "cuda"
    if wants_cpu or not cuda_available() or mamba_ssm_import_error():
        return "torch"
    return "cuda"
