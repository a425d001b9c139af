"""A fake Anthropic API on 127.0.0.1 for the Claude backend's tests.

A real threaded HTTP server speaking enough of the Messages, count_tokens and Message
Batches endpoints for the official ``anthropic`` SDK pointed at it with ``base_url``.
Nothing here calls the real API.

Behaviour is scripted per prefix: ``server.script("MARKER", ["429:1", "ok"])`` makes the
next requests whose prompt contains MARKER answer 429 with ``retry-after: 1``, then
succeed. Steps: ``ok``, ``429[:retry_after]``, ``529``, ``500``, ``400``, ``echo_key``
(a 401 repeating the key), ``401`` (a plain authentication_error), ``malformed`` (a 200 whose
body is not JSON), ``badshape``
(JSON, but no content or usage), ``refusal`` (stop_reason "refusal", no text), ``empty``
(an answer with no text), ``403`` (permission_error), ``slow:SECONDS`` (answer after a
delay); in a Message Batch's results, ``batch_error`` makes the request errored. Once the
list is used up the marker's requests succeed. ``delay`` slows every
answer down; ``replies[MARKER] = TEXT`` makes TEXT the whole answer to prompts containing
MARKER; the marker "" matches every prompt. With ``valid_key`` set, any other key is answered
401 (a bad key).
"""

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREAMBLE = "Here is the continuation:\n\n"


def continuation_for(prefix: str) -> str:
    """The fake model's answer to a prefix: its last four words reversed (deterministic)."""
    return " ".join(reversed(prefix.split()[-4:]))


def prefix_of(prompt: str) -> str:
    """The prefix inside a prompt built from the default template (``<text>…</text>``)."""
    found = re.search(r"<text>\n(.*)\n</text>", prompt, re.S)
    return found.group(1) if found else prompt


