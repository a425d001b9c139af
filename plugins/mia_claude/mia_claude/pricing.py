"""Prices and cost arithmetic for the Claude API.

Prices are USD per million tokens (MTok), standard tier, from Anthropic's model pages
(checked 2026-11). The Message Batches API costs half. Haiku 5.5 charges more for
prompts over 100k tokens; continuation prompts are far shorter, so that tier is not
modelled. Override with ``--model-option price_in=…,price_out=…`` when prices change.
"""

import math
from dataclasses import dataclass

BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class Price:
    input: float   # USD per MTok
    output: float  # USD per MTok


# Model-id prefix -> price; the longest matching prefix wins (dated ids share their alias' price).
PRICES: dict[str, Price] = {
    "claude-haiku-5-5": Price(0.10, 0.50),
    "claude-sonnet-5-5": Price(2.00, 10.00),
    "claude-opus-5-5": Price(4.00, 20.00),
    "claude-fable-5-1": Price(10.00, 50.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-haiku": Price(0.25, 1.25),
}

# Heuristic for estimates made before sending anything (no count_tokens call, so that
# --dry-run and the cost check need no network): English prose is ~3.5-4 characters per
# Claude token and the newer tokenizers use ~30% more tokens, so 3 errs on the high side.
CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD_TOKENS = 8


def lookup_price(model: str) -> Price | None:
    """The table's price for ``model`` (longest matching prefix), or None if unknown."""
    best = None
    for prefix, price in PRICES.items():
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, price)
    return best[1] if best else None


def cost_usd(price: Price, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
    """What ``input_tokens`` in and ``output_tokens`` out cost."""
    factor = BATCH_DISCOUNT if batch else 1.0
    return factor * (input_tokens * price.input + output_tokens * price.output) / 1e6


def estimate_input_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """A deliberately high estimate of the tokens a user message of ``text`` costs."""
    return math.ceil(len(text) / chars_per_token) + MESSAGE_OVERHEAD_TOKENS
