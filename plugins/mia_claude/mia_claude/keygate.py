"""The key gate: once any request of a run got 401/403, no further request leaves.

A rejected key (401) or a key without access (403) fails every request alike, so the first such
answer closes the gate for the client's life: every later attempt (a new request, a queued one of
the same batch, an SDK retry of a request in flight, a Batches API call) is refused before it is
sent. It is SDK middleware, so it sees each HTTP attempt: the only requests answered after the
first 401/403 are those already sent when it arrived (at most ``concurrency - 1``, one attempt each).
Imported only when a client is made (``mia --help`` imports no anthropic).
"""

import threading
from typing import Any

import anthropic


class KeyRefused(Exception):
    """Raised instead of sending an attempt after the key was refused (the SDK passes it on, unretried)."""


class KeyGate(anthropic.Middleware):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused_status: int | None = None  # the status that closed the gate

    def handle(self, request: Any, call_next: Any) -> Any:
        if self.refused_status is not None:
            raise KeyRefused(f"not sent: an earlier request got HTTP {self.refused_status} (the key was refused)")
        response = call_next(request)
        if response.status_code in (401, 403):
            with self._lock:
                self.refused_status = self.refused_status or response.status_code
        return response