class FakeAnthropic:
    """Start with ``with FakeAnthropic() as server:``; ``server.url`` is the base_url."""

    def __init__(self, max_requests: int = 2000, delay: float = 0.0, polls_in_progress: int = 2) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.polls_in_progress = polls_in_progress  # batch GETs answered "in_progress" before "ended"
        self.max_requests = max_requests
        self.hold_batches = threading.Event()  # while set, batches stay in_progress
        self.valid_key: str | None = None  # when set, requests with another key get a 401
        self.replies: dict[str, str] = {}  # marker -> the whole answer to prompts containing it (no preamble)
        self._scripts: dict[str, list[str]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.timeout = 0.1
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "FakeAnthropic":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.httpd.server_close()

    def _serve(self) -> None:
        # Bounded: a runaway client cannot keep a test (or CI) alive forever.
        while not self._stop.is_set() and len(self.requests) < self.max_requests:
            self.httpd.handle_request()

    # ---- scripting and inspection ----------------------------------------------------
    def script(self, marker: str, steps: list[str]) -> None:
        with self._lock:
            self._scripts[marker] = list(steps)

    def next_step(self, prompt: str) -> str:
        with self._lock:
            for marker, steps in self._scripts.items():
                if marker in prompt and steps:
                    return steps.pop(0)
        return "ok"

    @staticmethod
    def api_key_of(headers: Any) -> str | None:
        """The key a request carried (this SDK sends ``Authorization: Bearer``, older ones ``x-api-key``;
        a base_url with ``user:password@`` makes httpx send those as ``Basic`` credentials instead,
        as to a proxy in front of the API, which this fake accepts as the key)."""
        authorization = headers.get("Authorization") or headers.get("authorization") or ""
        if authorization.startswith("Basic "):
            return base64.b64decode(authorization[6:]).decode(errors="replace")
        return headers.get("x-api-key") or (authorization[7:] if authorization.startswith("Bearer ") else None)

    def count(self, method: str, path_prefix: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix))

    def message_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST" and r["path"] == "/v1/messages"]

    # ---- answers -----------------------------------------------------------------------
    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][0]["content"]
        prompt = prompt if isinstance(prompt, str) else "".join(b.get("text", "") for b in prompt)
        reply = next((text for marker, text in self.replies.items() if marker in prompt), None)
        text = reply if reply is not None else PREAMBLE + continuation_for(prefix_of(prompt))
        return {
            "id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4 + 1, "output_tokens": len(text) // 4 + 1},
        }

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            batch_id = f"msgbatch_{len(self._batches) + 1:04d}"
            self._batches[batch_id] = {"requests": body["requests"], "polls": 0}
        return self.batch_json(batch_id, count_poll=False)

    def batch_json(self, batch_id: str, count_poll: bool = True) -> dict[str, Any] | None:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return None
            if count_poll:
                batch["polls"] += 1
            ended = batch["polls"] > self.polls_in_progress and not self.hold_batches.is_set()
        n = len(batch["requests"])
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0,
                               "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-11-27T00:00:00Z", "expires_at": "2026-11-28T00:00:00Z",
            "ended_at": "2026-11-27T00:01:00Z" if ended else None, "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def batch_results(self, batch_id: str) -> str:
        lines = []
        for request in reversed(self._batches[batch_id]["requests"]):  # out of order on purpose
            prompt = request["params"]["messages"][0]["content"]
            if "BATCHERR" in prompt or self.next_step(json.dumps(request["params"]["messages"])) == "batch_error":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "prompt is too long"}}}
            else:
                result = {"type": "succeeded", "message": self.message(request["params"])}
            lines.append(json.dumps({"custom_id": request["custom_id"], "result": result}))
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _record(self, body: Any) -> None:
        with self.fake._lock:
            self.fake.requests.append({"method": self.command, "path": self.path.split("?")[0],
                                       "headers": dict(self.headers), "body": body, "time": time.monotonic()})

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        self._record(body)
        key = self.fake.api_key_of(self.headers)
        if not key:
            return self._error(401, "authentication_error", "an API key is required")
        if self.fake.valid_key is not None and key != self.fake.valid_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if body is None:
            return self._error(400, "invalid_request_error", "body is not JSON")
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            return self._send(200, {"input_tokens": len(json.dumps(body["messages"])) // 4})
        if path == "/v1/messages/batches":
            return self._send(200, self.fake.create_batch(body))
        if path != "/v1/messages":
            return self._error(404, "not_found_error", f"no route {path}")
        if self.fake.delay:
            time.sleep(self.fake.delay)
        step = self.fake.next_step(json.dumps(body["messages"]))
        kind, _, arg = step.partition(":")
        if kind == "429":
            return self._error(429, "rate_limit_error", "rate limited", {"retry-after": arg or "1"})
        if kind == "529":
            return self._error(529, "overloaded_error", "Overloaded")
        if kind == "500":
            return self._error(500, "api_error", "Internal server error")
        if kind == "400":
            return self._error(400, "invalid_request_error", "prompt rejected")
        if kind == "401":
            return self._error(401, "authentication_error", "invalid x-api-key")
        if kind == "403":
            return self._error(403, "permission_error", "this key has no access to the model")
        if kind in ("refusal", "empty"):
            message = self.fake.message(body)
            message["content"] = [] if kind == "refusal" else [{"type": "text", "text": ""}]
            message["stop_reason"] = "refusal" if kind == "refusal" else "end_turn"
            return self._send(200, message)
        if kind == "echo_key":
            return self._error(401, "authentication_error", f"invalid key {self.fake.api_key_of(self.headers)}")
        if kind == "malformed":
            return self._send(200, b'{"id": "msg_x", "content": [ this is not json')
        if kind == "badshape":
            return self._send(200, {"id": "msg_x", "type": "message"})
        if kind == "slow":
            time.sleep(float(arg or 2))
        return self._send(200, self.fake.message(body))

    def do_GET(self) -> None:
        self._record(None)
        if not self.fake.api_key_of(self.headers):
            return self._error(401, "authentication_error", "an API key is required")
        path = self.path.split("?")[0]
        found = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if not found:
            return self._error(404, "not_found_error", f"no route {path}")
        batch = self.fake.batch_json(found.group(1), count_poll=not found.group(2))
        if batch is None:
            return self._error(404, "not_found_error", "no such batch")
        if found.group(2):
            return self._send(200, self.fake.batch_results(found.group(1)), content_type="application/binary")
        return self._send(200, batch)
