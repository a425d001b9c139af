"""``--model-option`` parsing for the Claude backend, and where the API key comes from.

The key is read from ``ANTHROPIC_API_KEY`` or ``key_file=PATH``; it is never accepted
on the command line (it would end up in shell history and in the run's recorded
options) and never written anywhere by mia.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mia_claude.pricing import Price, lookup_price
from mia_claude.prompting import DEFAULT_TEMPLATE
from mia_core import Option
from mia_core.errors import MiaError

DEFAULT_MODEL = "claude-haiku-5-5"
# Families with adaptive thinking: thinking tokens are billed as output and count
# against max_tokens, so continuations ask for the lowest effort unless told otherwise.
ADAPTIVE_PREFIXES = ("claude-haiku-5", "claude-sonnet-5", "claude-opus-5", "claude-fable-5")

# Declared once: the core checks and types them (and refuses a key typed as an option);
# `mia models --options claude-API` prints them.
OPTIONS = (
    Option("model", str, None, "model id (auto: the id after 'claude:', else claude-haiku-5-5)"),
    Option("key_file", str, None, "file holding the API key (auto: $ANTHROPIC_API_KEY)"),
    Option("base_url", str, None, "API endpoint (auto: $ANTHROPIC_BASE_URL or Anthropic's)"),
    Option("concurrency", int, 8, "parallel Messages requests (at least 1)"),
    Option("timeout", float, 60.0, "seconds per request attempt"),
    Option("max_retries", int, 5, "retries of 429/529/5xx/timeouts, exponential backoff honouring retry-after"),
    Option("price_in", float, None, "USD per million input tokens (auto: the plugin's price table)"),
    Option("price_out", float, None, "USD per million output tokens (auto: the plugin's price table)"),
    Option("prompt", str, None, "continuation prompt; {prefix} marks where the prefix goes"),
    Option("prompt_file", str, None, "file holding the continuation prompt"),
    Option("system", str, None, "system prompt (auto: none)"),
    Option("max_tokens", int, None, "output token limit per request (auto: ceil(1.5 x max_length) + 16)"),
    Option("effort", str, None, "output_config.effort (auto: low for adaptive-thinking models, else not sent)"),
    Option("send_sampling", bool, False, "send temperature/top_k/top_p (recent models reject them)"),
    Option("poll_interval", float, 30.0, "seconds between Batches API status checks"),
    Option("batch_max_requests", int, 10000, "requests per Message Batch (API limit 100000)"),
    Option("chars_per_token", float, 3.0, "characters per token for cost estimates"),
)


@dataclass
class ClaudeConfig:
    model: str
    api_key: str = field(repr=False)  # never printed, even by a debug print of the config
    base_url: str | None
    concurrency: int
    timeout: float
    max_retries: int
    price: Price
    template: str
    system: str | None
    max_tokens: int | None
    effort: str | None
    send_sampling: bool
    poll_interval: float
    batch_max_requests: int
    chars_per_token: float


def _number(options: dict[str, Any], key: str, default: float, minimum: float = 0) -> Any:
    """A typed option's value (the core converted it), or ``default``, at least ``minimum``."""
    value = options.get(key)
    if value is None:
        return default
    if value < minimum:
        raise MiaError(f"model option {key}={value!r}: must be at least {minimum}")
    return value


def read_api_key(options: dict[str, Any]) -> str:
    """The API key, from ``key_file`` or ``ANTHROPIC_API_KEY``; a clear error when absent."""
    key_file = options.get("key_file")
    if key_file:
        path = Path(str(key_file)).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MiaError(f"cannot read the API key file {path}: {exc.strerror}") from None
        if not key:
            raise MiaError(f"the API key file {path} is empty")
        return key
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        raise MiaError("the Claude backend needs an API key: set ANTHROPIC_API_KEY or pass "
                       "--model-option key_file=PATH (a file holding the key)")
    return key


def parse_config(name: str, options: dict[str, Any]) -> ClaudeConfig:
    """Validate the options for backend ``name``; reads the key last, after everything else."""
    model = options.get("model") or (name.split(":", 1)[1] if ":" in name else DEFAULT_MODEL)
    price = lookup_price(model)
    price_in = _number(options, "price_in", price.input if price else -1)
    price_out = _number(options, "price_out", price.output if price else -1)
    if price_in < 0 or price_out < 0:
        raise MiaError(f"no price is known for model {model!r}: pass --model-option price_in=USD "
                       "--model-option price_out=USD (per million tokens) so the cost can be capped")
    template = options.get("prompt") or DEFAULT_TEMPLATE
    if options.get("prompt_file"):
        try:
            template = Path(str(options["prompt_file"])).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise MiaError(f"cannot read the prompt file {options['prompt_file']}: {exc.strerror}") from None
    if "{prefix}" not in template:
        raise MiaError("the continuation prompt must contain {prefix} (where the prefix text goes)")
    effort = options.get("effort")
    if effort is None and model.startswith(ADAPTIVE_PREFIXES):
        effort = "low"
    return ClaudeConfig(
        model=model,
        base_url=options.get("base_url") or None,
        concurrency=_number(options, "concurrency", 8, 1),
        timeout=_number(options, "timeout", 60.0, 0.001),
        max_retries=_number(options, "max_retries", 5, 0),
        price=Price(price_in, price_out),
        template=template,
        system=options.get("system") or None,
        max_tokens=_number(options, "max_tokens", None, 1),
        effort=effort or None,
        send_sampling=bool(options.get("send_sampling", False)),
        poll_interval=_number(options, "poll_interval", 30.0, 0.0),
        batch_max_requests=_number(options, "batch_max_requests", 10000, 1),
        chars_per_token=_number(options, "chars_per_token", 3.0, 0.1),
        api_key=read_api_key(options),
    )
