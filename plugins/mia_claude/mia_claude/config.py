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
from mia_core.errors import MiaError

DEFAULT_MODEL = "claude-haiku-5-5"
# Families with adaptive thinking: thinking tokens are billed as output and count
# against max_tokens, so continuations ask for the lowest effort unless told otherwise.
ADAPTIVE_PREFIXES = ("claude-haiku-5", "claude-sonnet-5", "claude-opus-5", "claude-fable-5")

OPTIONS = {
    "model": "model id (default: the id after 'claude:', else claude-haiku-5-5)",
    "key_file": "file holding the API key (default: $ANTHROPIC_API_KEY)",
    "base_url": "API endpoint (default: $ANTHROPIC_BASE_URL or Anthropic's)",
    "concurrency": "parallel Messages requests (default 8)",
    "timeout": "seconds per request attempt (default 60)",
    "max_retries": "retries of 429/529/5xx/timeouts, exponential backoff honouring retry-after (default 5)",
    "price_in": "USD per million input tokens (default: the plugin's price table)",
    "price_out": "USD per million output tokens (default: the plugin's price table)",
    "prompt": "continuation prompt; {prefix} marks where the prefix goes",
    "prompt_file": "file holding the continuation prompt",
    "system": "system prompt (default: none)",
    "max_tokens": "output token limit per request (default: ceil(1.5 x max_length) + 16)",
    "effort": "output_config.effort (default: low for adaptive-thinking models, else not sent)",
    "send_sampling": "send temperature/top_k/top_p (default no: recent models reject them)",
    "poll_interval": "seconds between Batches API status checks (default 30)",
    "batch_max_requests": "requests per Message Batch (default 10000, API limit 100000)",
    "chars_per_token": "characters per token for cost estimates (default 3.0)",
}


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


def _number(options: dict[str, Any], key: str, default: float, kind: type = float,
            minimum: float = 0) -> Any:
    raw = options.get(key)
    if raw is None or raw == "":
        return kind(default)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise MiaError(f"model option {key}={raw!r}: expected a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise MiaError(f"model option {key}={raw!r}: must be at least {minimum}")
    return value


def _flag(options: dict[str, Any], key: str) -> bool:
    raw = str(options.get(key, "no")).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise MiaError(f"model option {key}={raw!r}: expected yes or no")


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
    for secret in ("api_key", "key", "anthropic_api_key"):
        if secret in options:
            raise MiaError(f"model option {secret}=… is refused: an API key on the command line leaks "
                           "into shell history; use ANTHROPIC_API_KEY or key_file=PATH")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise MiaError(f"unknown model option(s) for {name}: {', '.join(unknown)}. "
                       f"Known: {', '.join(OPTIONS)}")
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
    max_tokens = options.get("max_tokens")
    effort = options.get("effort")
    if effort is None and model.startswith(ADAPTIVE_PREFIXES):
        effort = "low"
    return ClaudeConfig(
        model=model,
        base_url=options.get("base_url") or None,
        concurrency=_number(options, "concurrency", 8, int, 1),
        timeout=_number(options, "timeout", 60.0, float, 0.001),
        max_retries=_number(options, "max_retries", 5, int, 0),
        price=Price(price_in, price_out),
        template=template,
        system=options.get("system") or None,
        max_tokens=_number(options, "max_tokens", 0, int, 1) if max_tokens not in (None, "") else None,
        effort=effort or None,
        send_sampling=_flag(options, "send_sampling"),
        poll_interval=_number(options, "poll_interval", 30.0, float, 0.0),
        batch_max_requests=_number(options, "batch_max_requests", 10000, int, 1),
        chars_per_token=_number(options, "chars_per_token", 3.0, float, 0.1),
        api_key=read_api_key(options),
    )
