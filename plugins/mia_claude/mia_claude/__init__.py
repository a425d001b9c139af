"""mia plugin: the Claude API backend (``claude-API`` and ``claude:<model-id>``).

Registering imports nothing heavy: the factory is a lazy ``"module:attr"`` string and
the ``anthropic`` SDK is imported only when a backend is built.
"""

from mia_claude.config import OPTIONS
from mia_core import Option, hookimpl


def _is_claude_name(name: str) -> bool:
    return name.lower().startswith("claude:") and len(name) > len("claude:")


@hookimpl
def mia_register_backends(register) -> None:
    register(
        "claude-API",
        "mia_claude.backend:create_backend",
        description="Anthropic Claude over the API (text in/out; costs money). "
                    "claude:<model-id> picks the model; default claude-haiku-5-5.",
        match=_is_claude_name,
        capabilities=("generate_text", "cost", "batch"),
        options=OPTIONS,
    )


@hookimpl
def mia_register_tokenizers(register) -> None:
    register(
        "claude-API",
        "mia_claude.tokenizer:create_tokenizer",
        description="Stand-in for Claude's unpublished tokenizer (gemma-3-270m's), for mia prefix --model claude-API.",
        match=_is_claude_name,
        # The model's options are accepted (commands may pass them to both) and ignored.
        options=(Option("tokenizer", str, None, "the stand-in's model name (auto: gemma-3-270m)"),
                 *(o for o in OPTIONS if o.name != "tokenizer")),
    )
