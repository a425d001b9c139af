"""A tokenizer for maps made with ``mia prefix --model claude-API``.

Claude's tokenizer is not public, so such maps are tokenized with a stand-in: by default
gemma-3-270m's (a modern 262k-token SentencePiece vocabulary, from mia-hf). The map
records the stand-in's own name, so prompting Claude works with any map whatever
tokenizer made it: prefixes are sent as text and the answers re-tokenized with it.
"""

from typing import Any

from mia_core import registry
from mia_core.errors import MiaError

STAND_IN = "gemma-3-270m"


def create_tokenizer(name: str, options: dict[str, Any]) -> Any:
    stand_in = str(options.get("tokenizer") or STAND_IN)
    if registry.tokenizers.find(stand_in) is None:
        raise MiaError(f"Claude's tokenizer is not public: maps for {name} are tokenized with {stand_in!r}, "
                       "which no installed plugin provides (pip install -e plugins/mia_hf), or make the map "
                       "with any other model: mia prompt --model claude-API works with every map")
    return registry.tokenizers.create(stand_in)  # the model's options are not the stand-in's
