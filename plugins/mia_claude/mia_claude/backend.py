"""The Claude backend: text in, text out, over the Messages API (and the Batches API).

Retries are the SDK's own (``max_retries``): exponential backoff from 0.5 s capped at
8 s with jitter, honouring ``retry-after``/``retry-after-ms``, for 408, 409, 429, 5xx
(529 "overloaded" included), connection errors and timeouts. Any other failure, or a
retryable one that outlasts the retries, fails only that item with its reason.
"""

import copy
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mia_claude.config import ClaudeConfig, parse_config
from mia_claude.pricing import cost_usd, estimate_input_tokens
from mia_claude.prompting import build_prompt, join_continuation, strip_preamble
from mia_core.errors import MiaError
from mia_core.redact import redact_text
from mia_core.types import Sampling, TextResult


def create_backend(name: str, options: dict[str, Any]) -> "ClaudeBackend":
    """Registry factory: validates options and the key before any work starts."""
    return ClaudeBackend(name, parse_config(name, options))


class ClaudeBackend:
    """A text-in/text-out backend (capabilities ``generate_text``, ``cost``, ``batch``: see
    ``mia_core.types``); prefixes arrive decoded with the map's tokenizer."""

    tokenizer = None
    #: True in the copy ``with_verbatim_prompts()`` returns, for prompts that are whole user messages
    #: (``mia prompt --strategy divergence``): no continuation template around them, the answer kept as
    #: received, max_tokens = max_length.
    verbatim_prompt = False

    def __init__(self, name: str, config: ClaudeConfig) -> None:
        self.name = name
        self.config = config
        self._client: Any = None
        self._key_accepted = False  # set by the first request the API answers with success
        self._refusal: str | None = None  # the first 401/403 of the run, as the line that stops it
        self._refusal_lock = threading.Lock()

    def with_verbatim_prompts(self) -> "ClaudeBackend":
        """This backend sending each prompt as the whole user message (``mia_core.types.VerbatimPrompts``):
        a copy sharing the client, so the object the caller holds keeps its continuation template."""
        clone = copy.copy(self)
        clone.verbatim_prompt = True
        return clone

    # ---- what the core records and shows ------------------------------------------------
    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            "backend": "claude", "model": c.model, "base_url": c.base_url,
            "prompt": "(each prompt sent verbatim as the user message)" if self.verbatim_prompt else c.template,
            "system": c.system, "max_tokens": c.max_tokens, "effort": c.effort,
            "send_sampling": c.send_sampling, "price_in_per_mtok": c.price.input,
            "price_out_per_mtok": c.price.output, "concurrency": c.concurrency,
            "timeout_s": c.timeout, "max_retries": c.max_retries,
        }

    def max_tokens_for(self, max_new_tokens: int) -> int:
        """Output tokens to allow: Claude's tokens are not the map's, and a preamble may come first."""
        if self.config.max_tokens:
            return self.config.max_tokens
        if self.verbatim_prompt:  # nothing to strip: max_length is counted in Claude's own tokens
            return max_new_tokens
        return math.ceil(1.5 * max_new_tokens) + 16

    def render_request(self, text: str, max_new_tokens: int, sampling: Sampling | None = None) -> dict[str, Any]:
        """The Messages API request body for one prefix text (what --dry-run prints)."""
        c = self.config
        body: dict[str, Any] = {
            "model": c.model,
            "max_tokens": self.max_tokens_for(max_new_tokens),
            "messages": [{"role": "user", "content": self.user_message(text)}],
        }
        if c.system:
            body["system"] = c.system
        if c.effort:
            body["output_config"] = {"effort": c.effort}
        if c.send_sampling and sampling is not None:
            body["temperature"] = sampling.temperature
            if sampling.top_k:
                body["top_k"] = sampling.top_k
            if sampling.top_p is not None:
                body["top_p"] = sampling.top_p
        return body

    def user_message(self, text: str) -> str:
        """The user turn for one prompt: the continuation template around a prefix, or the prompt itself."""
        return text if self.verbatim_prompt else build_prompt(self.config.template, text)

    def estimate_cost(self, texts: Sequence[str], max_new_tokens: int, batch: bool = False) -> float:
        """An upper-leaning USD estimate: input chars / chars_per_token, output = max_tokens each."""
        c = self.config
        tokens_in = sum(estimate_input_tokens(self.user_message(t) + (c.system or ""),
                                              c.chars_per_token) for t in texts)
        tokens_out = len(texts) * self.max_tokens_for(max_new_tokens)
        return cost_usd(c.price, tokens_in, tokens_out, batch=batch)

    # ---- the Messages API ---------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import anthropic  # lazy: mia --help must not import it

            from mia_claude.keygate import KeyGate

            c = self.config
            self._client = anthropic.Anthropic(api_key=c.api_key, base_url=c.base_url, timeout=c.timeout,
                                               max_retries=c.max_retries, middleware=[KeyGate()])
        return self._client

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int,
                      sampling: Sampling) -> list[TextResult]:
        """One answer per prefix text, ``concurrency`` requests at a time, in input order.

        Until the API has answered one request with success, requests go one at a time, so a bad key
        stops the run at its first 401/403 whatever failed before it; later, the key gate
        (``keygate.py``) sends nothing after a 401/403 and the run stops once the batch's requests in
        flight have returned: at once when none of them was answered, else at the next call, so that
        the answers already paid for are kept (the others are failed rows, for ``--retry-failed``)."""
        self._stop_if_refused()
        bodies = [self.render_request(t, max_new_tokens, sampling) for t in prompts]
        results: list[TextResult] = []
        while bodies and not self._key_accepted:
            results.append(self._one(prompts[0], bodies[0]))
            prompts, bodies = prompts[1:], bodies[1:]
            self._stop_if_refused()
        if not bodies:
            return results
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(bodies)))
        try:
            futures = [pool.submit(self._one, p, b) for p, b in zip(prompts, bodies, strict=True)]
            results += [f.result() for f in futures]
        finally:
            # On Ctrl-C, drop what has not started instead of waiting for the whole batch.
            pool.shutdown(wait=False, cancel_futures=True)
        if not any(r.text and not r.error for r in results):
            self._stop_if_refused()
        return results

    def _stop_if_refused(self) -> None:
        if self._refusal is not None:
            raise MiaError(self._refusal)

    def _one(self, prefix_text: str, body: dict[str, Any]) -> TextResult:
        try:
            message = self._send(body)
        except Exception as exc:  # noqa: BLE001 - any failure fails this item only, with its reason
            self._note_refusal(exc)
            return TextResult(text="", error=self.describe_error(exc))
        self._key_accepted = True
        try:
            return self.to_result(prefix_text, message, batch=False)
        except Exception as exc:  # noqa: BLE001
            return TextResult(text="", error=self.describe_error(exc))

    def _note_refusal(self, exc: BaseException) -> None:
        """A rejected key (401) or a key without access (403) fails every request alike: the first one
        becomes the line that stops the run (the key gate has already stopped all sending)."""
        import anthropic

        if isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)):
            with self._refusal_lock:
                self._refusal = self._refusal or (
                    f"the Anthropic API refused the key: {self.describe_error(exc)}; set a valid "
                    "ANTHROPIC_API_KEY (or key_file=...) and run again")

    def _send(self, body: dict[str, Any]) -> Any:
        standard = {k: v for k, v in body.items() if k not in ("temperature", "top_k", "top_p")}
        extra = {k: v for k, v in body.items() if k in ("temperature", "top_k", "top_p")}
        # Sampling parameters go as extra_body: this SDK no longer types them (new models reject them).
        return self.client.messages.create(**standard, extra_body=extra or None)

    def to_result(self, prefix_text: str, message: Any, batch: bool) -> TextResult:
        """A TextResult from a Message (Messages API response or a batch's succeeded result)."""
        content, usage = getattr(message, "content", None), getattr(message, "usage", None)
        if not isinstance(content, list) or usage is None:
            raise ValueError("malformed response body: a message without content or usage")
        raw = "".join(getattr(b, "text", "") for b in content if getattr(b, "type", "") == "text")
        tokens_in = int(usage.input_tokens or 0) + int(getattr(usage, "cache_creation_input_tokens", 0) or 0) \
            + int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        tokens_out = int(usage.output_tokens or 0)
        text = raw if self.verbatim_prompt else join_continuation(prefix_text, strip_preamble(raw, prefix_text))
        return TextResult(
            text=text, stop_reason=message.stop_reason, raw=raw,
            usage={"input_tokens": tokens_in, "output_tokens": tokens_out,
                   "cost_usd": cost_usd(self.config.price, tokens_in, tokens_out, batch=batch)},
        )

    def describe_error(self, exc: BaseException) -> str:
        """One line saying why a request failed, with the API key scrubbed out."""
        import json

        import anthropic

        retries = self.config.max_retries
        if isinstance(exc, anthropic.APITimeoutError):
            reason = f"timeout ({self.config.timeout:g} s per attempt, {retries} retries)"
        elif isinstance(exc, anthropic.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            detail = f"{error.get('type', 'error')}: {error.get('message', '')}" if error else exc.message
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            retried = f" (after {retries} retries)" if retryable else ""
            reason = f"HTTP {exc.status_code} {detail}{retried}"
        elif isinstance(exc, anthropic.APIConnectionError):
            reason = f"connection error ({retries} retries): {exc}"
        elif isinstance(exc, (json.JSONDecodeError, anthropic.APIResponseValidationError)):
            reason = f"malformed response body: {exc}"
        elif isinstance(exc, ValueError) and str(exc).startswith("malformed"):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return self.scrub(" ".join(reason.split())[:500])

    def scrub(self, text: str) -> str:
        """``text`` without the API key (whatever it looks like) or any other secret (``mia_core.redact``)."""
        key = self.config.api_key
        return redact_text(text.replace(key, "[redacted]") if key else text)

    # ---- the Message Batches API --------------------------------------------------------
    def run_batch(self, items: list[tuple[int, str]], max_new_tokens: int, sampling: Sampling,
                  state: dict[str, Any], save_state: Callable[[dict[str, Any]], None],
                  on_results: Callable[[list[tuple[int, TextResult]]], None], quiet: bool = False) -> None:
        """Submit ``items`` (row, prefix text) as Message Batches at half price; see ``batch.py``."""
        from mia_claude.batch import run_batch

        run_batch(self, items, max_new_tokens, sampling, state, save_state, on_results, quiet=quiet)
